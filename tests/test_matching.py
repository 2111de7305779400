import pytest
import torch
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou as tv_box_iou

import rpnkit.modeling.matching as matching
from rpnkit.modeling.anchors import AnchorConfig, AnchorGenerator
from rpnkit.modeling.boxes import box_iou
from rpnkit.modeling.matching import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    IGNORE,
    IGNORED,
    NEGATIVE,
    POSITIVE,
    BalancedSampler,
    Matcher,
)
from rpnkit.modeling.structures import GroundTruth

ANCHORS = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],  # a0: IoU 1.0 with GT0 -> positive
        [100.0, 100.0, 110.0, 120.0],  # a1: IoU 0.5 with GT1, tied best for GT1 -> positive
        [100.0, 90.0, 110.0, 110.0],  # a2: IoU 0.5 with GT1, tied best for GT1 -> positive
        [200.0, 200.0, 210.0, 210.0],  # a3: touches nothing -> negative
        [0.0, 0.0, 10.0, 25.0],  # a4: IoU 0.4 with GT0, not its best -> between, ignored
        [0.0, 0.0, 10.0, 14.0],  # a5: IoU 100/140 = 0.71 with GT0 -> positive
    ]
)
GT = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],  # GT0
        [100.0, 100.0, 110.0, 110.0],  # GT1
        [300.0, 300.0, 310.0, 310.0],  # GT2: no anchor overlaps it, so it matches nothing
    ]
)


def test_written_out_matching_with_ties():
    gt = GroundTruth.from_lists([GT])
    match = Matcher()(ANCHORS, gt.boxes, gt.mask, gt.ignore)
    assert match.matched_idxs.tolist() == [[0, 1, 1, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, 0]]
    assert match.labels().tolist() == [[POSITIVE] * 3 + [NEGATIVE, IGNORE, POSITIVE]]
    expected_iou = torch.tensor([[1.0, 0.5, 0.5, 0.0, 0.4, 100 / 140]])
    assert torch.allclose(match.matched_iou, expected_iou)


def test_without_low_quality_matches_the_tied_anchors_are_ignored():
    gt = GroundTruth.from_lists([GT])
    match = Matcher(allow_low_quality_matches=False)(ANCHORS, gt.boxes, gt.mask, gt.ignore)
    assert match.matched_idxs.tolist() == [[0, -2, -2, -1, -2, 0]]


def test_crowd_regions_never_make_negatives_or_positives():
    crowd = torch.tensor([[195.0, 195.0, 215.0, 215.0], [0.0, 0.0, 10.0, 10.0]])
    gt = GroundTruth.from_lists(
        [torch.cat([GT[1:2], crowd])], ignore=[torch.tensor([False, True, True])]
    )
    match = Matcher()(ANCHORS, gt.boxes, gt.mask, gt.ignore)
    labels = match.labels()[0].tolist()
    # a3 lies inside the first crowd region: ignored, not negative
    assert match.matched_idxs[0, 3] == IGNORED
    # a0 equals the second crowd box: crowds do not make positives, and it is ignored too
    assert match.matched_idxs[0, 0] == IGNORED
    assert labels[1] == labels[2] == POSITIVE


def test_image_without_gt_is_all_negative():
    gt = GroundTruth.from_lists([torch.zeros(0, 4), GT])
    match = Matcher()(ANCHORS, gt.boxes, gt.mask, gt.ignore)
    assert (match.labels()[0] == NEGATIVE).all()
    assert match.labels()[1].tolist() == [1, 1, 1, 0, -1, 1]


def test_border_anchors_are_ignored_when_not_visible():
    gt = GroundTruth.from_lists([GT])
    visible = torch.tensor([[True, False, True, False, True, True]])
    match = Matcher()(ANCHORS, gt.boxes, gt.mask, gt.ignore, visible)
    assert match.matched_idxs.tolist() == [[0, IGNORED, 1, IGNORED, BETWEEN_THRESHOLDS, 0]]


def _random_scene(seed: int, num_gt: int, image: float = 320.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_gt, 2, generator=g) * image * 0.7
    wh = torch.rand(num_gt, 2, generator=g) * image * 0.3 + 12
    return torch.cat([xy, xy + wh], dim=1)


def test_matcher_equals_torchvision_with_low_quality_matches():
    # Exact: same IoU values and the same rules. (torchvision also matches GT boxes whose best
    # IoU is 0; these scenes have none, and the hand-checked case above covers ours.)
    anchors = AnchorGenerator(AnchorConfig.pyramid(strides=(8, 16, 32), sizes=(32, 64, 128)))(
        [(40, 40), (20, 20), (10, 10)]
    )
    scenes = [_random_scene(s, n) for s, n in [(0, 7), (1, 1), (2, 15)]]
    gt = GroundTruth.from_lists(scenes)
    ours = Matcher()(anchors, gt.boxes, gt.mask, gt.ignore)
    tv = TVMatcher(0.7, 0.3, allow_low_quality_matches=True)
    for i, boxes in enumerate(scenes):
        iou = tv_box_iou(boxes, anchors)
        assert (iou.max(dim=1).values > 0).all()
        assert torch.equal(ours.matched_idxs[i], tv(iou))


