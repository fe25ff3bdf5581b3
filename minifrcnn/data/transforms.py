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
prepare_batch puts them together: the one function that training and predict() both call.
"""
import numpy as np
from PIL import Image

from ..backend import get_array_module
from ..boxes import clip_boxes


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
    return clip_boxes(boxes / boxes.dtype.type(scale), image_size)          # (K, 4)


def check_image(image, cfg, name="image"):
    """The resize factor of one image for a model with config `cfg`, after checking it.

    A ValueError naming `name` unless image is a NumPy (H, W, 3) uint8 array that is big
    enough: after resizing (resize_scale with the config's sizes) each side must be at least
    cfg.feat_stride pixels, one cell of the backbone's feature map.
    """
    _check_image(image, name)
    h, w = image.shape[:2]
    scale = resize_scale(h, w, cfg.image_min_size, cfg.image_max_size, cfg.allow_upscale)
    nh, nw = resized_shape(h, w, scale)
    if min(nh, nw) < cfg.feat_stride:
        raise ValueError(f"{name}: {w}x{h} px is too small for this model ({nw}x{nh} after "
                         f"resizing; the backbone's stride is {cfg.feat_stride}, so each "
                         f"side needs at least {cfg.feat_stride} px)")
    return scale


def sample_name(sample, k):
    """How an error names a sample: "image <its file>", else "image <its id>", else "image <k>"."""
    return f"image {sample.get('path', sample.get('id', k))}"


def check_images(samples, cfg):
    """check_image on every sample (any iterable of sample dicts): the command line calls it on
    every split a run will use, before the first iteration, so a bad image costs no training."""
    for k, s in enumerate(samples):
        check_image(np.asarray(s["image"]), cfg, sample_name(s, k))


def prepare_batch(samples, cfg, rng=None, train=True):
    """Resize, (when training) randomly flip, and normalise samples into one padded batch.

    The one road into the network, for training and for predict():

        scale = check_image(image, cfg)                 resize factor (paper, section 3.3)
        image, boxes = resize(image) , boxes * scale    boxes clipped to the resized image
        if train and cfg.flip and rng.random() < 0.5:   x1' = W - x2, x2' = W - x1
        x = (image / 255 - mean) / std                  (3, h, w) float32
        batch = to_batch([x, ...])                      (N, 3, H, W), zero-padded bottom-right

    samples: dicts {"image" (H, W, 3) uint8, optional "boxes" (G, 4), "labels" (G,),
    "difficult" (G,) bool, "id" or "path" (name the image in an error)}. When training, difficult
    objects are left out (they only matter for evaluation). rng: a numpy Generator, needed
    only when train and cfg.flip.
    Returns (images (N, 3, H, W) float32 NumPy, sizes [(h, w)], boxes [(G_i, 4) float32],
    labels [(G_i,) int64], scales [float]).
    """
    if train and cfg.flip and rng is None:
        raise ValueError("rng: training images are flipped at random (cfg.flip), so "
                         "prepare_batch(..., train=True) needs a numpy Generator; test images "
                         "take train=False")
    arrays, boxes_out, labels_out, scales = [], [], [], []
    for k, s in enumerate(samples):
        img = np.asarray(s["image"])
        scale = check_image(img, cfg, sample_name(s, k))
        boxes = np.asarray(s.get("boxes", ()), dtype=np.float32).reshape(-1, 4)     # (G, 4)
        labels = np.asarray(s.get("labels", ()), dtype=np.int64).reshape(-1)        # (G,)
        if train and "difficult" in s:
            keep = ~np.asarray(s["difficult"], dtype=bool).reshape(-1)
            boxes, labels = boxes[keep], labels[keep]
        if scale != 1.0:
            img = resize_image(img, scale)                                         # (h, w, 3)
            boxes = clip_boxes(resize_boxes(boxes, scale), img.shape[:2])  # rounding: <= 0.5 px out
        if train and cfg.flip and rng.random() < 0.5:
            img, boxes = hflip(img, boxes)
        arrays.append(normalize(img, cfg.pixel_mean, cfg.pixel_std))               # (3, h, w)
        boxes_out.append(boxes)
        labels_out.append(labels)
        scales.append(scale)
    images, sizes = to_batch(arrays)                                               # (N, 3, H, W)
    return images, sizes, boxes_out, labels_out, scales
