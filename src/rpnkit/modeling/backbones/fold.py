"""Folding batch norm into the convolution before it, for inference.

A frozen batch norm (or one in eval mode) after a convolution is an affine map per channel,
``y = x * scale + shift``; folding it into the convolution's weights and bias gives the same
function with one memory-bound pass less per layer. Under bf16 autocast it also removes a
float32 round trip: torchvision's ``FrozenBatchNorm2d`` keeps its scale in float32, so its
output (and the next convolution's input) is promoted to float32 at every layer.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

_NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)


def _affine(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """(C,) scale and shift of a batch norm that uses its stored statistics."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    return scale, norm.bias - norm.running_mean * scale


@torch.no_grad()
def fold_batch_norm(module: nn.Module, probe: Tensor, *, rtol: float = 1e-3) -> int:
    """Fold every batch norm of ``module`` whose input is the output of a ``Conv2d`` into that
    convolution and replace it by ``nn.Identity``. Returns the number folded.

    The pairs are found by running ``probe`` (a small input batch) through ``module`` in eval
    mode; the folded module is then checked against the original output on the same probe, and
    a mismatch raises (a convolution whose output were also used elsewhere could not be folded).
    Only for inference: the folded module no longer loads the original checkpoints' keys.
    """
    if module.training:
        raise ValueError("fold_batch_norm is for inference: call module.eval() first")
    with _full_float32():
        pairs, reference = _conv_norm_pairs(module, probe)
    if not all(bool(torch.isfinite(t).all()) for t in _flat(reference)):  # once, at loading
        raise FloatingPointError(
            "the network's output on a probe image is not finite: its weights overflow (a "
            "training run that had diverged?); use an earlier checkpoint"
        )
    parents = {
        id(child): (parent, name)
        for parent in module.modules()
        for name, child in parent.named_children()
    }
    folded = 0
    for conv, norm in {id(n): (c, n) for c, n in pairs}.values():  # each norm once
        scale, shift = _affine(norm)
        conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        parent, name = parents[id(norm)]
        setattr(parent, name, nn.Identity())
        folded += 1
    with _full_float32():
        result = module(probe)
    for a, b in zip(_flat(reference), _flat(result)):
        if not torch.allclose(a, b, rtol=rtol, atol=rtol * float(a.abs().max().clamp(min=1e-6))):
            raise RuntimeError(
                "folding batch norm changed the module's output: a convolution's output is "
                "used elsewhere as well; use the module unfolded"
            )
    return folded


@contextlib.contextmanager
def _full_float32():
    """Convolutions and matmuls in full float32 while the fold is checked: with TF32 (cuDNN's
    default on Ampere and later) a 50-layer network's rounding alone can pass the tolerance,
    and the check is about the graph (a convolution output used twice), not about rounding."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(
            enabled=torch.backends.cudnn.enabled,
            benchmark=torch.backends.cudnn.benchmark,
            deterministic=torch.backends.cudnn.deterministic,
            allow_tf32=False,
        ):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _conv_norm_pairs(module: nn.Module, probe: Tensor):
    """(conv, norm) pairs where the norm's input is the conv's output, and the probe's output."""
    # each convolution's output, kept alive during the probe so that ids are not reused
    produced_by: dict[int, tuple[nn.Conv2d, Tensor]] = {}
    pairs: list[tuple[nn.Conv2d, nn.Module]] = []

    def after_conv(conv, _, out):
        produced_by[id(out)] = (conv, out)

    def before_norm(norm, args):
        found = produced_by.get(id(args[0]))
        if found is not None and found[1] is args[0]:
            pairs.append((found[0], norm))

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(after_conv))
        elif isinstance(m, _NORMS):
            hooks.append(m.register_forward_pre_hook(before_norm))
    try:
        reference = module(probe)
    finally:
        for h in hooks:
            h.remove()
    return pairs, reference


def _flat(out) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return list(out)
