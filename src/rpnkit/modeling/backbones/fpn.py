"""The feature pyramid: torchvision's ``FeaturePyramidNetwork`` (same modules, same state dict)
with a top-down pathway that stays in the activations' dtype.

Under autocast ``F.interpolate`` is on the list of operators run in float32, so in
torchvision's FPN every upsampled map, every top-down sum and the input of every output
convolution became float32: twice the bytes through the pyramid's largest maps, plus the casts
back (1.3-1.6 ms of an 8-image bf16 training step at 800 px on an H200, docs/performance.md).
Nearest-neighbour upsampling only copies values, so running it in bf16 is exact; the sum is
then rounded to the activations' dtype, as every other activation is. In float32 the module
computes exactly what torchvision's does (tests/test_backbones.py).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import FeaturePyramidNetwork


def upsample_nearest(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour upsampling of ``x`` to ``size`` in ``x``'s own dtype, autocast or not."""
    with torch.autocast(x.device.type, enabled=False):
        return F.interpolate(x, size=size, mode="nearest")


class FeaturePyramid(FeaturePyramidNetwork):
    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        names, maps = list(x.keys()), list(x.values())
        inner = self.get_result_from_inner_blocks(maps[-1], -1)
        results = [self.get_result_from_layer_blocks(inner, -1)]
        for idx in range(len(maps) - 2, -1, -1):
            lateral = self.get_result_from_inner_blocks(maps[idx], idx)
            inner = lateral + upsample_nearest(inner, lateral.shape[-2:])
            results.insert(0, self.get_result_from_layer_blocks(inner, idx))
        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, maps, names)
        return OrderedDict(zip(names, results))
