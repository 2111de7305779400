from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import ResNet50_Weights, resnet18
from torchvision.ops import FrozenBatchNorm2d

from rpnkit.modeling.backbones import BackboneConfig, build_backbone, load_efficientnet_lite0
from rpnkit.modeling.backbones.efficientnet_lite import EFFNET_PIXEL_MEAN, EFFNET_PIXEL_STD
from rpnkit.modeling.presets import PRESETS, build_model, preset_config

COCO_VAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128" / "images"
COCO_VAL = COCO_VAL / "val2017"
IMAGENET = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]  # names only: nothing downloaded


def _classify(model, path: Path) -> list[str]:
    img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(EFFNET_PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        EFFNET_PIXEL_STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        top = model(x).softmax(1)[0].topk(3).indices
    return [IMAGENET[int(i)] for i in top]


@pytest.mark.parametrize(
    ("file", "expected"), [("000000000285.jpg", "brown bear"), ("000000001818.jpg", "zebra")]
)
def test_efficientnet_lite0_with_packaged_weights_names_real_photos(file, expected):
    # COCO val photos of a bear and of zebras: the packaged ImageNet weights must load into our
    # definition (TF "same" padding, ReLU6, no SE) and give the right top-1 class.
    model = load_efficientnet_lite0().eval()
    assert _classify(model, COCO_VAL / file)[0] == expected


def test_random_init_does_not_recognise_the_bear():
    from rpnkit.modeling.backbones import EfficientNetLite0

    torch.manual_seed(0)
    assert _classify(EfficientNetLite0().eval(), COCO_VAL / "000000000285.jpg")[0] != "brown bear"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_runs(name):
    config = preset_config(name)
    model = build_model(config).eval()
    strides = model.backbone.strides
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 128, 192))
    assert [f.shape[1] for f in feats] == [model.backbone.out_channels] * len(strides)
    assert [(f.shape[-2], f.shape[-1]) for f in feats] == [
        (-(-128 // s), -(-192 // s)) for s in strides
    ]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 192), torch.tensor([[128, 192]]))
    assert out.proposals.num.item() > 0


def test_torchvision_weights_load_from_a_local_file(tmp_path):
    reference = resnet18()
    torch.nn.init.normal_(reference.conv1.weight)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone(BackboneConfig(name="resnet18", layout="fpn", weights=str(path)))
    assert torch.equal(backbone.body.stem[0].weight, reference.conv1.weight)


def test_unreadable_or_wrong_weights_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="weights file not found"):
        build_backbone(BackboneConfig(name="resnet50", weights=str(tmp_path / "nope.pth")))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad.pth: cannot read resnet50 weights"):
        build_backbone(BackboneConfig(name="resnet50", weights=str(bad)))
    other = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match=r"not resnet18 weights in torchvision format"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(other)))


def test_freezing_batch_norm_and_early_stages():
    backbone = build_backbone(
        BackboneConfig(name="resnet18", layout="c4", freeze_at=2, freeze_bn=True)
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    stem_conv, layer1 = backbone.body.stem[0], backbone.body.layers[0]
    assert not stem_conv.weight.requires_grad
    assert not any(p.requires_grad for p in layer1.parameters())
    assert all(p.requires_grad for p in backbone.body.layers[1].parameters())
    eff = build_backbone(BackboneConfig(name="efficientnet_lite0", freeze_at=3, freeze_bn=True))
    blocks = eff.body.net._blocks
    assert not any(p.requires_grad for p in blocks[2].parameters())
    assert all(p.requires_grad for p in blocks[3].parameters())
    # frozen BN keeps the pretrained statistics: outputs equal with or without freezing
    torch.manual_seed(0)  # the FPN layers are freshly initialised: the same seed for both
    plain = build_backbone(BackboneConfig(name="efficientnet_lite0", weights="imagenet")).eval()
    torch.manual_seed(0)
    frozen = build_backbone(
        BackboneConfig(name="efficientnet_lite0", weights="imagenet", freeze_bn=True)
    )
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain(x), frozen(x)):
            assert torch.allclose(a, b, atol=1e-4)


