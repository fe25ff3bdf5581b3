"""The one image reader: EXIF orientation applied, every pixel format to RGB by its rule or refused."""
import numpy as np
import pytest
from PIL import Image

from minifrcnn import detect
from minifrcnn.data import images, voc
from minifrcnn.data.images import read_image, to_rgb


@pytest.fixture
def picture():
    """A (20, 30, 3) uint8 picture with every value different enough to see a mix-up."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_training_evaluation_and_detect_share_one_reader():
    assert detect.read_image is images.read_image and voc.read_image is images.read_image


def test_rgb_and_grey_pngs(tmp_path, picture):
    Image.fromarray(picture).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), picture)
    Image.fromarray(picture[:, :, 0]).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), picture[:, :, [0, 0, 0]])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_is_scaled_by_257_not_clipped_to_white(tmp_path, picture, suffix):
    grey = picture[:, :, 0]
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / f"g16{suffix}")   # I;16
    assert Image.open(tmp_path / f"g16{suffix}").mode.startswith("I;16")
    np.testing.assert_array_equal(read_image(tmp_path / f"g16{suffix}"), grey[:, :, None].repeat(3, 2))
    # and the rounding: 65535 -> 255, 128 -> 0 (0.498), 129 -> 1 (0.502)
    Image.fromarray(np.array([[65535, 128, 129]], dtype=np.uint16)).save(tmp_path / "r.png")
    np.testing.assert_array_equal(read_image(tmp_path / "r.png")[0, :, 0], [255, 0, 1])


def test_mode_I_is_16_bit_when_it_comes_from_a_png_and_refused_otherwise():
    """Older Pillow opens 16-bit grey PNGs as mode I (32-bit); from a TIFF, I has no known range."""
    im = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.int32), mode="I")
    np.testing.assert_array_equal(to_rgb(im, file_format="PNG")[0, :, 1], [0, 100, 255])
    with pytest.raises(ValueError, match="pic.tif: PIL mode I pixels"):
        to_rgb(im, "pic.tif", file_format="TIFF")


def test_transparent_pixels_are_composited_over_white(tmp_path):
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, :, :3] = 40                           # dark grey ...
    rgba[0, :, 3] = [255, 0, 51]                  # ... opaque, transparent, 20% opaque
    expected = [40, 255, round(0.2 * 40 + 0.8 * 255)]
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgba).convert("LA").save(tmp_path / "la.png")
    for name in ("rgba.png", "la.png"):
        np.testing.assert_allclose(read_image(tmp_path / name)[0, :, 0], expected, atol=1)
    palette = Image.new("P", (2, 1))
    palette.putpalette([40, 40, 40, 0, 200, 0])
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=1)         # colour 1 (green) is transparent
    np.testing.assert_array_equal(read_image(tmp_path / "p.png")[0], [[40, 40, 40], [255, 255, 255]])


def test_a_16_bit_grey_png_with_a_transparent_value_keeps_its_greys(tmp_path):
    """A 16-bit PNG's tRNS names one grey value as see-through: those pixels are white, every
    other pixel keeps its grey (value / 257), not clipped to white by convert("RGBA")."""
    raw = np.array([[0, 257 * 10, 257 * 200, 65535]], dtype=np.uint16)
    Image.fromarray(raw).save(tmp_path / "t.png", transparency=0)
    im = Image.open(tmp_path / "t.png")
    assert im.mode.startswith("I") and "transparency" in im.info
    np.testing.assert_array_equal(read_image(tmp_path / "t.png")[0, :, 0], [255, 10, 200, 255])


def test_black_and_white_palette_and_cmyk(tmp_path, picture):
    pil = Image.fromarray(picture)
    for mode, suffix in (("1", ".png"), ("P", ".png"), ("CMYK", ".tif")):
        pil.convert(mode).save(tmp_path / f"m{suffix}")
        expected = np.asarray(Image.open(tmp_path / f"m{suffix}").convert("RGB"))
        np.testing.assert_array_equal(read_image(tmp_path / f"m{suffix}"), expected)
    assert set(np.unique(read_image(tmp_path / "m.png"))) <= set(range(256))


def test_float_and_unknown_modes_are_refused_naming_the_file(tmp_path, picture):
    Image.fromarray(picture[:, :, 0].astype(np.float32) / 255).save(tmp_path / "f.tif")   # mode F
    with pytest.raises(ValueError, match=r"image .*f\.tif: PIL mode F pixels have no range"):
        read_image(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="lab picture: PIL mode LAB"):
        to_rgb(Image.new("LAB", (2, 2)), "lab picture")


def save_turned(stored, path):
    """Save a (H, W, 3) array as a JPEG with EXIF orientation 6, what a phone writes for a
    portrait: the pixels stored unrotated, shown turned 90 degrees clockwise (W x H)."""
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = 6                                        # the Orientation tag
    pil.save(path, exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :10] = 255                                    # a white band on the stored left
    save_turned(stored, tmp_path / "phone.jpg")
    upright = read_image(tmp_path / "phone.jpg")
    assert upright.shape == (40, 20, 3)                     # as a viewer shows it
    assert upright[:10].mean() > 240 and upright[12:].mean() < 15   # the band is on top


def test_unreadable_file_is_one_error_naming_it(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"image .*broken\.jpg: cannot read it"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(ValueError, match=r"^the picture: cannot read it"):
        read_image(tmp_path / "broken.jpg", "the picture")
