import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from rpnkit.modeling.anchors import AnchorConfig, AnchorGenerator, LevelAnchors, visible_anchors


def test_seed_grid_nine_anchors_by_hand():
    # The paper's grid: stride 16, sizes 128/256/512, ratios 0.5/1/2, centre offset 0.5 -> the
    # first position's centre is (8, 8). Ratio r = h / w: h = s * sqrt(r), w = s / sqrt(r).
    gen = AnchorGenerator(AnchorConfig.single_level(offset=0.5))
    anchors = gen([(50, 50)])
    assert anchors.shape == (22_500, 4)  # 50 * 50 * 9, for an 800x800 image
    expected = torch.tensor(
        [
            [-82.51, -37.25, 98.51, 53.25],  # ratio 0.5, size 128
            [-173.02, -82.51, 189.02, 98.51],  # ratio 0.5, size 256
            [-354.04, -173.02, 370.04, 189.02],  # ratio 0.5, size 512
            [-56.0, -56.0, 72.0, 72.0],  # ratio 1
            [-120.0, -120.0, 136.0, 136.0],
            [-248.0, -248.0, 264.0, 264.0],
            [-37.25, -82.51, 53.25, 98.51],  # ratio 2
            [-82.51, -173.02, 98.51, 189.02],
            [-173.02, -354.04, 189.02, 370.04],
        ]
    )
    assert torch.allclose(anchors[:9], expected, atol=0.01)
    # the next position is one stride to the right: same shapes, shifted by 16 in x
    assert torch.allclose(anchors[9:18], expected + torch.tensor([16.0, 0, 16, 0]), atol=0.01)
    # the last anchor sits at the centre of the last cell, (49.5 * 16, 49.5 * 16) = (792, 792)
    last = anchors[-1]
    assert torch.allclose((last[:2] + last[2:]) / 2, torch.tensor([792.0, 792.0]))


def test_tutorial_miscount_is_not_repeated():
    # A 38x56 map with 9 anchors per position has 19,152 anchors, not 1,192.
    gen = AnchorGenerator(AnchorConfig.single_level())
    assert gen([(38, 56)]).shape[0] == 19_152


def _torchvision_anchors(sizes, ratios, image_hw, feature_hws):
    tv = TVAnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    images = ImageList(torch.zeros(1, 3, *image_hw), [image_hw])
    feats = [torch.zeros(1, 1, h, w) for h, w in feature_hws]
    return tv(images, feats)[0]


def test_single_level_equals_torchvision():
    # Exact: offset 0 and base anchors rounded as torchvision rounds them.
    ours = AnchorGenerator(AnchorConfig.single_level(round_base=True))([(37, 50)])
    theirs = _torchvision_anchors(((128, 256, 512),), ((0.5, 1.0, 2.0),), (592, 800), [(37, 50)])
    assert torch.equal(ours, theirs)


def test_pyramid_equals_torchvision():
    strides, sizes = (4, 8, 16, 32, 64), (32, 64, 128, 256, 512)
    image_hw = (256, 384)
    feature_hws = [(image_hw[0] // s, image_hw[1] // s) for s in strides]
    ours = AnchorGenerator(AnchorConfig.pyramid(strides=strides, sizes=sizes, round_base=True))(
        feature_hws
    )
    theirs = _torchvision_anchors(
        tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 5, image_hw, feature_hws
    )
    assert torch.equal(ours, theirs)


def test_levels_with_different_anchor_counts():
    config = AnchorConfig(
        levels=(
            LevelAnchors(stride=8, sizes=(16.0, 24.0), ratios=(0.5, 1.0, 2.0)),
            LevelAnchors(stride=16, sizes=(64.0,), ratios=(1.0,)),
        )
    )
    gen = AnchorGenerator(config)
    assert gen.num_anchors_per_level == [6, 1]
    anchors = gen([(4, 5), (2, 3)])
    assert anchors.shape == (4 * 5 * 6 + 2 * 3 * 1, 4)
    # the second level starts right after the first; its first anchor is the 64x64 square at 0
    assert torch.allclose(anchors[120], torch.tensor([-32.0, -32.0, 32.0, 32.0]))


def test_grids_are_cached_per_feature_size():
    gen = AnchorGenerator(AnchorConfig.pyramid(strides=(8, 16), sizes=(32, 64)))
    first = gen([(10, 10), (5, 5)])
    assert gen([(10, 10), (5, 5)]) is first
    assert gen([(12, 10), (6, 5)]) is not first


def test_allowed_border_visibility_by_hand():
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # inside
            [-5.0, 0.0, 10.0, 10.0],  # crosses the left border by 5
            [90.0, 40.0, 100.0, 50.0],  # touches the right edge of a 100-wide image
            [95.0, 40.0, 105.0, 50.0],  # crosses the right border by 5
        ]
    )
    sizes = torch.tensor([[50, 100], [50, 102]])  # (height, width)
    assert visible_anchors(anchors, sizes, None).all()
    assert visible_anchors(anchors, sizes, 0.0).tolist() == [
        [True, False, True, False],
        [True, False, True, False],
    ]
    assert visible_anchors(anchors, sizes, 5.0).tolist() == [[True] * 4, [True] * 4]


def test_feature_count_mismatch_is_a_clear_error():
    gen = AnchorGenerator(AnchorConfig.pyramid(strides=(8, 16, 32), sizes=(32, 64, 128)))
    with pytest.raises(ValueError, match=r"got 2 feature maps but the anchors have 3 level"):
        gen([(10, 10), (5, 5)])


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="3 strides but 2 sizes"):
        AnchorConfig.pyramid(strides=(8, 16, 32), sizes=(32, 64))
    with pytest.raises(ValueError, match="must be positive"):
        AnchorConfig.single_level(sizes=(128, -1))
