"""Any image as 8-bit RGB in its displayed orientation: files, PIL images, arrays, tensors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .readers import DataError, too_large_image_error


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


def load_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB. EXIF rotation is applied (the boxes of a dataset refer to the image
    as displayed); grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are
    converted. ``max_side``: shrunk to at most that many pixels on its longest side (never
    enlarged; a JPEG decoded at 1/2, 1/4 or 1/8 scale when that still covers it, Pillow's
    ``draft``: the full-size pixels of a huge image never reach numpy). Raises DataError
    naming the file for a missing, unreadable or truncated image, or one over Pillow's pixel
    limit (see ``allow_large_images``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            if max_side is not None and (scale := max_side / max(img.size)) < 1:
                # in the stored orientation: the bound is the same for both sides
                img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            img.load()  # decode now: truncated files fail here, not later
            upright = ImageOps.exif_transpose(img)
            if max_side is not None:
                if upright.mode.startswith("I;16"):  # Pillow cannot shrink these: 8 bits first
                    upright = Image.fromarray(pil_to_rgb(upright))
                upright.thumbnail((max_side, max_side))
            rgb = pil_to_rgb(upright)
    except Image.DecompressionBombError as err:
        raise too_large_image_error(path, err) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from err
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DataError(f"{path}: zero-size image")
    return rgb


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a decoded PIL image of any mode (16-bit and float images
    scaled to 8 bits, palette transparency and alpha dropped, CMYK converted)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = max(arr.max() - arr.min(), 1e-12)
        gray = ((arr - arr.min()) / span * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return np.array(img.convert("RGB"))


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
                "[0, 1] (for 0-255 values, give uint8: array.astype(np.uint8))"
            )
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(
            f"{where}: unsupported image dtype {arr.dtype} (use uint8, uint16 or floats in [0, 1])"
        )
    arr = arr[..., :3]
    return np.ascontiguousarray(np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr)
