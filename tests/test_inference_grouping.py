"""Inference batches of one orientation (``runner.grouped_batches``), results back in input
order (``runner.in_input_order``): what ``propose`` and ``detect`` do on a folder or dataset."""

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

import rpnkit
from rpnkit.data import DetectionDataset, eval_transforms, read_dataset
from rpnkit.data.records import SkippedSample
from rpnkit.engine.checkpoint import ModelSpec, save_model
from rpnkit.engine.runner import GROUP_WINDOW, grouped_batches, in_input_order, run_batches
from rpnkit.modeling.presets import build_model, preset_config


@dataclass
class Output:
    value: torch.Tensor


COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"


def test_grouped_batches_by_hand():
    groups = [0, 1, 0, 1, 1, 0, 0, 1, 1]
    # windows of 2 batches of 2: [0..3], [4..7], [8]
    assert grouped_batches(groups, 2, 2) == [[0, 2], [1, 3], [5, 6], [4, 7], [8]]
    assert grouped_batches([0] * 5, 2, 8) == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("seed", range(5))
def test_grouped_batches_cover_every_index_once_within_its_window(seed):
    rng = random.Random(seed)
    n, batch, window = rng.randint(1, 60), rng.randint(1, 5), rng.randint(1, 4)
    groups = [rng.randint(0, 2) for _ in range(n)]
    batches = grouped_batches(groups, batch, window)
    assert sorted(i for b in batches for i in b) == list(range(n))
    for b in batches:
        assert 1 <= len(b) <= batch and len({groups[i] for i in b}) == 1
        assert len({i // (batch * window) for i in b}) == 1  # never across windows
    windows = [b[0] // (batch * window) for b in batches]
    assert windows == sorted(windows)  # window after window


def test_in_input_order_restores_positions_and_skips_the_missing():
    span = 4
    arrivals = [2, 0, 3, 1, 6, 4, 7, 9, 8, 11]  # 5 and 10 unreadable, never come
    got = list(in_input_order(((p, f"v{p}") for p in arrivals), span))
    assert got == [f"v{p}" for p in sorted(arrivals)]
    assert list(in_input_order([(None, "a"), (None, "b")], span)) == ["a", "b"]


def test_held_values_leave_as_soon_as_their_window_is_complete():
    seen = []

    def pairs():
        for p in (1, 0, 5, 4):  # windows of 4: [0..3] is complete once 5 arrives
            seen.append(p)
            yield p, p

    out = in_input_order(pairs(), 4)
    assert next(out) == 0 and seen == [1, 0, 5]
    assert list(out) == [1, 4, 5]


@pytest.fixture(scope="module")
def mixed():
    """COCO128's first 16 images: both orientations, as an index and an RPN checkpoint."""
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:16]
    assert {r.height > r.width for r in index.records} == {True, False}
    return index


def test_run_batches_with_groups_pads_each_batch_for_one_orientation(mixed):
    dataset = DetectionDataset(mixed, eval_transforms(128, 192))
    shapes = []

    def forward(batch):
        shapes.append((batch.images.shape[-2:], batch.image_sizes.clone()))
        return Output(torch.zeros(1))

    out = run_batches(
        forward, dataset, batch_size=4, device=torch.device("cpu"), groups=dataset.aspect_groups()
    )
    positions = [m["position"] for metas, _ in out for m in metas]
    assert sorted(positions) == list(range(16))
    for (h, w), sizes in shapes:
        tall = sizes[:, 0] > sizes[:, 1]
        assert tall.all() or not tall.any()
        assert (h > w) == bool(tall[0]) or h == w


def test_propose_on_a_dataset_keeps_input_order_and_the_ungrouped_results(mixed, tmp_path):
    torch.manual_seed(0)
    ckpt = save_model(
        tmp_path / "rpn.safetensors",
        build_model(preset_config("tiny")),
        ModelSpec("rpn", preset_config("tiny"), ("thing",)),
    )
    runtime = rpnkit.load(ckpt, "cpu", short_side=128, max_size=192, group_by_aspect=True)
    grouped = runtime.propose(mixed, top=20, batch_size=3)
    runtime.group_by_aspect = False
    mixed_batches = runtime.propose(mixed, top=20, batch_size=3)
    assert [r.file_name for r in grouped] == [r.file_name for r in mixed.records]
    assert [r.file_name for r in mixed_batches] == [r.file_name for r in mixed.records]
    for a, b in zip(grouped, mixed_batches):  # the padding differs, so near ties may not
        assert a.file_name == b.file_name and a.boxes.shape == b.boxes.shape
        assert box_iou(a.boxes[:1], b.boxes).max() > 0.9


def test_each_image_gets_its_own_output_through_grouping(mixed):
    # a forward whose output depends on each image's pixels only: grouped, skipped and put
    # back in order, every result must still be its image's
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:16]
    index.records[5] = dataclasses.replace(index.records[5], path=Path("/nonexistent.jpg"))
    dataset = DetectionDataset(index, eval_transforms(96, 160))

    def forward(batch):
        sums = [
            img[:, :h, :w].float().mean() for img, (h, w) in zip(batch.images, batch.image_sizes)
        ]
        return Output(torch.stack(sums))

    with pytest.warns(SkippedSample):
        out = run_batches(
            forward,
            dataset,
            batch_size=3,
            device=torch.device("cpu"),
            groups=dataset.aspect_groups(),
        )
        pairs = [
            (meta["position"], (meta["file_name"], float(output.value[i])))
            for metas, output in out
            for i, meta in enumerate(metas)
        ]
    results = list(in_input_order(pairs, 3 * GROUP_WINDOW))
    expected = [r.file_name for i, r in enumerate(index.records) if i != 5]
    assert [name for name, _ in results] == expected
    for (name, value), i in zip(results, [i for i in range(16) if i != 5]):
        image = dataset[i]["image"]
        assert value == pytest.approx(float(image.float().mean()), rel=1e-6), name


def test_propose_aspect_groups_on_the_command_line_keeps_the_order(mixed, tmp_path):
    from rpnkit.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for record in mixed.records:
        (folder / record.path.name).symlink_to(record.path.resolve())
    torch.manual_seed(0)
    spec = ModelSpec("rpn", preset_config("tiny"), ("thing",))
    ckpt = save_model(tmp_path / "rpn.safetensors", build_model(preset_config("tiny")), spec)
    order = {}
    for name, extra in (("mixed", []), ("grouped", ["--aspect-groups"])):
        out = tmp_path / f"{name}.json"
        argv = ["propose", str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--top", "5"]
        assert (
            main([*argv, "--short-side", "96", "--max-size", "144", "--no-progress", *extra]) == 0
        )
        entries = json.loads(out.read_text())
        order[name] = list(dict.fromkeys(e["image_id"] for e in entries))
    assert order["grouped"] == order["mixed"] and len(order["mixed"]) == 16
