"""The one agreement on image padding and feature-map sizes.

A batch is padded to a multiple of ``SIZE_DIVISIBLE`` (32, the largest stride of the C5
backbones; FPN's P6 at stride 64 rounds up), and every backbone level at stride s then has
ceil(padded / s) rows and columns. Batching, the anchor diagnostics and the pictures of anchors
all size things through these two functions; a test checks them against every preset's
backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

SIZE_DIVISIBLE = 32
MIN_MAX_SIZE = SIZE_DIVISIBLE  # the least cap on an image's longer side: one padding block


def padded_size(height: int, width: int, divisor: int = SIZE_DIVISIBLE) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``divisor``: the size of the padded batch."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def feature_sizes(height: int, width: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """[(H_l, W_l)] of the feature maps of an image of this size once padded, one per stride."""
    ph, pw = padded_size(height, width)
    return [(-(-ph // s), -(-pw // s)) for s in strides]
