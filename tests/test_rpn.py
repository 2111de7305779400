from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.models.detection.rpn import concat_box_prediction_layers

from rpnkit.modeling.anchors import AnchorConfig, AnchorGenerator, LevelAnchors
from rpnkit.modeling.matching import POSITIVE
from rpnkit.modeling.rpn import (
    ProposalConfig,
    RegionProposalNetwork,
    RPNConfig,
    RPNHead,
    rpn_losses,
    select_proposals,
)
from rpnkit.modeling.structures import GroundTruth
from rpnkit.testing import copy_rpn_head_to_torchvision, same_proposals

CHANNELS = 32
STRIDES = (8, 16, 32)
SIZES = (32, 64, 128)
PADDED_HW = (256, 320)
IMAGE_SIZES = [(256, 320), (200, 310), (240, 180)]  # (height, width), padded to 256x320


def make_pair(pre_nms=300, post_nms=200, seed=0):
    """rpnkit's RPN and torchvision's with the same anchors, settings and head weights."""
    torch.manual_seed(seed)
    config = RPNConfig(
        anchors=AnchorConfig.pyramid(strides=STRIDES, sizes=SIZES, round_base=True),
        train_proposals=ProposalConfig(pre_nms_top_n=pre_nms, post_nms_top_n=post_nms),
        test_proposals=ProposalConfig(pre_nms_top_n=pre_nms, post_nms_top_n=post_nms),
    )
    ours = RegionProposalNetwork(in_channels=CHANNELS, config=config)
    # larger weights than the init's std 0.01, so scores and boxes spread out
    for p in ours.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    tv = TVRPN(
        TVAnchorGenerator(tuple((s,) for s in SIZES), ((0.5, 1.0, 2.0),) * len(SIZES)),
        TVRPNHead(CHANNELS, 3),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n=dict(training=pre_nms, testing=pre_nms),
        post_nms_top_n=dict(training=post_nms, testing=post_nms),
        nms_thresh=0.7,
    )
    copy_rpn_head_to_torchvision(ours.head, tv.head)
    return ours, tv


