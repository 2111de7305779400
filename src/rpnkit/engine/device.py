"""Where and in what precision inference runs: the device, autocast, batch-norm folding and
compilation, decided here for every caller (the runtime, training-time evaluation, the CLI)."""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from ..config import check_compile
from ..modeling.backbones.fold import fold_batch_norm

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU. A device that is not a device
    name, or a GPU that this machine does not have, is a ``ValueError`` saying so (PyTorch
    would fail later, at the first tensor moved, with a trace through the model)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta...: parsed, but not rpnkit's
        raise ValueError(f"device {name!r}: rpnkit runs on cpu or cuda (auto, cpu, cuda, cuda:N)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: no CUDA GPU is visible here; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: only {count} CUDA GPU(s) here (cuda:0-{count - 1})")
    return device


def decodes_on_device(choice: bool | None, device: torch.device) -> bool:
    """Whether JPEG files are decoded, resized and padded on ``device`` (``data.device_images``)
    rather than by the loader's workers: ``choice`` None decides by device, on for CUDA, where
    it measured faster for training (0.93-0.99 of the model's rate end to end) and for
    ``detect`` (0.93-0.94 of the model's rate against 0.67-0.93 with 4 workers decoding; H200,
    docs/performance.md); off on the CPU, where the workers' Pillow path is the only decoder."""
    if choice and device.type != "cuda":
        warnings.warn(
            "decoding on the device (--decode device, decode_on_device=True) on the CPU: "
            "torchvision's decoder and the batch resize run in the main process, slower than "
            "the workers' Pillow path (the device path is for GPUs)",
            stacklevel=1,  # one place: said once, whichever caller asks
        )
    return device.type == "cuda" if choice is None else bool(choice)


def inference_precision(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context to run inference in: ``"none"`` (float32), ``"bf16"`` or ``"fp16"`` autocast.

    Convolutions and matmuls then run in half precision; rpnkit decodes and selects boxes in
    float32 either way. With the backbone's batch norms folded (as the runtime does) bf16 is
    where the GPU gains most (docs/performance.md); on a CPU without bf16 units it is slower.
    """
    check_amp(amp, device)
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def check_amp(amp: str, device: torch.device) -> None:
    """A ``ValueError`` for a precision that is not one, or fp16 off CUDA (its loss scaling
    and half-precision kernels are CUDA's; PyTorch would carry on without scaling, slowly)."""
    if amp != "none" and amp not in AMP_DTYPES:
        raise ValueError(f"--amp (amp=) {amp!r}: expected none, bf16 or fp16")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"--amp fp16 needs a CUDA device (got {device}); use bf16 on the CPU")


def memory_layout_for(
    model: nn.Module, device: torch.device, channels_last: bool | None = None
) -> nn.Module:
    """The convolutional part of ``model`` (its first stage) in channels-last (NHWC) or
    channels-first (NCHW) memory format, in place, for training and inference alike: the same
    function either way. ``channels_last`` None chooses by device: NHWC on the CPU, NCHW on CUDA.

    - CPU (oneDNN, this project's 2-core machine): NHWC makes effnet-lite0-fpn's RPN inference
      (folded) 1.1-1.2x faster, its Faster R-CNN's training step 1.04x, R50-FPN's 1.02-1.03x,
      the tiny preset's the same; a new input size costs nothing extra
      (``bench/bench_layout_cpu.py``).
    - CUDA (H200, bf16): NHWC makes effnet-lite0-fpn Faster R-CNN's training step 1.42x faster
      (PyTorch's NCHW depthwise kernels are replaced by cuDNN's) and R50-FPN's 1.13x, but cuDNN
      then spends 7-13 s building its plans for each new batch size (effnet-lite0-fpn), so it
      is asked for (``--channels-last``) where batches keep few sizes: fixed-size inputs, tiles,
      long runs. docs/performance.md has the figures."""
    if channels_last is None:
        channels_last = device.type == "cpu"
    first = getattr(model, "first_stage", model)
    if hasattr(first, "use_channels_last"):
        first.use_channels_last(channels_last)
    return model


def fold_for_inference(model: nn.Module) -> nn.Module:
    """Fold the backbone's batch norms into its convolutions, in place: the same function with
    less memory traffic (effnet-lite0's backbone: about 16 % less time on a 2-core CPU). The
    model can then no longer be trained or saved in the checkpoint's layout."""
    model.eval()
    probe = torch.rand(1, 3, 128, 128, device=next(model.parameters()).device)
    fold_batch_norm(model.backbone, probe)
    return model


def check_backend(name: str, compile: bool | str) -> None:
    """A ValueError naming the setting ``name`` unless ``compile`` says how to compile
    (``config.check_compile``) with a backend that ``torch.compile`` knows (found before any
    work, not at the first step)."""
    check_compile(name, compile)
    if isinstance(compile, str):
        import torch._dynamo

        if compile not in torch._dynamo.list_backends(exclude_tags=()):  # debug ones too
            shown = ", ".join(["eager", *torch._dynamo.list_backends()])
            raise ValueError(f"{name}: torch.compile has no backend {compile!r} (e.g. {shown})")


def compile_backend(compile: bool | str) -> str:
    """The ``torch.compile`` backend a ``compile`` setting names: True is inductor (the
    default backend), a string a backend's name (``check_backend``)."""
    return "inductor" if compile is True else compile


def compile_in_place(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` the model's forward in place with ``backend`` (``nn.Module.compile``:
    the module, its attributes and its state dict stay as they are), and its first stage's too
    where it has one (propose and evaluate call a detector's first stage on its own).
    rpnkit's forward has no graph break, in inference and in a training step
    (tests/test_compile.py): NMS and the RoI pooler are opaque ops under compilation (on
    CUDA, RoIAlign's one-canvas pooler is traced instead). The
    first call of each input shape compiles (tens of seconds); after a second shape, sizes
    are traced as dynamic."""
    model.compile(backend=backend)
    first_stage = getattr(model, "first_stage", None)
    if isinstance(first_stage, nn.Module):
        first_stage.compile(backend=backend)
    return model
