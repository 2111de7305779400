"""Anchor configuration and generation, single-level and pyramid.

An anchor of size ``s`` and ratio ``r = h / w`` has ``h = s * sqrt(r)`` and ``w = s / sqrt(r)``.
At every position ``(i, j)`` of a level with stride ``S`` the anchors are centred at
``((j + offset) * S, (i + offset) * S)``: offset 0 is the torchvision/detectron2 convention, 0.5
the original tutorials'.

Order of the flattened anchors, which every prediction tensor follows too: level-major, then row
``i``, then column ``j``, then the level's base anchors (ratio-major, then size):
``(H_0 * W_0 * A_0) + (H_1 * W_1 * A_1) + ...``.

Shape glossary:
    L      : pyramid levels
    A_l    : anchors per position on level l
    A_total: all anchors of an image, sum over levels of H_l * W_l * A_l
    B      : images in a batch
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LevelAnchors:
    """The anchors of one feature level: every size at every ratio, or, when ``shapes`` is
    given, exactly those (width, height) pairs (anchors fitted to a dataset)."""

    stride: int
    sizes: tuple[float, ...] = ()
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    shapes: tuple[tuple[float, float], ...] = ()

    @property
    def num_anchors(self) -> int:
        return len(self.shapes) if self.shapes else len(self.sizes) * len(self.ratios)


@dataclass(frozen=True)
class AnchorConfig:
    """Anchors for every level. ``round_base`` rounds the centred base anchors to whole pixels, as
    torchvision's ``AnchorGenerator`` does; the default keeps them exact."""

    levels: tuple[LevelAnchors, ...] = field(
        default_factory=lambda: (LevelAnchors(stride=16, sizes=(128.0, 256.0, 512.0)),)
    )
    offset: float = 0.0
    round_base: bool = False

    @classmethod
    def single_level(
        cls,
        *,
        stride: int = 16,
        sizes: Sequence[float] = (128, 256, 512),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        offset: float = 0.0,
        round_base: bool = False,
    ) -> AnchorConfig:
        """The paper's layout: one level (VGG-16 conv5_3, stride 16), 3 sizes x 3 ratios."""
        level = LevelAnchors(stride, tuple(float(s) for s in sizes), tuple(map(float, ratios)))
        return cls(levels=(level,), offset=offset, round_base=round_base)

    @classmethod
    def pyramid(
        cls,
        *,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        offset: float = 0.0,
        round_base: bool = False,
    ) -> AnchorConfig:
        """FPN layout: one size per level (P2-P6), the same ratios on every level."""
        if len(strides) != len(sizes):
            raise ValueError(f"{len(strides)} strides but {len(sizes)} sizes: give one per level")
        levels = tuple(
            LevelAnchors(int(st), (float(sz),), tuple(map(float, ratios)))
            for st, sz in zip(strides, sizes)
        )
        return cls(levels=levels, offset=offset, round_base=round_base)

    @property
    def num_anchors_per_level(self) -> list[int]:
        return [level.num_anchors for level in self.levels]

    @property
    def strides(self) -> list[int]:
        return [level.stride for level in self.levels]

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("AnchorConfig needs at least one level")
        if not (isinstance(self.offset, Real) and 0 <= self.offset <= 1):
            raise ValueError(f"AnchorConfig.offset must be a number in [0, 1], got {self.offset!r}")

        def positive(values) -> bool:  # finite numbers > 0 (NaN and inf fail)
            return all(isinstance(v, Real) and 0 < v < float("inf") for v in values)

        for i, level in enumerate(self.levels):
            stride = level.stride
            if isinstance(stride, bool) or not isinstance(stride, Integral) or stride < 1:
                raise ValueError(
                    f"anchor level {i}: stride must be a positive integer, got {stride!r}"
                )
            if level.shapes:
                if any(len(wh) != 2 or not positive(wh) for wh in level.shapes):
                    raise ValueError(
                        f"anchor level {i}: shapes must be positive (width, height) pairs, got "
                        f"{level.shapes}"
                    )
                continue
            if not level.sizes or not level.ratios:
                raise ValueError(f"anchor level {i}: needs at least one size and one ratio")
            if not positive(level.sizes) or not positive(level.ratios):
                raise ValueError(
                    f"anchor level {i}: sizes and ratios must be positive, got sizes "
                    f"{level.sizes} and ratios {level.ratios}"
                )