def test_chunked_matching_equals_one_chunk():
    anchors = AnchorGenerator(AnchorConfig.pyramid(strides=(8, 16), sizes=(32, 64)))(
        [(40, 40), (20, 20)]
    )
    gt = GroundTruth.from_lists([_random_scene(3, 30), _random_scene(4, 5)])
    whole = Matcher(chunk_elements=1 << 30)(anchors, gt.boxes, gt.mask, gt.ignore)
    for cache in (1 << 30, 0):  # chunks kept for the second pass, or recomputed
        chunked = Matcher(chunk_elements=1000, cache_elements=cache)(
            anchors, gt.boxes, gt.mask, gt.ignore
        )
        assert torch.equal(whole.matched_idxs, chunked.matched_idxs)
        assert torch.equal(whole.matched_iou, chunked.matched_iou)


def test_crowded_image_never_builds_the_whole_iou_matrix(monkeypatch):
    # 1,000 GT boxes against the ~268k anchors of an 800x1333 R50-FPN batch: the full matrix
    # would hold 268M entries. Record the largest IoU block that is ever built.
    anchors = AnchorGenerator(AnchorConfig.pyramid())(
        [(200, 334), (100, 167), (50, 84), (25, 42), (13, 21)]
    )
    assert anchors.shape[0] > 260_000
    largest = []
    real_iou = matching._iou_and_intersection

    def recording_iou(a, b):
        out = real_iou(a, b)
        largest.append(out[0].numel())
        return out

    monkeypatch.setattr(matching, "_iou_and_intersection", recording_iou)
    gt = GroundTruth.from_lists([_random_scene(5, 1000, image=800.0)])
    matcher = Matcher(chunk_elements=1 << 22)
    match = matcher(anchors, gt.boxes, gt.mask, gt.ignore)
    assert max(largest) <= matcher.chunk_elements < anchors.shape[0] * 1000
    # the best anchor(s) of every GT box, found across chunks, are still positives
    some_gt = gt.boxes[0, ::20]  # 50 of them, checked against all anchors at once
    iou = box_iou(some_gt, anchors)  # (50, A)
    best = iou == iou.max(dim=1, keepdim=True).values
    assert (match.matched_idxs[0][best.any(dim=0)] >= 0).all()


def _labels(num_pos: int, num_neg: int, num_ignore: int = 50) -> torch.Tensor:
    labels = torch.tensor([POSITIVE] * num_pos + [NEGATIVE] * num_neg + [IGNORE] * num_ignore)
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize(
    ("num_pos", "num_neg", "expect_pos", "expect_neg"),
    [
        (300, 1000, 128, 128),  # plenty of both: half and half
        (10, 1000, 10, 246),  # positives run short: negatives fill the rest of the 256
        (5, 20, 5, 20),  # both short: take everything there is
        (0, 1000, 0, 256),  # an image with no positives
    ],
)
def test_sampler_counts(num_pos, num_neg, expect_pos, expect_neg):
    labels = _labels(num_pos, num_neg)[None]
    sample = BalancedSampler(256, 0.5)(labels, generator=torch.Generator().manual_seed(1))
    assert int(sample.pos_valid.sum()) == expect_pos
    assert int(sample.neg_valid.sum()) == expect_neg
    assert (labels[0, sample.pos_idx[sample.pos_valid]] == POSITIVE).all()
    assert (labels[0, sample.neg_idx[sample.neg_valid]] == NEGATIVE).all()
    pos_mask, neg_mask = sample.masks(labels.shape[1])
    assert int(pos_mask.sum()) == expect_pos and int(neg_mask.sum()) == expect_neg
    assert int(sample.num_sampled()) == expect_pos + expect_neg


def test_sampler_is_batched_per_image_and_reproducible():
    labels = torch.stack([_labels(10, 1000, 0), _labels(300, 710, 0)])
    sampler = BalancedSampler(256, 0.5)
    a = sampler(labels, generator=torch.Generator().manual_seed(2))
    b = sampler(labels, generator=torch.Generator().manual_seed(2))
    assert a.pos_valid.sum(1).tolist() == [10, 128]
    assert a.neg_valid.sum(1).tolist() == [246, 128]
    assert torch.equal(a.pos_idx, b.pos_idx) and torch.equal(a.neg_idx, b.neg_idx)


def test_sampler_is_uniform_over_candidates():
    labels = _labels(0, 1000, 0)[None]
    counts = torch.zeros(1000)
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        s = BalancedSampler(100, 0.5)(labels, generator=g)
        counts[s.neg_idx[0]] += 1
    # each negative is drawn with probability 0.1: 20 of 200 draws on average
    assert 14 < counts.mean() < 26 and counts.min() > 0
