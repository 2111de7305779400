"""When inference hands results on, and the cross-tile merge of a large image: results come as
soon as they are computed where nothing overlaps them, and the merge keeps exactly what NMS
of every box would, without that NMS."""

import torch
from torchvision.ops import batched_nms

from rpnkit.engine.runner import run_batches
from rpnkit.engine.slicing import Merge, SliceConfig, best_after_nms, sliced_batches
from rpnkit.modeling.rpn import Proposals


def _crowd(n: int, seed: int, classes: int = 1):
    """``n`` boxes in clusters (much suppression), distinct scores, ``classes`` groups."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand((n // 20 + 1, 2), generator=g) * 500
    xy = centres[torch.randint(len(centres), (n,), generator=g)] + torch.randn(n, 2, generator=g)
    wh = 10 + torch.rand((n, 2), generator=g) * 30
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.randperm(n, generator=g).float() / n
    return boxes, scores, torch.randint(classes, (n,), generator=g)


def test_best_after_nms_keeps_what_nms_of_every_box_keeps():
    for n, limit, classes, seed in [(5000, 100, 1, 0), (5000, 300, 3, 1), (2000, 1000, 1, 2)]:
        boxes, scores, groups = _crowd(n, seed, classes)
        every = batched_nms(boxes, scores, groups, 0.5)
        assert len(every) >= limit or limit == 1000  # the last case: fewer kept than asked
        torch.testing.assert_close(best_after_nms(boxes, scores, groups, 0.5, limit), every[:limit])
    assert torch.equal(best_after_nms(boxes, scores, groups, 0.5, None), every)


def test_best_after_nms_runs_nms_on_a_prefix_only(monkeypatch):
    from rpnkit.engine import slicing

    sizes = []

    def counting(boxes, *args):
        sizes.append(len(boxes))
        return batched_nms(boxes, *args)

    monkeypatch.setattr(slicing, "batched_nms", counting)
    boxes, scores, groups = _crowd(40_000, 3)
    best_after_nms(boxes, scores, groups, 0.7, 100)
    assert max(sizes) < 40_000 and sizes[0] == 400


class _Counting:
    """A forward that counts its calls and returns each image's call number as its score."""

    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        n = len(batch.image_sizes)
        return Proposals(
            torch.zeros((n, 1, 4)),
            torch.full((n, 1), float(self.calls)),
            torch.zeros((n, 1), dtype=torch.int64),
            torch.ones(n, dtype=torch.int64),
        )


def _items(count: int, size: int):
    return [
        {
            "image": torch.zeros((3, size, size), dtype=torch.uint8),
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros(0, dtype=torch.int64),
            "ignore": torch.zeros(0, dtype=torch.bool),
            "image_id": i,
            "file_name": f"{i}.png",
            "scale": 1.0,
            "orig_size": (size, size),
        }
        for i in range(count)
    ]


def test_on_the_cpu_each_batch_is_handed_on_before_the_next_runs():
    forward = _Counting()
    stream = run_batches(forward, _items(3, 32), batch_size=1, device=torch.device("cpu"))
    for k, (_, output) in enumerate(stream, start=1):
        assert forward.calls == k  # was k + 1: held back until the next batch had run
        assert output.scores[0, 0] == k


def test_a_large_image_is_handed_on_when_its_own_tiles_have_run():
    forward = _Counting()
    merge = Merge("proposals", 0.7, 10)
    stream = sliced_batches(
        forward, _items(2, 200), SliceConfig(64, 0), merge, resize=None, batch_size=5,
        device=torch.device("cpu"),
    )  # fmt: skip
    next(stream)  # 16 tiles: batches of 5, 5, 5 and its last one
    assert forward.calls == 4  # was 5: its last tile waited for the next image's
    assert len(list(stream)) == 1 and forward.calls == 8
