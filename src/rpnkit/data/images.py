"""Any image as 8-bit RGB in its displayed orientation: files, PIL images, arrays, tensors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .records import DataError, named_pillow_warnings, too_large_image_error


def allow_large_images(max_pixels: int | None) -> None:
    """Let Pillow open images of up to ``max_pixels`` pixels (None or 0: any size), as aerial
    and microscopy images need. Pillow's guard against decompression bombs
    (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million pixels by default) warns above its limit
    and refuses images of more than twice it, which ``load_rgb`` and the readers report as a
    ``DataError``. The setting is Pillow's, for the whole process: DataLoader workers started
    by fork inherit it, spawned ones (the default on macOS and Windows) do not."""
    if max_pixels is not None and (
        isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 0
    ):
        raise ValueError(f"max_pixels: expected a pixel count >= 0 or None, got {max_pixels!r}")
    Image.MAX_IMAGE_PIXELS = max_pixels or None


class NonFinitePixels(ValueError):
    """A float image holding NaN or infinite values: it maps to no 8-bit picture."""


def load_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB. EXIF rotation is applied (the boxes of a dataset refer to the image
    as displayed); grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are
    converted. ``max_side``: shrunk to at most that many pixels on its longest side (never
    enlarged), the pixels of Pillow's ``thumbnail`` of the full-size RGB image, which is never
    made (a JPEG decoded at 1/2, 1/4 or 1/8 scale when that still covers it, Pillow's
    ``draft``; see ``_shrunk_rgb``). Raises DataError naming the file for a missing,
    unreadable or truncated image, or one over Pillow's pixel limit (see
    ``allow_large_images``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with named_pillow_warnings(path), Image.open(path) as img:
            if max_side is not None and max(img.size) > max_side:
                rgb = _shrunk_rgb(img, max_side)
            else:
                img.load()  # decode now: truncated files fail here, not later
                rgb = pil_to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as err:
        raise too_large_image_error(path, err) from err
    except NonFinitePixels as err:  # decoded, but no picture to make of it
        raise DataError(f"{path}: {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from err
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DataError(f"{path}: zero-size image")
    return rgb


# ---------------------------------------------------------------- shrinking huge images
#
# The overlay of a 14000 x 13000 image needs 1600 pixels across, not the 546 MB of its RGB
# pixels. _shrunk_rgb gives exactly Pillow's thumbnail (reduce by whole factors, then bicubic)
# of the displayed RGB image, but it converts and reduces the image one strip of rows at a
# time: the full-size RGB image, its EXIF-turned copy and its 16-bit-to-8-bit arrays are never
# made. A JPEG is decoded at 1/2 to 1/8 scale (Pillow's draft); any other file is decoded
# whole, once, in its own mode (as inference decodes it anyway).

_STRIP_PIXELS = 1 << 20  # pixels of a strip: ~3 MB of RGB, a few strips' worth of temporaries
_REDUCING_GAP = 2.0  # Pillow's thumbnail: reduce by whole factors down to twice the size

# EXIF orientation -> (Pillow's transpose, as ImageOps.exif_transpose; whether the displayed
# rows are stored columns; whether the displayed rows run backwards through the stored ones)
_ORIENTATIONS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT, False, False),
    3: (Image.Transpose.ROTATE_180, False, True),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, False, True),
    5: (Image.Transpose.TRANSPOSE, True, False),
    6: (Image.Transpose.ROTATE_270, True, False),
    7: (Image.Transpose.TRANSVERSE, True, True),
    8: (Image.Transpose.ROTATE_90, True, True),
}
_UPRIGHT = (None, False, False)


def _shrunk_rgb(img: Image.Image, max_side: int) -> np.ndarray:
    """(h, w, 3) uint8: Pillow's ``thumbnail((max_side, max_side))`` of the displayed RGB
    image (``pil_to_rgb(ImageOps.exif_transpose(img))``), pixel for pixel, from an opened,
    not yet decoded ``img``."""
    # 1. a JPEG decodes at the smallest 1/2^k scale that still covers the size; the bound is
    # the same for both sides, so the stored orientation will do
    scale = max_side / max(img.size)
    img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
    # 2. decoded whole, once, in its own mode, and turned as ImageOps.exif_transpose turns
    # it: by its orientation after decoding (Pillow turns a TIFF upright as it decodes it)
    img.load()  # decode now: truncated files fail here, not later
    turn = _ORIENTATIONS.get(img.getexif().get(ExifTags.Base.Orientation, 1), _UPRIGHT)
    # 3. the displayed size, the thumbnail's size and its whole reduction factors (Pillow's
    # resize with reducing_gap, whose reduce box is the whole image)
    width, height = (img.height, img.width) if turn[1] else img.size
    size = _thumbnail_size(width, height, max_side)
    factor_x = int(width / size[0] / _REDUCING_GAP) or 1
    factor_y = int(height / size[1] / _REDUCING_GAP) or 1
    # 4. strips of displayed rows, each a whole number of reduction blocks high, converted to
    # RGB and reduced on their own: reduce averages blocks, so the strips tile its result
    rows = max(1, _STRIP_PIXELS // width // factor_y) * factor_y
    reduced = Image.new("RGB", (math.ceil(width / factor_x), math.ceil(height / factor_y)))
    for top, strip in _decoded_strips(img, turn, rows):
        reduced.paste(strip.reduce((factor_x, factor_y)), (0, top // factor_y))
    if size == (width, height):  # a JPEG's draft may already fit
        return np.array(reduced)
    # 5. the bicubic step, from the reduced image's share of the full-size one (the last block
    # of a row or column may be partial), as Pillow's resize takes it
    box = (0, 0, width / factor_x, height / factor_y)
    return np.array(reduced.resize(size, Image.Resampling.BICUBIC, box=box))


def _thumbnail_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) of Pillow's ``thumbnail((max_side, max_side))`` of a width x height image:
    the aspect ratio kept, the rounding nearest to it chosen."""
    if width <= max_side and height <= max_side:
        return width, height
    aspect = width / height
    if aspect <= 1:
        candidates = (math.floor(max_side * aspect), math.ceil(max_side * aspect))
        return max(min(candidates, key=lambda n: abs(aspect - n / max_side)), 1), max_side
    candidates = (math.floor(max_side / aspect), math.ceil(max_side / aspect))
    near = min(candidates, key=lambda n: 0 if n == 0 else abs(aspect - max_side / n))
    return max_side, max(near, 1)


