"""npz.py: every way a weights file can be wrong gives one error naming the file; writes are atomic."""
import errno

import numpy as np
import pytest

from minifrcnn.npz import read_npz, write_npz


def good_file(path):
    write_npz(str(path), {"a": np.arange(1000, dtype=np.float32), "b": np.ones((3, 3))})
    return path


def test_round_trip(tmp_path):
    got = read_npz(good_file(tmp_path / "w.npz"), "weights")
    assert sorted(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"], np.arange(1000, dtype=np.float32))
    assert not (tmp_path / "w.npz.tmp").exists()


def damaged_files(tmp_path):
    """(name, path) of files that are not readable .npz archives, each made a different way."""
    data = good_file(tmp_path / "good.npz").read_bytes()
    cases = {
        "truncated.npz": data[:len(data) // 2],
        "empty.npz": b"",
        "text.npz": b"this is a text file\n",
        "flipped.npz": data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "npy_renamed.npz")
    (tmp_path / "folder.npz").mkdir()
    names = list(cases) + ["npy_renamed.npz", "folder.npz", "missing.npz"]
    return [(name, tmp_path / name) for name in names]


def test_every_damaged_file_is_one_value_error_naming_it(tmp_path):
    for name, path in damaged_files(tmp_path):
        with pytest.raises(ValueError, match=rf"checkpoint .*{name}: "):
            read_npz(path, "checkpoint")


def test_the_messages_say_what_is_wrong(tmp_path):
    files = dict(damaged_files(tmp_path))
    expected = {"empty.npz": "empty", "text.npz": "not an .npz file", "folder.npz": "folder",
                "missing.npz": "no such file", "truncated.npz": "damaged or cut short",
                "npy_renamed.npz": "not an .npz file"}
    for name, words in expected.items():
        with pytest.raises(ValueError, match=words):
            read_npz(files[name], "checkpoint")


def test_an_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = good_file(tmp_path / "w.npz")
    before = path.read_bytes()

    def savez_that_dies(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_that_dies)
    with pytest.raises(KeyboardInterrupt):
        write_npz(str(path), {"a": np.zeros(5)})
    assert path.read_bytes() == before
    assert not (tmp_path / "w.npz.tmp").exists()


def savez_on_a_full_disk(f, **arrays):
    f.write(b"PK\x03\x04 half an archive")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = good_file(tmp_path / "checkpoint.npz")
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", savez_on_a_full_disk)
    with pytest.raises(OSError) as e:
        write_npz(str(path), {"a": np.zeros(5)})
    assert str(e.value) == (f"cannot write {path}: No space left on device; "
                            "the previous checkpoint.npz is untouched")
    assert e.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert not (tmp_path / "checkpoint.npz.tmp").exists()


def test_a_full_disk_on_a_first_write_says_nothing_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", savez_on_a_full_disk)
    with pytest.raises(OSError, match=r"model\.npz: No space left on device; nothing was written$"):
        write_npz(str(tmp_path / "model.npz"), {"a": np.zeros(5)})
    assert list(tmp_path.iterdir()) == []