def base_anchors(level: LevelAnchors, *, round_base: bool = False) -> Tensor:
    """(A_l, 4) xyxy anchors centred at (0, 0), ratio-major then size (torchvision's order),
    or the level's explicit shapes in their order."""
    if level.shapes:
        wh = torch.tensor(level.shapes, dtype=torch.float32)
        anchors = torch.cat([-wh, wh], dim=1) / 2
        return anchors.round() if round_base else anchors
    sizes = torch.tensor(level.sizes, dtype=torch.float32)
    ratios = torch.tensor(level.ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)  # (R, S) -> (R*S,)
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
    return anchors.round() if round_base else anchors


class AnchorGenerator(nn.Module):
    """Makes the (A_total, 4) xyxy anchors of a padded batch from its feature-map sizes.

    Anchors depend only on the feature sizes, so one tensor serves every image of a batch. Grids
    are cached per (feature sizes, device, dtype).
    """

    def __init__(self, config: AnchorConfig) -> None:
        super().__init__()
        self.config = config
        self._base = [base_anchors(lv, round_base=config.round_base) for lv in config.levels]
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_levels(self) -> int:
        return len(self.config.levels)

    @property
    def num_anchors_per_level(self) -> list[int]:
        return self.config.num_anchors_per_level

    def grid_anchors(
        self, level: int, height: int, width: int, *, device=None, dtype=torch.float32
    ) -> Tensor:
        """(H * W * A_l, 4) xyxy anchors of one level, in (row, column, anchor) order."""
        lv = self.config.levels[level]
        base = self._base[level].to(device=device, dtype=dtype)
        shifts_x = (
            torch.arange(width, device=device, dtype=dtype) + self.config.offset
        ) * lv.stride
        shifts_y = (
            torch.arange(height, device=device, dtype=dtype) + self.config.offset
        ) * lv.stride
        sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (H, W) each
        shifts = torch.stack((sx, sy, sx, sy), dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
        return (shifts + base[None]).reshape(-1, 4)  # (H*W, A_l, 4) -> (H*W*A_l, 4)

    def forward(
        self, feature_sizes: Sequence[tuple[int, int]], *, device=None, dtype=torch.float32
    ) -> Tensor:
        """Feature sizes [(H_l, W_l)] per level -> (A_total, 4) xyxy anchors."""
        if len(feature_sizes) != self.num_levels:
            raise ValueError(
                f"got {len(feature_sizes)} feature maps but the anchors have {self.num_levels} "
                f"level(s) (strides {self.config.strides}): give one feature map per level"
            )
        key = (tuple(tuple(int(v) for v in s) for s in feature_sizes), str(device), dtype)
        cached = self._cache.get(key)
        if cached is None:
            grids = [
                self.grid_anchors(i, h, w, device=device, dtype=dtype)
                for i, (h, w) in enumerate(feature_sizes)
            ]
            cached = torch.cat(grids, dim=0)
            self._cache[key] = cached
        return cached

    def level_sizes(self, feature_sizes: Sequence[tuple[int, int]]) -> list[int]:
        """Number of anchors on each level: H_l * W_l * A_l."""
        return [h * w * a for (h, w), a in zip(feature_sizes, self.num_anchors_per_level)]


def visible_anchors(anchors: Tensor, image_sizes: Tensor, allowed_border: float | None) -> Tensor:
    """(A, 4) xyxy anchors, (B, 2) (h, w) -> (B, A) bool: anchors usable for training.

    ``allowed_border`` None keeps every anchor (the modern setting). A number keeps anchors that
    stay within that many pixels of the image on every side: 0 is the paper's setting, where
    anchors crossing the border are ignored in training.
    """
    if allowed_border is None:
        return torch.ones(
            (image_sizes.shape[0], anchors.shape[0]), dtype=torch.bool, device=anchors.device
        )
    hw = image_sizes.to(anchors.dtype)
    border = float(allowed_border)
    return (
        (anchors[None, :, 0] >= -border)
        & (anchors[None, :, 1] >= -border)
        & (anchors[None, :, 2] <= hw[:, 1, None] + border)
        & (anchors[None, :, 3] <= hw[:, 0, None] + border)
    )
