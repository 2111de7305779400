"""A small convolutional backbone with an FPN, for training an RPN on a laptop CPU."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from .fpn import FeaturePyramid


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyFPN(nn.Module):
    """Five stride-2 stages (16-32-64-96-128 channels by default) and an FPN over the stages of
    stride 8, 16 and 32. About 0.3 GMAC for a 256x256 image."""

    def __init__(self, *, widths: tuple[int, ...] = (16, 32, 64, 96, 128), out_channels: int = 64):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"TinyFPN needs 5 stage widths, got {widths}")
        stages, c_in = [], 3
        for i, w in enumerate(widths):
            layers = [_conv_bn_relu(c_in, w, 2)]
            if i > 0:  # the stem is a single conv
                layers.append(_conv_bn_relu(w, w, 1))
            stages.append(nn.Sequential(*layers))
            c_in = w
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramid(list(widths[2:]), out_channels)
        self.out_channels = out_channels
        self.strides = (8, 16, 32)

    def forward(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> [(B, C, H/8, W/8), (B, C, H/16, W/16), (B, C, H/32, W/32)]."""
        x, taps = images, OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 2:
                taps[f"c{i + 1}"] = x
        return list(self.fpn(taps).values())
