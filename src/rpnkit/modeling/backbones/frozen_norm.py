"""A frozen batch norm that costs one kernel.

torchvision's ``FrozenBatchNorm2d`` recomputes its per-channel scale and shift from its four
buffers at every call (about six small kernels), then multiplies and adds (two more), and under
bf16 autocast its float32 scale promotes every activation to float32. Frozen means the buffers
do not change between calls: this subclass computes the affine map once, keeps it (for each
activation dtype) until a buffer changes (``load_state_dict``, ``.to()``, an in-place edit:
tracked by the buffers' version counters and storage), and applies it as one ``addcmul`` in the
activation's own dtype. The function is the same: ``x * scale + shift``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops.misc import FrozenBatchNorm2d


class FastFrozenBatchNorm2d(FrozenBatchNorm2d):
    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps)
        self._affine: dict[torch.dtype, tuple[tuple, Tensor, Tensor]] = {}

    def _buffers_key(self) -> tuple:
        bufs = (self.weight, self.bias, self.running_mean, self.running_var)
        return tuple((b._version, b.data_ptr()) for b in bufs)

    def affine(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(1, C, 1, 1) scale and shift in ``dtype``, computed in float32."""
        key = self._buffers_key()
        cached = self._affine.get(dtype)
        if cached is None or cached[0] != key:
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            shift = self.bias - self.running_mean * scale
            cached = (key, scale.view(1, -1, 1, 1).to(dtype), shift.view(1, -1, 1, 1).to(dtype))
            self._affine[dtype] = cached
        return cached[1], cached[2]

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or torch.compiler.is_compiling():
            return super().forward(x)  # traced and compiled graphs fuse it themselves
        scale, shift = self.affine(x.dtype)
        return torch.addcmul(shift, x, scale)
