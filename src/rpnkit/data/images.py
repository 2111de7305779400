"""Loading any image as 8-bit RGB in its displayed orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .readers import DataError


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. EXIF rotation is applied (the boxes of a dataset refer to the image
    as displayed); grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are
    converted. Raises DataError naming the file for a missing, unreadable or truncated image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
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
            rgb = np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from err
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DataError(f"{path}: zero-size image")
    return rgb
