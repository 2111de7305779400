import dataclasses

import pytest
import torch
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou as tv_box_iou

import rpnkit.modeling.matching as matching
from rpnkit.modeling.anchors import AnchorConfig, AnchorGenerator, visible_anchors
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
from rpnkit.modeling.sizes import feature_sizes
from rpnkit.modeling.sparse_matching import anchor_index, build_anchor_index, plan_candidates
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


# --- the sparse CPU path: candidate pairs only, bit-identical to the dense matrix --------------


def _crowded_scene(seed: int, num_small: int, num_large: int, height: float, width: float):
    """(G, 4) boxes: small ones of 10-60 px (a crowd of people) and a few large ones."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height])

    def boxes(n: int, lo: float, hi: float) -> torch.Tensor:
        wh = torch.minimum(torch.rand(n, 2, generator=g) * (hi - lo) + lo, size)
        xy = torch.rand(n, 2, generator=g) * (size - wh)
        return torch.cat([xy, xy + wh], dim=1)

    return torch.cat([boxes(num_small, 10, 60), boxes(num_large, 100, 400)])


def _fpn_anchors(height: int, width: int, dtype=torch.float32) -> torch.Tensor:
    config = AnchorConfig.pyramid()
    return AnchorGenerator(config)(feature_sizes(height, width, config.strides), dtype=dtype)


class _Recording(Matcher):
    """A Matcher that keeps the four intermediate (B, A) tensors of the path it took."""

    def _match_chunked(self, *args):
        self.__dict__["inner"] = ("dense", super()._match_chunked(*args))
        return self.inner[1]

    def _match_sparse(self, *args):
        found = super()._match_sparse(*args)
        self.__dict__["inner"] = ("sparse", found)
        return found


def _assert_sparse_equals_dense(anchors, gt, visible=None, sparse_kwargs=({},), **kwargs):
    """The dense path and the sparse path (forced, once per extra settings in ``sparse_kwargs``,
    e.g. chunk sizes) give the same four intermediate tensors and the same result, bit for bit;
    returns the last sparse result."""
    dense = _Recording(sparse=False, **kwargs)
    expected = dense(anchors, gt.boxes, gt.mask, gt.ignore, visible)
    assert dense.inner[0] == "dense"
    int_view = torch.int32 if expected.matched_iou.dtype == torch.float32 else torch.int64
    for extra in sparse_kwargs:
        sparse = _Recording(sparse=True, **kwargs, **extra)
        got = sparse(anchors, gt.boxes, gt.mask, gt.ignore, visible)
        assert sparse.inner[0] == "sparse" and sparse.inner[1] is not None, "sparse declined"
        names = ("iou", "gt", "in_crowd", "low_quality")
        for name, d, s in zip(names, dense.inner[1], sparse.inner[1]):
            assert torch.equal(d, s), name
        assert torch.equal(expected.matched_idxs, got.matched_idxs)
        assert torch.equal(expected.matched_iou.view(int_view), got.matched_iou.view(int_view))
        assert torch.equal(expected.labels(), got.labels())
    return got


@pytest.mark.parametrize("num_gt", [0, 1, 5, 300, 1500])
def test_sparse_equals_dense_on_random_scenes(num_gt):
    anchors = _fpn_anchors(192, 320)
    boxes = _crowded_scene(num_gt, num_gt - num_gt // 100, num_gt // 100, 192, 320)
    gt = GroundTruth.from_lists([boxes])
    match = _assert_sparse_equals_dense(anchors, gt)
    assert (match.labels() == POSITIVE).any() == (num_gt > 0)


def test_sparse_equals_dense_on_a_batch_with_crowds_duplicates_and_borders():
    # Several images with different GT counts, one without GT, one with a whole-image box;
    # duplicated boxes (ties between GT indices, also across chunks); crowd regions; anchors
    # that cross the border and are not visible.
    height, width = 192, 320
    anchors = _fpn_anchors(height, width)
    crowded = _crowded_scene(0, 200, 3, height, width)
    images = [
        torch.cat([crowded, crowded[::7]]),  # duplicates at higher indices
        torch.zeros(0, 4),
        torch.cat([_crowded_scene(1, 5, 1, height, width), torch.tensor([[0, 0, 320, 192.0]])]),
        torch.tensor([[0, 0, 320, 192.0], [0, 0, 320, 192.0], [-50, -50, 400, 250.0]]),
        # no width (IoU 0 with the anchors it touches), and far outside every anchor
        torch.tensor([[10, 10, 10, 50.0], [5000, 5000, 5010, 5010.0], [30, 30, 90, 70.0]]),
    ]
    g = torch.Generator().manual_seed(2)
    ignore = [torch.rand(len(b), generator=g) < 0.1 for b in images[:-1]]
    ignore.append(torch.tensor([False, False, False]))
    gt = GroundTruth.from_lists(images, ignore=ignore)
    assert gt.ignore.any() and gt.mask.sum(1).tolist() == [232, 0, 7, 3, 3]
    sizes = torch.tensor([[height, width], [150, 300], [height, width], [100, 100], [99, 99]])
    visible = visible_anchors(anchors, sizes, 0.0)
    assert not visible.all()
    chunks = ({}, {"chunk_elements": 1 << 12})  # one chunk of pairs, or many
    for kwargs in ({}, {"allow_low_quality_matches": False}, {"crowd_ioa_threshold": 0.0}):
        _assert_sparse_equals_dense(anchors, gt, visible, sparse_kwargs=chunks, **kwargs)


def test_sparse_equals_dense_with_zero_thresholds():
    # low = high = 0: every anchor keeps its argmax, even at IoU 0 (the image's first real GT)
    anchors = _fpn_anchors(128, 128)
    boxes = _crowded_scene(3, 20, 1, 128, 128)
    ignore = torch.zeros(len(boxes), dtype=torch.bool)
    ignore[:3] = True  # the first real GT is index 3
    gt = GroundTruth.from_lists([boxes, boxes[5:9]], ignore=[ignore, ignore[:4]])
    match = _assert_sparse_equals_dense(anchors, gt, high_threshold=0.0, low_threshold=0.0)
    assert (match.matched_idxs[0] == 3).any()


def test_sparse_equals_dense_on_arbitrary_anchors():
    # No grid: random anchors (columns of one anchor, binary searches), duplicates, anchors of
    # zero width or height, anchors far outside the image; float64 too.
    g = torch.Generator().manual_seed(4)
    xy = torch.rand(3000, 2, generator=g) * 400 - 50
    wh = torch.exp(torch.rand(3000, 2, generator=g) * 5)
    anchors = torch.cat([xy, xy + wh], dim=1)
    anchors = torch.cat([anchors, anchors[:100], anchors[:50, :2].repeat(1, 2)])
    anchors[-10:, 2] = anchors[-10:, 0] - 1  # negative width
    grid = _fpn_anchors(64, 64)  # and a grid, mixed in
    anchors = torch.cat([anchors, grid[torch.randperm(len(grid), generator=g)]])
    boxes = _crowded_scene(5, 300, 5, 300, 300)
    ignore = torch.arange(len(boxes)) % 17 == 0
    gt = GroundTruth.from_lists([boxes, boxes[:40]], ignore=[ignore, ignore[:40]])
    assert int(anchor_index(anchors).irregular[-1]) > 0  # binary searches were needed
    _assert_sparse_equals_dense(anchors, gt)
    gt64 = dataclasses.replace(gt, boxes=gt.boxes.double())
    _assert_sparse_equals_dense(anchors.double(), gt64, sparse_kwargs=[{"chunk_elements": 4096}])


def test_sparse_candidates_contain_every_overlapping_pair():
    anchors = _fpn_anchors(128, 192)
    boxes = torch.cat([_crowded_scene(6, 50, 2, 128, 192), torch.tensor([[0, 0, 192, 128.0]])])
    index = build_anchor_index(anchors)
    pos, box = next(plan_candidates(index, boxes).chunks(1 << 30))
    found = torch.zeros(len(boxes), len(anchors), dtype=torch.bool)
    found[box, index.perm[pos]] = True
    overlapping = box_iou(boxes, anchors) > 0  # (G, A)
    assert not (overlapping & ~found).any()
    # and the superset is tight on a grid: at most a few touching neighbours more
    assert found.sum() <= 1.1 * overlapping.sum()


def test_auto_mode_takes_the_sparse_path_for_crowded_images(monkeypatch):
    anchors = _fpn_anchors(256, 384)
    crowded = GroundTruth.from_lists([_crowded_scene(7, 400, 2, 256, 384)])
    ordinary = GroundTruth.from_lists([_crowded_scene(8, 0, 3, 256, 384)])
    calls = []
    real_dense = Matcher._match_chunked
    monkeypatch.setattr(
        Matcher, "_match_chunked", lambda *a: calls.append(a[2].shape[1]) or real_dense(*a)
    )
    Matcher()(anchors, crowded.boxes, crowded.mask, crowded.ignore)
    Matcher()(anchors, ordinary.boxes, ordinary.mask, ordinary.ignore)
    assert calls == [3]  # only the ordinary image went dense
    # many boxes over (nearly) the whole image overlap most anchors: no cheaper than the matrix
    huge = torch.tensor([[0, 0, 384, 256.0]]) + torch.linspace(0, 8, 40)[:, None]
    whole = GroundTruth.from_lists([huge])
    Matcher()(anchors, whole.boxes, whole.mask, whole.ignore)
    assert calls == [3, 40]


def test_sparse_path_bounds_its_pair_chunks(monkeypatch):
    # a chunk holds at most chunk_elements / 4 pairs, or the pairs of one GT box if more
    anchors = _fpn_anchors(192, 320)
    gt = GroundTruth.from_lists([_crowded_scene(10, 300, 2, 192, 320)])
    sizes = []
    real_iou = matching._iou_and_intersection

    def recording_iou(a, b):
        out = real_iou(a, b)
        sizes.append(out[0].numel())
        return out

    monkeypatch.setattr(matching, "_iou_and_intersection", recording_iou)
    matcher = Matcher(sparse=True, chunk_elements=1 << 14)
    matcher(anchors, gt.boxes, gt.mask, gt.ignore)
    index = anchor_index(anchors)
    one_box = int(plan_candidates(index, gt.boxes[0]).pairs_bound.max())
    assert len(sizes) > 10 and max(sizes) <= max(matcher.chunk_elements // 4, one_box)


def test_sparse_index_is_rebuilt_when_the_anchors_change():
    anchors = _fpn_anchors(64, 96).clone()
    gt = GroundTruth.from_lists([_crowded_scene(9, 40, 1, 64, 96)])
    _assert_sparse_equals_dense(anchors, gt)
    first = anchor_index(anchors)
    assert anchor_index(anchors) is first  # cached
    anchors[:, :2] -= 3.0  # in place
    assert anchor_index(anchors) is not first
    _assert_sparse_equals_dense(anchors, gt)
