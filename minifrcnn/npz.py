"""Reading and writing the .npz files that hold weights and checkpoints, safely.

    write_npz(path, {"param/conv1.weight": array, ...})    # all or nothing, never half a file
    arrays = read_npz(path, "checkpoint")                   # {name: array}, or one clear error

An .npz file is a zip archive of .npy arrays (numpy.savez). write_npz writes it to
path + ".tmp" and renames that onto path only when it is complete, so an interrupted or failed
write leaves the previous file as it was, and a failed one says so in its message. read_npz
loads every array at once and turns each way a file can be wrong (missing, a folder, empty, not
a zip, cut short, damaged bytes) into one error that names the file and what it was meant to be.
"""
import os
import zipfile
import zlib

import numpy as np

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")      # a zip's first 4 bytes (the second: empty zip)


def write_npz(path, arrays):
    """numpy.savez(path, **arrays) to path + '.tmp', then an atomic rename onto path.

    A failed write (disk full, no permission: an OSError) raises an OSError of the same kind
    and errno, in one line naming path and saying that the previous file, if any, is untouched:
        cannot write runs/a/checkpoint.npz: No space left on device; the previous
        checkpoint.npz is untouched
    The half-written .tmp file is removed.
    """
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        kept = (f"the previous {os.path.basename(path)} is untouched" if os.path.exists(path)
                else "nothing was written")
        error = type(e)(f"cannot write {path}: {e.strerror or e}; {kept}")
        error.errno = e.errno                 # ENOSPC stays ENOSPC for a caller who checks
        raise error from e
    finally:
        if os.path.exists(tmp):          # the write failed half way: leave no debris behind
            os.remove(tmp)


def read_npz(path, what):
    """Every array of the .npz file at path, as {name: numpy array}.

    what: what the file should be ("checkpoint", "backbone weights"), for the messages.
    Raises a ValueError naming `what` and the path for a missing or unreadable file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{what} {path}: is a folder, expected an .npz file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ValueError(f"{what} {path}: the file is empty")
    if head not in ZIP_MAGIC:
        raise ValueError(f"{what} {path}: not an .npz file (numpy.savez writes a zip archive; "
                         f"this file starts with {head!r})")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{what} {path}: cannot read it, the file is damaged or cut short "
                         f"({type(e).__name__}: {e})") from None
