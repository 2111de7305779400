import pytest
import torch

from rpnkit.modeling.backbones import TinyFPN
from rpnkit.modeling.presets import build_model, preset_config
from rpnkit.modeling.proposal_model import ProposalModel, normalize
from rpnkit.modeling.rpn import RegionProposalNetwork, RPNConfig


def test_backbone_and_anchor_strides_must_agree_at_construction():
    backbone = TinyFPN()  # strides 8, 16, 32
    rpn = RegionProposalNetwork(in_channels=64, config=RPNConfig())  # P2-P6: strides 4..64
    with pytest.raises(ValueError, match=r"strides \(8, 16, 32\) differ from the anchor strides"):
        ProposalModel(backbone=backbone, rpn=rpn, pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1))


def test_backbone_and_head_channels_must_agree():
    config = preset_config("tiny").rpn
    rpn = RegionProposalNetwork(in_channels=32, config=config)
    with pytest.raises(ValueError, match="gives 64 channels but the RPN head expects 32"):
        ProposalModel(backbone=TinyFPN(), rpn=rpn, pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1))


def test_model_rejects_bad_image_batches():
    model = build_model(preset_config("tiny")).eval()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 1, 64, 64), torch.tensor([[64, 64]]))
    with pytest.raises(ValueError, match="empty batch"):
        model(torch.rand(0, 3, 64, 64), torch.zeros(0, 2))


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown preset .r51.; available: \[.effnet"):
        preset_config("r51")


def test_normalize_zeroes_the_padding_of_each_image():
    # two images of 2x3 and 3x2 true size in a 3x3 batch: (x - mean) / std inside, 0 outside,
    # as torchvision pads after normalising
    images = torch.full((2, 3, 3, 3), 0.5)
    sizes = torch.tensor([[2, 3], [3, 2]])
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.25]).view(1, 3, 1, 1)
    out = normalize(images, sizes, mean, std)
    expected = ((0.5 - mean) / std).view(3)
    assert torch.allclose(out[0, :, :2, :3], expected.view(3, 1, 1).expand(3, 2, 3))
    assert (out[0, :, 2, :] == 0).all()
    assert torch.allclose(out[1, :, :, :2], expected.view(3, 1, 1).expand(3, 3, 2))
    assert (out[1, :, :, 2] == 0).all()
