"""Getting images into the network and boxes back out: resize, flip, normalise, batch.

The paper (section 3.3, after Fast R-CNN) rescales every image so that its shorter side is
s = 600 pixels, unless the longer side would then exceed 1000::

    scale = min_size / min(H, W)
    if round(scale * max(H, W)) > max_size:   scale = max_size / max(H, W)
    if not allow_upscale:                     scale = min(scale, 1)      (small-image presets)

Boxes follow the image: box' = box * scale. The detector's output is in the resized image;
to report it on the original image we go back: box = box' / scale, clipped to [0, W] x [0, H].

Training adds a random horizontal flip (the paper's only augmentation). For an image W wide::

    x1' = W - x2,   x2' = W - x1        (y unchanged; continuous coordinates, no +1)

The network sees float32 (3, H, W) images normalised per channel, (image / 255 - mean) / std,
and a batch of different sizes is zero-padded at the bottom and right to the largest one
(padding at the bottom-right keeps every box where it was).

resize / flip / normalize are host-side (NumPy + PIL) and expect NumPy uint8 images.
to_batch and boxes_to_original take their array module from their inputs (NumPy or CuPy).
"""
import numpy as np
from PIL import Image

from ..backend import get_array_module


def resize_scale(height, width, min_size, max_size, allow_upscale=True):
    """The factor that resizes an image of (height, width), as py-faster-rcnn does.

        scale = min_size / min(H, W), unless round(scale * max(H, W)) > max_size,
                then scale = max_size / max(H, W);
        scale = min(scale, 1) when allow_upscale is False.
    Returns a Python float.
    """
    for name, value in (("height", height), ("width", width),
                        ("min_size", min_size), ("max_size", max_size)):
        if not value > 0:
            raise ValueError(f"{name}: expected a positive number, got {value}")
    short, long = min(height, width), max(height, width)
    scale = float(min_size) / short
    if round(scale * long) > max_size:
        scale = float(max_size) / long
    if not allow_upscale:
        scale = min(scale, 1.0)
    return scale