def make_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    n = len(IMAGE_SIZES)
    features = [
        torch.randn(n, CHANNELS, PADDED_HW[0] // s, PADDED_HW[1] // s, generator=g) for s in STRIDES
    ]
    images = ImageList(torch.zeros(n, 3, *PADDED_HW), IMAGE_SIZES)
    return features, images, torch.tensor(IMAGE_SIZES)


def torchvision_proposals(tv, features, images):
    """torchvision's proposals and scores (its forward returns only the boxes)."""
    feats = list(features)
    objectness, deltas = tv.head(feats)
    anchors = tv.anchor_generator(images, feats)
    counts = [o[0].numel() for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    boxes = tv.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
    return tv.filter_proposals(boxes, objectness.detach(), images.image_sizes, counts)


def test_proposals_equal_torchvision_for_a_batch_of_different_sizes():
    # Equal: the same (box, score) pairs, scores exactly and boxes to 1e-4 px (torchvision
    # decodes every anchor, we decode the selected ones: float32 rounding). The order is the
    # same except among exactly equal scores, where torchvision's unstable sort decides.
    ours, tv = make_pair()
    ours.eval()
    tv.eval()
    features, images, sizes = make_inputs()
    with torch.no_grad():
        out = ours(features, sizes)
        tv_boxes, tv_scores = torchvision_proposals(tv, features, images)
    for i, ((boxes, scores), b_tv, s_tv) in enumerate(
        zip(out.proposals.per_image(), tv_boxes, tv_scores)
    ):
        assert boxes.shape == b_tv.shape, f"image {i}: {boxes.shape} vs {b_tv.shape}"
        assert same_proposals(boxes, scores, b_tv, s_tv), f"image {i}"
    assert out.proposals.num.tolist() == [200, 200, 200]


def test_padding_slots_are_zero_and_counts_are_exact():
    ours, _ = make_pair(pre_nms=20, post_nms=60)
    ours.eval()
    features, _, sizes = make_inputs()
    with torch.no_grad():
        p = ours(features, sizes).proposals
    assert p.boxes.shape == (3, 60, 4)
    assert (p.num <= 60).all()
    assert (p.boxes[~p.valid] == 0).all() and (p.scores[~p.valid] == 0).all()
    # valid scores are sorted, decreasing
    for _, scores in p.per_image():
        assert (scores[1:] <= scores[:-1]).all()


@pytest.mark.parametrize("per_level", [True, False])
def test_batched_proposals_equal_one_image_at_a_time(per_level):
    # Exact on the selection: the same head outputs, sliced per image.
    ours, _ = make_pair()
    features, _, sizes = make_inputs()
    with torch.no_grad():
        logits, deltas = ours.head.flatten(*ours.head(features))
    fs = [(f.shape[-2], f.shape[-1]) for f in features]
    anchors, level_sizes = ours.anchor_generator(fs), ours.anchor_generator.level_sizes(fs)
    cfg = ProposalConfig(300, 200, nms_per_level=per_level)
    batched = select_proposals(logits, deltas, anchors, level_sizes, sizes, cfg).per_image()
    for i in range(len(IMAGE_SIZES)):
        one = select_proposals(
            logits[i : i + 1], deltas[i : i + 1], anchors, level_sizes, sizes[i : i + 1], cfg
        ).per_image()[0]
        assert torch.equal(one[0], batched[i][0]) and torch.equal(one[1], batched[i][1])


def test_batched_forward_matches_single_image_forward():
    # Through the convs too: batch 1 and batch 3 may take different conv kernels, so boxes agree
    # to 1e-3 px and scores to 1e-6.
    ours, _ = make_pair()
    ours.eval()
    features, _, sizes = make_inputs()
    with torch.no_grad():
        batched = ours(features, sizes).proposals.per_image()
        for i in range(len(IMAGE_SIZES)):
            single = ours([f[i : i + 1] for f in features], sizes[i : i + 1]).proposals
            boxes, scores = single.per_image()[0]
            assert torch.allclose(boxes, batched[i][0], atol=1e-3, rtol=0)
            assert torch.allclose(scores, batched[i][1], atol=1e-6, rtol=0)


def test_nms_across_levels_differs_from_per_level_and_keeps_invariants():
    ours, _ = make_pair()
    features, _, sizes = make_inputs()
    with torch.no_grad():
        logits, deltas = ours.head.flatten(*ours.head(features))
    anchors = ours.anchor_generator([(f.shape[-2], f.shape[-1]) for f in features])
    level_sizes = ours.anchor_generator.level_sizes([(f.shape[-2], f.shape[-1]) for f in features])
    across = select_proposals(
        logits, deltas, anchors, level_sizes, sizes, ProposalConfig(300, 200, nms_per_level=False)
    )
    for boxes, scores in across.per_image():
        from torchvision.ops import box_iou

        iou = box_iou(boxes, boxes)
        iou.fill_diagonal_(0)
        assert (iou <= 0.7).all()  # no two kept boxes overlap above the threshold
        assert (scores[1:] <= scores[:-1]).all()


def test_min_size_score_threshold_and_image_scales():
    ours, _ = make_pair()
    features, _, sizes = make_inputs()
    with torch.no_grad():
        logits, deltas = ours.head.flatten(*ours.head(features))
    fs = [(f.shape[-2], f.shape[-1]) for f in features]
    anchors, level_sizes = ours.anchor_generator(fs), ours.anchor_generator.level_sizes(fs)
    cfg = ProposalConfig(300, 200, min_size=40.0, score_threshold=0.5)
    p = select_proposals(logits, deltas, anchors, level_sizes, sizes, cfg)
    for boxes, scores in p.per_image():
        assert ((boxes[:, 2] - boxes[:, 0]) >= 40).all() and (
            (boxes[:, 3] - boxes[:, 1]) >= 40
        ).all()
        assert (scores >= 0.5).all()
    scaled = select_proposals(
        logits, deltas, anchors, level_sizes, sizes, cfg, image_scales=torch.tensor([1.0, 2, 1])
    )
    boxes = scaled.per_image()[1][0]
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 80).all()  # image 1: min size 40 x 2


def make_targets():
    g = torch.Generator().manual_seed(5)
    boxes = []
    for (h, w), n in zip(IMAGE_SIZES, (4, 1, 6)):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(n, 2, generator=g) * 90 + 20
        boxes.append(torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w, h]))], dim=1))
    return boxes


