"""Backbones: modules mapping a (B, 3, H, W) normalised batch to a list of feature maps.

Every backbone exposes ``out_channels`` (channels of every returned level) and ``strides`` (one
per returned level), which the RPN's anchors must match.
"""

from .tiny import TinyFPN

__all__ = ["TinyFPN"]