def _decoded_strips(
    img: Image.Image, turn: tuple[Image.Transpose | None, bool, bool], rows: int
) -> Iterator[tuple[int, Image.Image]]:
    """(top, "RGB" strip of ``rows`` rows) of the displayed image, from ``img`` decoded once
    in its own mode (the one full-size copy: no RGB, turned or 16-bit-as-float copy of it);
    ``turn``: an ``_ORIENTATIONS`` entry."""
    value_range = _value_range(img)  # of the whole image, for "I" and "F"
    method, rows_are_columns, backwards = turn
    stored_w, stored_h = img.size
    across, height = (stored_h, stored_w) if rows_are_columns else (stored_w, stored_h)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        first, last = (height - bottom, height - top) if backwards else (top, bottom)
        box = (first, 0, last, across) if rows_are_columns else (0, first, across, last)
        strip = img.crop(box)
        yield top, _rgb_image(strip if method is None else strip.transpose(method), value_range)


# ---------------------------------------------------------------- modes


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a decoded PIL image of any mode (16-bit and float images
    scaled to 8 bits, palette transparency and alpha dropped, CMYK converted)."""
    return np.array(_rgb_image(img, _value_range(img)))


def _value_range(img: Image.Image) -> tuple[float, float] | None:
    """(lowest, highest) value of an "I" or "F" image, which set how it is scaled to 8 bits
    (the whole image's, also when it is converted a strip at a time); None for other modes."""
    return img.getextrema() if img.mode in ("I", "F") else None


def _rgb_image(img: Image.Image, value_range: tuple[float, float] | None) -> Image.Image:
    """``img`` as "RGB" (itself if it is), converted as ``pil_to_rgb`` says; ``img`` may be a
    strip of an "I" or "F" image whose values span ``value_range``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or value_range[1] > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif img.mode == "F":
        low, high = value_range
        arr = np.asarray(img, dtype=np.float64)
        if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(arr).all()):
            raise NonFinitePixels("a float image with NaN or infinite pixel values")
        span = max(high - low, 1e-12)
        img = Image.fromarray(((arr - low) / span * 255.0 + 0.5).astype(np.uint8))
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def to_rgb(image: Image.Image | np.ndarray | torch.Tensor, where: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from an image in memory.

    - a PIL image of any mode, turned upright by its EXIF orientation;
    - a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped): uint8 as is,
      uint16 scaled by 1/257, floating point in [0, 1] (anything outside is an error: 0-255
      floats would otherwise turn white);
    - a tensor (C, H, W) with C in 1, 3, 4 (torchvision's layout), or (H, W), same value
      rules (bfloat16 too).

    Floating-point images are rounded to 8 bits, as images read from files are. Raises
    ValueError naming ``where`` for anything else.
    """
    if isinstance(image, Image.Image):  # displayed orientation, as load_rgb gives files
        return pil_to_rgb(ImageOps.exif_transpose(image))
    if isinstance(image, torch.Tensor):
        image = image[None] if image.ndim == 2 else image  # (H, W): one channel
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"{where}: a tensor image must be (C, H, W) with C 1, 3 or 4, or (H, W), got "
                f"{tuple(image.shape)}"
            )
        image = image.detach().cpu()
        image = image.float() if image.dtype == torch.bfloat16 else image  # numpy has none
        image = image.permute(1, 2, 0).numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"{where}: expected a path, a PIL image, a numpy array or a tensor, "
            f"got {type(image).__name__}"
        )
    return _array_to_rgb(image, where)


def _array_to_rgb(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape[:2]:
        raise ValueError(
            f"{where}: an image array must be (H, W) or (H, W, C) with C 1, 3 or 4, got {arr.shape}"
        )
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: the image has NaN or infinite values")
        low, high = float(arr.min()), float(arr.max())
        if low < -1e-3 or high > 1.0 + 1e-3:  # 0-255 floats would all turn white: refuse
            raise ValueError(
                f"{where}: floating-point values from {low:g} to {high:g}; floats must be in "
                "[0, 1] (for 0-255 values, give uint8: array.astype(np.uint8), tensor.byte())"
            )
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(
            f"{where}: unsupported image dtype {arr.dtype} (use uint8, uint16 or floats in [0, 1])"
        )
    arr = arr[..., :3]
    return np.ascontiguousarray(np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr)
