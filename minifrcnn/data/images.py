"""Reading an image file as the (H, W, 3) uint8 RGB array the detector sees: the one reader.

Training and evaluation (``data/voc.py``) and ``detect`` (``detect.py``) read every image here,
so a picture is the same pixels everywhere. Two things that a plain
``np.asarray(Image.open(path).convert("RGB"))`` gets wrong:

* **EXIF orientation.** A camera stores a portrait photo unrotated and writes "turn me by 90
  degrees" into its EXIF data; image viewers, and the labelling tools that show the photo
  upright, apply it. So do we (``PIL.ImageOps.exif_transpose``): the pixels match boxes drawn on
  the upright view, in training and in ``detect``.
* **Pixel formats other than 8 bits.** ``convert("RGB")`` clips a 16-bit grey PNG (values
  0..65535) at 255: an all-white picture, and a model that finds nothing in it. Each PIL mode
  is turned into RGB by its own rule, or refused:

      RGB, L (grey), 1 (black and white), P (palette), CMYK, YCbCr   PIL's convert("RGB")
      RGBA, LA, PA, or any image with a transparent colour           composited over white (as
                                                                      a viewer shows it on a page)
      I;16 (16-bit grey; PNG and TIFF), I read from a PNG (16-bit    value / 257, rounded
      grey in older Pillow)                                           (65535 -> 255); a
                                                                      transparent grey value
                                                                      becomes white
      anything else (F: 32-bit float, I from other files, LAB, ...)  refused, naming the file:
                                                                      its range is not known

    >>> image = read_image("data/samples/samples_00000.png")     # (H, W, 3) uint8

Host-side code (NumPy, PIL).
"""
import numpy as np
from PIL import Image, ImageOps

RGB_MODES = ("RGB", "L", "1", "P", "CMYK", "YCbCr")    # convert("RGB") is right for these
ALPHA_MODES = ("RGBA", "LA", "PA")                     # composited over white
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(path, name=None):
    """The image file `path` as an upright (H, W, 3) uint8 RGB array (see the module docstring).

    name: how an error names the image (default "image <path>"). A file PIL cannot read, or a
    pixel format without a known range, is a ValueError naming it.
    """
    name = name or f"image {path}"
    try:
        with Image.open(path) as im:
            file_format = im.format                   # exif_transpose's copy forgets it
            im = ImageOps.exif_transpose(im)          # the pixels, turned upright
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ValueError(f"{name}: cannot read it ({e})") from None
    return to_rgb(im, name, file_format)


def to_rgb(im, name="image", file_format=None):
    """A PIL image as (H, W, 3) uint8 RGB by its mode's rule; a ValueError naming it if none."""
    if im.mode in SIXTEEN_BIT_MODES or (im.mode == "I" and file_format == "PNG"):
        raw = np.asarray(im, dtype=np.float64)                                  # (H, W) 0..65535
        grey = np.round(raw / 257.0)                                            # (H, W) in 0..255
        if "transparency" in im.info:          # one grey value marks the see-through pixels:
            grey[raw == im.info["transparency"]] = 255        # white, as over a page
        return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)           # (H, W, 3)
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    elif im.mode not in RGB_MODES:
        raise ValueError(f"{name}: PIL mode {im.mode} pixels have no range that maps to 8-bit "
                         "RGB without guessing; save the image as 8-bit RGB or grey, or 16-bit "
                         "grey (PNG)")
    return np.asarray(im.convert("RGB"), dtype=np.uint8)                         # (H, W, 3)
