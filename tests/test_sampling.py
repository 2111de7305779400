"""The training stream: step-addressable, sharded, and grouped by orientation when asked."""

import itertools
from collections import Counter
from pathlib import Path

import pytest

from rpnkit.data import DetectionDataset, read_dataset
from rpnkit.engine.sampling import StepBatchSampler

COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"


def take(sampler, steps):
    return list(itertools.islice(iter(sampler), steps))


def test_ungrouped_stream_is_epochs_of_permutations():
    batches = take(StepBatchSampler(10, 5, seed=3), 4)  # two epochs
    keys = [k for b in batches for k in b]
    assert sorted(keys[:10]) == list(range(10))  # epoch 0: each item once, encoded 0 * n + i
    assert sorted(keys[10:]) == list(range(10, 20))  # epoch 1: encoded 1 * n + i


# 12 items: 0-7 wide (group 0), 8-11 tall (group 1)
GROUPS = [0] * 8 + [1] * 4


def test_grouped_batches_hold_one_group_and_every_item_comes():
    batches = take(StepBatchSampler(12, 4, seed=0, groups=GROUPS), 30)
    for batch in batches:
        assert len(batch) == 4
        assert len({GROUPS[k % 12] for k in batch}) == 1
    # 30 batches of 4 = 10 epochs of 12: each item dealt 10 times, at most one epoch's worth
    # waiting in a queue at the end
    counts = Counter(k % 12 for b in batches for k in b)
    assert set(counts) == set(range(12))
    assert max(counts.values()) - min(counts.values()) <= 1


def test_grouped_stream_resumes_at_any_step_and_shards_the_global_batch():
    full = take(StepBatchSampler(12, 4, seed=1, groups=GROUPS), 12)
    resumed = take(StepBatchSampler(12, 4, seed=1, start_step=5, groups=GROUPS), 7)
    assert resumed == full[5:]
    # two processes of 2: at each step, rank 0 and rank 1 split one global batch of 4
    ranks = [
        take(StepBatchSampler(12, 2, seed=1, rank=r, world=2, start_step=3, groups=GROUPS), 5)
        for r in (0, 1)
    ]
    for step, (a, b) in enumerate(zip(*ranks)):
        assert a + b == full[3 + step]


def test_groups_must_cover_every_item():
    with pytest.raises(ValueError, match="one group per item"):
        StepBatchSampler(12, 4, seed=0, groups=[0, 1])


def test_coco128_aspect_groups_follow_image_sizes():
    index = read_dataset(str(COCO128), split="train2017")
    groups = DetectionDataset(index).aspect_groups()
    assert groups == [int(r.height > r.width) for r in index.records]
    assert 0 < sum(groups) < len(groups)  # COCO128 has both tall and wide photographs


def test_grouping_pads_coco128_less():
    # The share of a padded 800 px batch that is image, over 64 batches of 8 (sizes only).
    from rpnkit.data.transforms import resize_scale, resized_size
    from rpnkit.modeling.sizes import padded_size

    index = read_dataset(str(COCO128), split="train2017")
    sizes = [
        resized_size(r.height, r.width, resize_scale(r.height, r.width, 800, 1333))
        for r in index.records
    ]

    def image_share(groups):
        image = padded = 0
        for batch in take(StepBatchSampler(len(sizes), 8, seed=0, groups=groups), 64):
            hw = [sizes[k % len(sizes)] for k in batch]
            h, w = padded_size(max(h for h, _ in hw), max(w for _, w in hw))
            image += sum(h * w for h, w in hw)
            padded += len(hw) * h * w
        return image / padded

    ungrouped = image_share(None)
    grouped = image_share(DetectionDataset(index).aspect_groups())
    assert ungrouped < 0.65 and grouped > 0.8, (ungrouped, grouped)


def test_a_group_smaller_than_a_batch_joins_the_largest():
    # One tall image among eleven wide ones: alone, its queue would fill with four copies of
    # itself every four epochs; instead it is drawn with the wide ones, once an epoch.
    groups = [0] * 11 + [1]
    batches = take(StepBatchSampler(12, 4, seed=0, groups=groups), 9)  # three epochs
    counts = Counter(k % 12 for b in batches for k in b)
    assert counts == {i: 3 for i in range(12)}
    assert all(len(set(b)) == 4 for b in batches)