def test_layouts_that_do_not_exist_are_refused():
    with pytest.raises(ValueError, match="vgg16 comes as layout 'c5'"):
        build_backbone(BackboneConfig(name="vgg16", layout="fpn"))
    with pytest.raises(ValueError, match="tiny backbone has no pretrained weights"):
        build_backbone(BackboneConfig(name="tiny", weights="imagenet"))


def _pyramid_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(8, 32, 40), (16, 16, 20), (24, 8, 10), (32, 4, 5)]
    return {f"c{i}": torch.randn(2, c, h, w, generator=g) for i, (c, h, w) in enumerate(sizes)}


def test_feature_pyramid_equals_torchvision_fpn_in_float32():
    # Same modules and state dict as torchvision's FPN; only the top-down upsampling's dtype
    # under autocast differs, so in float32 the outputs must be identical.
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    from rpnkit.modeling.backbones.fpn import FeaturePyramid

    torch.manual_seed(0)
    ours = FeaturePyramid([8, 16, 24, 32], 16, extra_blocks=LastLevelMaxPool())
    theirs = FeaturePyramidNetwork([8, 16, 24, 32], 16, extra_blocks=LastLevelMaxPool())
    theirs.load_state_dict(ours.state_dict())
    x = _pyramid_inputs()
    a, b = ours(x), theirs(x)
    assert list(a) == list(b) == ["c0", "c1", "c2", "c3", "pool"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_feature_pyramid_top_down_stays_in_bf16_under_autocast():
    # torchvision's FPN under autocast upsamples in float32 (autocast's list), so its top-down
    # sums are float32; ours keep bf16 and stay close to the float32 result.
    from rpnkit.modeling.backbones.fpn import FeaturePyramid, upsample_nearest

    x = torch.arange(6.0).view(1, 1, 2, 3).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        up = upsample_nearest(x, (4, 6))
    assert up.dtype == torch.bfloat16
    assert up[0, 0].tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2

    torch.manual_seed(0)
    fpn = FeaturePyramid([8, 16, 24, 32], 16)
    dtypes = []
    for block in fpn.layer_blocks:  # the output convolutions' inputs: the top-down sums
        block.register_forward_pre_hook(lambda m, args: dtypes.append(args[0].dtype))
    x = _pyramid_inputs()
    reference = fpn(x)
    dtypes.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = fpn({k: v.to(torch.bfloat16) for k, v in x.items()})
    assert dtypes == [torch.bfloat16] * 4
    for name in reference:
        torch.testing.assert_close(mixed[name].float(), reference[name], rtol=0.05, atol=0.05)


def test_channels_last_layout_computes_the_same_proposals():
    # memory_layout_for: NHWC or NCHW as asked, by device when not (NHWC on the CPU, NCHW on
    # CUDA); the same function either way. The device argument only picks the layout here.
    from rpnkit.engine.device import memory_layout_for

    torch.manual_seed(0)
    model = build_model(preset_config("tiny")).eval()
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    images = torch.randint(0, 256, (2, 3, 96, 128), dtype=torch.uint8)
    sizes = torch.tensor([[96, 128], [80, 112]])
    with torch.no_grad():
        memory_layout_for(model, torch.device("cuda"))
        assert conv.weight.is_contiguous() and not model.channels_last
        before = model(images, sizes)
        memory_layout_for(model, torch.device("cpu"))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        after = model(images, sizes)
        memory_layout_for(model, torch.device("cpu"), channels_last=False)
        assert conv.weight.is_contiguous()
        memory_layout_for(model, torch.device("cuda"), channels_last=True)
        assert model.channels_last
    torch.testing.assert_close(after.pred_objectness, before.pred_objectness, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after.pred_deltas, before.pred_deltas, rtol=1e-4, atol=1e-4)