def test_losses_equal_torchvision_with_deterministic_sampling():
    # torchvision samples with randperm per image; here both use rpnkit's sample (its sampler is
    # replaced by one that returns our masks). Equal to float32 summation order: rtol 1e-5.
    ours, tv = make_pair()
    ours.train()
    tv.train()
    features, images, sizes = make_inputs()
    boxes = make_targets()
    gt = GroundTruth.from_lists(boxes)

    out = ours(features, sizes, gt)
    pos, neg = out.sample.masks(out.anchors.shape[0])
    assert int(pos.sum()) > 0

    def fixed_sampler(labels):
        # torchvision's labels must agree with ours for the comparison to mean anything
        for i, lab in enumerate(labels):
            assert torch.equal(lab == 1, out.match.labels()[i] == POSITIVE)
        return list(pos.to(torch.uint8)), list(neg.to(torch.uint8))

    tv.fg_bg_sampler = fixed_sampler
    _, tv_losses = tv(images, OrderedDict(enumerate(features)), [{"boxes": b} for b in boxes])
    assert torch.allclose(out.losses["loss_objectness"], tv_losses["loss_objectness"], rtol=1e-5)
    assert torch.allclose(out.losses["loss_rpn_box"], tv_losses["loss_rpn_box_reg"], rtol=1e-5)


def test_paper_loss_normalisation_by_hand():
    # Paper form: L = sum(L_cls) / N_cls + 10 * sum(L_reg) / N_reg with N_reg the anchor
    # positions; modern form divides both by the sampled count and uses lambda = 1.
    ours, _ = make_pair()
    features, _, sizes = make_inputs()
    gt = GroundTruth.from_lists(make_targets())
    out = ours(features, sizes, gt)
    positions = sum(f.shape[-2] * f.shape[-1] for f in features)
    n = out.sample.num_sampled()
    args = (out.pred_objectness, out.pred_deltas, out.anchors, gt.boxes, out.match, out.sample)
    modern = rpn_losses(*args, config=ours.config, num_positions=positions)
    paper = rpn_losses(*args, config=RPNConfig(loss_form="paper"), num_positions=positions)
    assert torch.allclose(paper["loss_objectness"], modern["loss_objectness"])
    box_sum = modern["loss_rpn_box"] * n
    expected = 10 * box_sum / (positions * len(IMAGE_SIZES))
    assert torch.allclose(paper["loss_rpn_box"], expected, rtol=1e-5)
    l1 = rpn_losses(*args, config=RPNConfig(box_loss="l1"), num_positions=positions)
    giou = rpn_losses(*args, config=RPNConfig(box_loss="giou"), num_positions=positions)
    assert torch.isfinite(l1["loss_rpn_box"]) and torch.isfinite(giou["loss_rpn_box"])
    assert l1["loss_rpn_box"] > 0 and giou["loss_rpn_box"] > 0


def test_softmax_head_loss_is_two_class_cross_entropy():
    config = RPNConfig(
        anchors=AnchorConfig.single_level(stride=16, sizes=(64, 128, 256)), objectness="softmax"
    )
    rpn = RegionProposalNetwork(in_channels=CHANNELS, config=config)
    for p in rpn.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    features = [torch.randn(2, CHANNELS, 16, 20)]
    sizes = torch.tensor([[256, 320], [256, 300]])
    gt = GroundTruth.from_lists([torch.tensor([[20.0, 30, 150, 140]]), torch.zeros(0, 4)])
    out = rpn(features, sizes, gt)
    assert rpn.head.cls_logits[0].out_channels == 18  # 9 anchors x (bg, fg)

    raw = rpn.head(features)[0][0]  # (B, 2A, H, W): A background, then A foreground logits
    two_class = raw.view(2, 2, 9, 16, 20).permute(0, 3, 4, 2, 1).reshape(2, -1, 2)  # (B, HWA, 2)
    pos, neg = out.sample.masks(out.anchors.shape[0])
    chosen = pos | neg
    ce = F.cross_entropy(two_class[chosen], pos[chosen].long(), reduction="sum") / chosen.sum()
    assert torch.allclose(out.losses["loss_objectness"], ce, rtol=1e-5)


