"""JPEG files decoded on the device, and the transforms' pixel steps applied there.

With ``DetectionDataset(..., decode_on_device=True)`` the workers read a JPEG's bytes and its
header only (size, EXIF orientation): the boxes follow the transforms' plan on the CPU as
usual, and the pixels are decoded, turned upright, resized, flipped and padded for a whole
batch on the device that runs the model (``torchvision.io.decode_jpeg``: nvJPEG on CUDA, one
call per batch). What the device decoder might not read the way Pillow does (progressive or
CMYK JPEGs, other formats, files with data after their end marker) is decoded by the worker as
before, so every image that loads on the CPU path still loads; where the steps enlarge it (a
640x480 photograph to 800 px), they are still the device's, on the image as decoded (fewer
bytes to move than resized; an image they shrink is resized by the worker).

Pixels differ from the CPU path's by the decoders' rounding and the resampling's (a level or
two of 255; nvJPEG's chroma upsampling more at sharp colour edges); boxes are the same
(``tests/test_device_images.py``)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from .records import DataError, named_pillow_warnings
from .transforms import Flip, Resize

_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class JpegHeader:
    """A JPEG file's bytes (1-D uint8 tensor), its EXIF orientation (1-8) and its (height,
    width) as displayed, i.e. after that orientation."""

    data: Tensor
    orientation: int
    size: tuple[int, int]


def read_jpeg(path: str | Path) -> JpegHeader | None:
    """The file's bytes and header when the device decoder can take it (a baseline RGB or
    grayscale JPEG ending with its end-of-image marker); None otherwise, or when the file
    cannot be read here: the worker then decodes it on the CPU (and reports it if it fails)."""
    try:
        data = Path(path).read_bytes()
        if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
            return None
        with named_pillow_warnings(path), Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                return None
            if img.info.get("progressive") or img.info.get("progression"):
                return None
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            width, height = img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # the worker's decoder reports it, as without this option
    if orientation not in range(1, 9):
        orientation = 1  # as Pillow's exif_transpose: an invalid tag is ignored
    if orientation >= 5:  # a quarter turn or a transposition: displayed sideways
        height, width = width, height
    data = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return JpegHeader(data, orientation, (height, width))


def upright(image: Tensor, orientation: int) -> Tensor:
    """A decoded (C, H, W) image turned as its EXIF orientation says it is displayed (what
    Pillow's ``ImageOps.exif_transpose`` does)."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image


def apply_step(step, image: Tensor) -> Tensor:
    """A transform's pixel step (``Resize``, ``Flip``) on a (3, H, W) uint8 image tensor."""
    if isinstance(step, Flip):
        return image.flip(-1)
    if isinstance(step, Resize):
        if tuple(image.shape[-2:]) == (step.height, step.width):
            return image
        resized = F.interpolate(
            image[None].float(),
            size=(step.height, step.width),
            mode="bilinear",
            align_corners=False,
            antialias=True,  # as Pillow's bilinear filter when shrinking
        )
        return resized[0].round_().clamp_(0, 255).to(torch.uint8)
    raise TypeError(f"no device implementation of the pixel step {step!r}")


@dataclass(frozen=True)
class PendingJpeg:
    """One image of a batch still encoded: its slot, header and the transforms' steps."""

    slot: int
    header: JpegHeader
    steps: tuple
    source: str


@dataclass
class EncodedImages:
    """The images of a batch before decoding: JPEGs to decode on the device, and images the
    workers decoded (``pixels``: slot, (3, h, w) uint8, the pixel steps still to apply: none
    where the worker applied them), padded with zeros into a (count, 3, *canvas) batch by
    ``decode``."""

    count: int
    canvas: tuple[int, int]
    jpegs: list[PendingJpeg] = field(default_factory=list)
    pixels: list[tuple[int, Tensor, tuple]] = field(default_factory=list)

    def map_pixels(self, fn) -> EncodedImages:
        moved = [(slot, fn(image), steps) for slot, image, steps in self.pixels]
        return EncodedImages(self.count, self.canvas, self.jpegs, moved)

    def decode(self, device: torch.device) -> Tensor:
        """The padded (count, 3, H, W) uint8 batch on ``device``. The JPEGs are decoded in one
        call; turning, resizing and pasting go image by image (a few small kernels each: this
        is the data path, before the model's batched step)."""
        canvas = torch.zeros((self.count, 3, *self.canvas), dtype=torch.uint8, device=device)
        decoded = [(job.slot, upright(image, job.header.orientation), job.steps)
                   for job, image in zip(self.jpegs, self._decoded(device))]  # fmt: skip
        for slot, image, steps in decoded + self.pixels:
            for step in steps:
                image = apply_step(step, image)
            canvas[slot, :, : image.shape[1], : image.shape[2]] = image
        return canvas

    def _decoded(self, device: torch.device) -> list[Tensor]:
        if not self.jpegs:
            return []
        try:
            return _decode([job.header.data for job in self.jpegs], device)
        except RuntimeError as err:  # find the file: one at a time
            if _device_failure(err):
                raise
            return [self._decode_one(job, device) for job in self.jpegs]

    @staticmethod
    def _decode_one(job: PendingJpeg, device: torch.device) -> Tensor:
        """The file decoded on ``device``, else by Pillow (then copied there); a file neither
        decodes stops the run with a DataError naming it (its batch is already formed)."""
        try:
            return _decode(job.header.data, device)
        except RuntimeError as err:
            if _device_failure(err):
                raise
            try:
                with Image.open(io.BytesIO(job.header.data.numpy().tobytes())) as img:
                    rgb = np.array(img.convert("RGB"))  # as stored: ``upright`` turns it
            except (OSError, SyntaxError, ValueError) as pil_err:
                raise DataError(
                    f"{job.source}: the JPEG could not be decoded on {device} ({err}) nor by "
                    f"Pillow ({pil_err}); decode on the workers to skip such files"
                ) from err
            return torch.from_numpy(rgb).permute(2, 0, 1).to(device)


def _device_failure(err: RuntimeError) -> bool:
    """Out of memory or a CUDA error: the device's trouble, not the file's."""
    return isinstance(err, (torch.cuda.OutOfMemoryError, getattr(torch, "AcceleratorError", ())))


_DECODING_STREAMS: dict[int, torch.cuda.Stream] = {}


def _decode(data: Tensor | list[Tensor], device: torch.device):
    """``decode_jpeg`` to RGB on ``device``. On CUDA it runs on a stream of its own, and this
    thread waits for it: nvJPEG decodes on an internal stream that does not wait for the
    caller's (pytorch/vision#9606), so its outputs come from a pool that no queued kernel
    still uses, and are complete before anything reads them. The caller's stream takes them
    over (``record_stream``). The wait is for the decoding only, not for the model's queued
    work; training decodes on the prefetching thread, so the launching thread never waits."""
    with warnings.catch_warnings():
        # torchvision >= 0.29 points to TorchCodec at every call; its decoder is still the one
        # that decodes batches with nvJPEG, which this module is for
        warnings.simplefilter("ignore", DeprecationWarning)
        if device.type != "cuda":
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        device = torch.device("cuda", index)  # one decoder: torchvision rebuilds it per device
        if index not in _DECODING_STREAMS:
            _DECODING_STREAMS[index] = torch.cuda.Stream(device)
        side = _DECODING_STREAMS[index]
        with torch.cuda.stream(side):
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        side.synchronize()
    current = torch.cuda.current_stream(device)
    for image in images if isinstance(images, list) else [images]:
        image.record_stream(current)
    return images
