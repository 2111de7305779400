"""Folding batch norm into convolutions for inference: the same function, fewer layers."""

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rpnkit.modeling.backbones.fold import fold_batch_norm
from rpnkit.modeling.presets import build_model, preset_config


def _norms(module):
    return sum(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in module.modules())


@pytest.mark.parametrize("preset", ["r18-fpn", "tiny"])  # frozen BN; BN in eval mode
def test_folded_backbone_computes_the_same_maps(preset):
    torch.manual_seed(0)
    backbone = build_model(preset_config(preset)).backbone.eval()
    for m in backbone.modules():  # non-trivial statistics, as after training
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(2, 3, 160, 192)
    with torch.no_grad():
        before = backbone(x)
    count = _norms(backbone)
    assert fold_batch_norm(backbone, torch.rand(1, 3, 64, 64)) == count > 0
    assert _norms(backbone) == 0
    with torch.no_grad():
        after = backbone(x)
    for a, b in zip(before, after):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_fold_refuses_training_mode_and_a_conv_output_used_twice():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4))
    with pytest.raises(ValueError, match="inference"):
        fold_batch_norm(net.train(), torch.rand(1, 3, 8, 8))

    class Both(nn.Module):  # the conv's output also feeds a skip path: not foldable
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), FrozenBatchNorm2d(3)
            self.bn.running_mean.fill_(0.3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    with pytest.raises(RuntimeError, match="used elsewhere"):
        fold_batch_norm(Both().eval(), torch.rand(1, 3, 8, 8))