def test_image_without_gt_trains_and_predicts():
    ours, _ = make_pair()
    features, _, sizes = make_inputs()
    gt = GroundTruth.from_lists([torch.zeros(0, 4)] * 3)
    out = ours(features, sizes, gt)
    assert out.losses["loss_rpn_box"] == 0
    assert out.losses["loss_objectness"] > 0
    assert int(out.sample.num_sampled()) == 3 * 256  # all negatives
    sum(out.losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in ours.head.parameters())
    assert out.proposals.num.min() > 0


def test_gradients_do_not_flow_through_proposals():
    ours, _ = make_pair()
    features, _, sizes = make_inputs()
    out = ours(features, sizes, GroundTruth.from_lists(make_targets()))
    assert not out.proposals.boxes.requires_grad and not out.proposals.scores.requires_grad


def test_head_anchor_mismatch_fails_at_construction():
    anchors = AnchorGenerator(AnchorConfig.pyramid(strides=(8, 16), sizes=(32, 64)))
    head = RPNHead(in_channels=CHANNELS, num_anchors_per_level=[9, 9])
    with pytest.raises(ValueError, match=r"num_anchors_per_level=\[3, 3\]"):
        RegionProposalNetwork.from_parts(
            anchor_generator=anchors, head=head, config=RPNConfig(anchors=anchors.config)
        )


def test_levels_with_different_anchor_counts_get_their_own_predictors():
    config = RPNConfig(
        anchors=AnchorConfig(
            levels=(
                LevelAnchors(8, (16.0, 32.0)),  # 6 per position
                LevelAnchors(16, (64.0,), (1.0,)),  # 1 per position
            )
        )
    )
    rpn = RegionProposalNetwork(in_channels=CHANNELS, config=config).eval()
    features = [torch.randn(1, CHANNELS, 8, 8), torch.randn(1, CHANNELS, 4, 4)]
    out = rpn(features, torch.tensor([[64, 64]]))
    assert out.pred_objectness.shape == (1, 8 * 8 * 6 + 4 * 4)
    assert out.proposals.num.item() > 0


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([50.0, 10.0, 40.0, 30.0], r"image 1: ground-truth box 0 \(50, 10, 40, 30\).*inverted"),
        ([float("nan"), 10.0, 40.0, 30.0], r"image 1: ground-truth box 0 .*NaN"),
        ([10.0, float("inf"), 40.0, 30.0], r"image 1: ground-truth box 0 .*infinite"),
        ([400.0, 300.0, 450.0, 350.0], r"image 1: .*entirely outside the 310x200"),
    ],
)
def test_bad_boxes_raise_with_image_and_box(box, message):
    ours, _ = make_pair()
    features, _, sizes = make_inputs()
    boxes = make_targets()
    boxes[1] = torch.tensor([box])
    with pytest.raises(ValueError, match=message):
        ours(features, sizes, GroundTruth.from_lists(boxes))


def test_bad_shapes_raise_clear_errors():
    ours, _ = make_pair()
    features, _, sizes = make_inputs()
    with pytest.raises(ValueError, match="empty batch"):
        ours([f[:0] for f in features], sizes[:0])
    with pytest.raises(ValueError, match="empty batch"):
        GroundTruth.from_lists([])
    with pytest.raises(ValueError, match=r"got 2 feature maps but the anchors have 3 level"):
        ours(features[:2], sizes)
    with pytest.raises(ValueError, match=r"feature level 1: expected shape \(3, 32, H, W\)"):
        ours([features[0], features[1][:, :16], features[2]], sizes)
    with pytest.raises(ValueError, match=r"image_sizes must be \(3, 2\)"):
        ours(features, sizes[:2])
    with pytest.raises(ValueError, match=r"image 0: ground-truth boxes must have shape \(G, 4\)"):
        GroundTruth.from_lists([torch.zeros(3, 5)])