def resized_shape(height, width, scale):
    """(round(H * scale), round(W * scale)), at least 1 pixel each."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _check_image(image, name="image"):
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"{name}: expected a NumPy (H, W, 3) array, got "
                         f"{type(image).__name__} with shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")


def resize_image(image, scale):
    """Resize a (H, W, 3) uint8 image by `scale` with PIL's bilinear filter.

    Returns a (round(H * scale), round(W * scale), 3) uint8 image (a copy when scale == 1).
    The rounding makes the true factor per axis differ from `scale` by under half a pixel
    over the whole side; boxes are scaled by `scale` itself, as py-faster-rcnn does.
    """
    _check_image(image)
    h, w = image.shape[:2]
    nh, nw = resized_shape(h, w, scale)
    if (nh, nw) == (h, w):
        return image.copy()
    pil = Image.fromarray(image).resize((nw, nh), resample=Image.BILINEAR)   # PIL wants (w, h)
    return np.asarray(pil, dtype=np.uint8).copy()                              # (nh, nw, 3)


def resize_boxes(boxes, scale):
    """boxes (G, 4) * scale, same dtype."""
    return boxes * boxes.dtype.type(scale)                                    # (G, 4)


def hflip_boxes(boxes, width):
    """Mirror (G, 4) boxes in an image `width` wide: x1' = W - x2, x2' = W - x1."""
    out = boxes.copy()                                                        # (G, 4)
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def hflip(image, boxes):
    """Flip a (H, W, 3) image and its (G, 4) boxes left-right. Returns (image', boxes')."""
    _check_image(image)
    flipped = image[:, ::-1, :].copy()                                        # (H, W, 3)
    return flipped, hflip_boxes(boxes, image.shape[1])


def normalize(image, mean, std):
    """(H, W, 3) uint8 -> (3, H, W) float32: (image / 255 - mean) / std per channel."""
    _check_image(image)
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)               # (3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)                 # (3, 1, 1)
    x = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)      # (3, H, W)
    return (x - mean) / std                                                  # (3, H, W)


def denormalize(x, mean, std):
    """Inverse of normalize for display: (3, H, W) float -> (H, W, 3) uint8 (NumPy)."""
    x = np.asarray(x, dtype=np.float32)                                       # (3, H, W)
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    img = (x * std + mean) * 255.0                                            # (3, H, W)
    return np.clip(np.round(img), 0, 255).astype(np.uint8).transpose(1, 2, 0)  # (H, W, 3)


def to_batch(images):
    """Stack (3, h_i, w_i) images into one zero-padded (N, 3, Hmax, Wmax) array.

    Image i sits in the top-left corner: batch[i, :, :h_i, :w_i] = images[i].
    Returns (batch, sizes) with sizes the list of (h_i, w_i), which the model needs to
    clip proposals to the real image rather than to the padding.
    Works on NumPy or CuPy images (all on one device); dtype is kept.
    """
    if len(images) == 0:
        raise ValueError("images: expected at least one image, got an empty list")
    for i, im in enumerate(images):
        if getattr(im, "ndim", None) != 3 or im.shape[0] != 3:
            raise ValueError(f"images[{i}]: expected a (3, h, w) array, got shape "
                             f"{getattr(im, 'shape', None)}")
    xp = get_array_module(images[0])
    sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
    hmax = max(h for h, _ in sizes)
    wmax = max(w for _, w in sizes)
    batch = xp.zeros((len(images), 3, hmax, wmax), dtype=images[0].dtype)   # (N, 3, Hmax, Wmax)
    for i, (im, (h, w)) in enumerate(zip(images, sizes)):
        batch[i, :, :h, :w] = im
    return batch, sizes


def boxes_to_original(boxes, scale, image_size):
    """Map (K, 4) boxes from the resized image back to the original image of (H, W).

        box = box' / scale, then x clipped to [0, W] and y to [0, H].
    Works on NumPy or CuPy boxes; dtype is kept.
    """
    xp = get_array_module(boxes)
    h, w = image_size
    out = boxes / boxes.dtype.type(scale)                                   # (K, 4)
    out[:, 0::2] = xp.clip(out[:, 0::2], 0, w)                              # x1, x2
    out[:, 1::2] = xp.clip(out[:, 1::2], 0, h)                              # y1, y2
    return out


def prepare_image(image, min_size, max_size, allow_upscale, mean, std):
    """Resize and normalise one (H, W, 3) uint8 image for the network.

    Returns (x, scale): x (3, h, w) float32 with (h, w) = resized_shape(H, W, scale).
    """
    _check_image(image)
    scale = resize_scale(image.shape[0], image.shape[1], min_size, max_size, allow_upscale)
    return normalize(resize_image(image, scale), mean, std), scale


def prepare_sample(sample, min_size, max_size, allow_upscale, mean, std, flip=False):
    """A training sample ready for the network: resize, optionally flip, normalise.

    sample: {"image" (H, W, 3) uint8, "boxes" (G, 4), "labels" (G,), ...}
    Returns (x, boxes, labels, scale): x (3, h, w) float32, boxes (G, 4) float32 in the
    resized (and flipped) image, clipped to it, labels (G,) int64, scale the resize factor.
    """
    image = sample["image"]
    _check_image(image, "sample['image']")
    scale = resize_scale(image.shape[0], image.shape[1], min_size, max_size, allow_upscale)
    image = resize_image(image, scale)                                       # (h, w, 3)
    boxes = resize_boxes(np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4), scale)
    h, w = image.shape[:2]
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)   # rounding the image size may cut
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)   # a box by under half a pixel
    if flip:
        image, boxes = hflip(image, boxes)
    labels = np.asarray(sample["labels"], dtype=np.int64).reshape(-1)        # (G,)
    return normalize(image, mean, std), boxes, labels, scale
