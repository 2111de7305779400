"""Large images with small objects: tiled training (``data.tiling``), sliced inference
(``engine.slicing``), limits above the defaults, the anchors' scale advice, and their options."""

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import rpnkit
from rpnkit.cli import main
from rpnkit.data import DataConfig, DatasetIndex, Record
from rpnkit.data.tiling import TileConfig, crop_boxes, crop_record, random_window
from rpnkit.engine.checkpoint import ModelSpec, save_model
from rpnkit.engine.runner import detection_limits
from rpnkit.engine.slicing import (
    Merge,
    SliceConfig,
    core_bounds,
    sliced_batches,
    tile_grid,
    tile_starts,
)
from rpnkit.evaluation.anchor_fit import anchor_report
from rpnkit.modeling.boxes import box_iou
from rpnkit.modeling.presets import build_detector, build_model, detector_config, preset_config
from rpnkit.modeling.rpn import Proposals

SMALL = {"short_side": 128, "max_size": 192}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err.rstrip("\n")


# ---------------------------------------------------------------- tiled training


def test_crop_boxes_clips_shifts_and_drops_remnants_by_hand():
    window = (10, 10, 30, 30)  # a 20 x 20 tile at (10, 10)
    boxes = np.array(
        [
            [12, 12, 20, 20],  # inside: shifted by (10, 10)
            [0, 15, 20, 25],  # 200 px, 100 inside: exactly half visible, kept
            [25, 0, 40, 20],  # 300 px, 50 inside (1/6): dropped
            [29, 12, 31, 40],  # 56 px, 18 inside (0.32) but 1 px wide there: a remnant
            [50, 50, 60, 60],  # outside
            [0, 0, 12, 40],  # 480 px, 40 inside, a crowd region: kept, 2 x 20 remains
        ],
        np.float32,
    )
    ignore = np.array([0, 0, 0, 0, 0, 1], bool)
    kept, keep = crop_boxes(boxes, window, 0.5, ignore)
    assert keep.tolist() == [True, True, False, False, False, True]
    assert kept.tolist() == [[2, 2, 10, 10], [0, 5, 10, 15], [0, 0, 2, 20]]
    # at 0.3 the third box is still too little, the fourth still a remnant
    assert crop_boxes(boxes, window, 0.3)[1].tolist() == [True, True, False, False, False, False]
    # at 0.1 the third box stays
    assert crop_boxes(boxes, window, 0.1)[1].tolist() == [True, True, True, False, False, False]


def _record(path: Path, width: int, height: int, boxes, labels=None) -> Record:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    labels = np.asarray(labels if labels is not None else [1] * n, np.int64)
    areas = ((boxes[:, 2:] - boxes[:, :2]).prod(axis=1)).astype(np.float32)
    return Record(path, 1, width, height, boxes, labels, np.zeros(n, bool), areas)


def test_crop_record_keeps_labels_and_scales_areas(tmp_path):
    record = _record(tmp_path / "x.png", 100, 80, [[0, 0, 10, 10], [35, 5, 45, 15]], [1, 2])
    image = np.arange(80 * 100 * 3, dtype=np.uint8).reshape(80, 100, 3)
    crop, cut = crop_record(image, record, (40, 0, 72, 32), 0.5)
    assert crop.shape == (32, 32, 3) and np.array_equal(crop, image[0:32, 40:72])
    assert (cut.width, cut.height) == (32, 32)
    assert cut.boxes.tolist() == [[0, 5, 5, 15]] and cut.labels.tolist() == [2]
    assert cut.areas.tolist() == [50.0]  # half of the 100 px box is in the tile


def test_random_windows_stay_inside_and_cover_the_image():
    rng = np.random.default_rng(0)
    windows = [random_window(100, 300, 64, rng) for _ in range(400)]
    assert all(x0 >= 0 and x1 - x0 == 64 and x1 <= 300 for x0, _, x1, _ in windows)
    assert all(y0 >= 0 and y1 - y0 == 64 and y1 <= 100 for _, y0, _, y1 in windows)
    assert min(w[0] for w in windows) < 10 and max(w[2] for w in windows) > 290
    assert random_window(50, 40, 64, rng) == (0, 0, 40, 50)  # smaller than a tile: whole


def _png(path: Path, width: int, height: int) -> Path:
    rng = np.random.default_rng(width * height)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_dataset_tiles_large_images_and_resizes_small_ones(tmp_path):
    grid = [[x, y, x + 10, y + 10] for x in range(5, 400, 40) for y in range(5, 300, 40)]
    large = _record(_png(tmp_path / "large.png", 400, 300), 400, 300, grid)
    small = _record(_png(tmp_path / "small.png", 60, 40), 60, 40, [[10, 10, 20, 20]])
    index = DatasetIndex([large, small], ["thing"], source="hand-made")
    config = DataConfig("unused", tile_size=64, tile_min_visible=0.5, short_side=80, flip=0)
    dataset = config.train_dataset(index, seed=0)
    corners = set()
    for epoch in range(20):
        dataset.set_epoch(epoch)
        item = dataset[0]
        assert item["image"].shape == (3, 64, 64) and item["scale"] == 1.0
        boxes = item["boxes"]
        assert ((boxes >= 0) & (boxes <= 64)).all()
        assert len(boxes) == len(item["labels"]) == len(item["ignore"]) == len(item["areas"])
        assert len(boxes) >= 1  # a 64 px tile holds some of the objects 40 px apart
        corners.add(tuple(boxes[0, :2].tolist()))
    assert len(corners) > 5  # a new tile at every epoch
    assert dataset[1]["image"].shape == (3, 80, 120)  # small: resized as without tiles
    assert DataConfig("unused").train_dataset(index, seed=0)[0]["image"].shape[1] == 800


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("tile_size", 16, "None or an integer >= 32"),
        ("tile_size", 64.0, "None or an integer >= 32"),
        ("tile_min_visible", 0, "a fraction in (0, 1]"),
        ("tile_min_visible", 1.5, "a fraction in (0, 1]"),
    ],
)
def test_data_config_checks_the_tile_settings(field, value, rule):
    with pytest.raises(ValueError, match=re.escape(f"DataConfig.{field} must be {rule}")):
        DataConfig("data", **{field: value})


def test_tile_config_checks_itself():
    with pytest.raises(ValueError, match=r"TileConfig\.size"):
        TileConfig(size=8)
    with pytest.raises(ValueError, match=r"TileConfig\.min_visible"):
        TileConfig(min_visible=0.0)


# ---------------------------------------------------------------- the tile grid


def test_tile_starts_and_cores_by_hand():
    assert tile_starts(100, 60, 20) == [0, 40]  # the last one flush with the end
    assert tile_starts(160, 64, 24) == [0, 40, 80, 96]
    assert tile_starts(50, 64, 24) == [0]
    assert core_bounds([0, 40], 60) == [(-np.inf, 50.0), (50.0, np.inf)]
    grid = tile_grid(100, 100, SliceConfig(60, 20))
    windows = [(0, 0, 60, 60), (40, 0, 100, 60), (0, 40, 60, 100), (40, 40, 100, 100)]
    assert [w for w, _ in grid] == windows
    assert grid[1][1] == (47.5, -np.inf, np.inf, 52.5)  # cores widened by 20 / 8 px


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile_size": 16}, "tile size must be an integer >= 32"),
        ({"tile_size": 64, "overlap": 64}, r"tile overlap must be an integer in \[0, tile size"),
        ({"tile_size": 64, "overlap": -1}, "tile overlap"),
    ],
)
def test_slice_config_checks_itself(options, message):
    with pytest.raises(ValueError, match=message):
        SliceConfig(**options)


# ---------------------------------------------------------------- sliced inference


def _painted(size: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> dict:
    """An item whose objects are rectangles painted with red values 1, 2, ... on black."""
    h, w = size
    image = torch.zeros((3, h, w), dtype=torch.uint8)
    for value, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        image[0, y0:y1, x0:x1] = value
    return {
        "image": image,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "ignore": torch.zeros(len(boxes), dtype=torch.bool),
        "image_id": 0,
        "file_name": "painted.png",
        "scale": 1.0,
        "orig_size": (h, w),
    }


def _oracle(batch) -> Proposals:
    """A perfect proposer: in each view, the box of each painted value's visible pixels."""
    found = []
    for image, (h, w) in zip(batch.images, batch.image_sizes.tolist()):
        red = image[0, :h, :w]
        boxes = []
        for value in red.unique().tolist():
            if value == 0:
                continue
            ys, xs = torch.nonzero(red == value, as_tuple=True)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        found.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    k = max(1, *(len(b) for b in found))
    out = torch.zeros((len(found), k, 4))
    for i, b in enumerate(found):
        out[i, : len(b)] = b
    num = torch.tensor([len(b) for b in found])
    scores = (torch.arange(k)[None, :] < num[:, None]).float()
    return Proposals(out, scores, torch.zeros((len(found), k), dtype=torch.int64), num)


def _sliced(items, config: SliceConfig, batch_size: int = 3):
    merge = Merge("proposals", 0.7, 100)
    return [
        (metas[0], out.boxes[0, : int(out.num[0])])
        for metas, out in sliced_batches(
            _oracle, items, config, merge, resize=None, batch_size=batch_size, device="cpu"
        )
    ]


def _as_set(boxes: torch.Tensor) -> list:
    return sorted(tuple(int(v) for v in b) for b in boxes.tolist())


def test_objects_across_tile_borders_are_recovered_once():
    # tiles of 64 overlapping by 24 on 160 px: starts 0, 40, 80, 96 on both axes
    objects = [
        (56, 10, 70, 22),  # across the first vertical border (x = 64)
        (10, 58, 22, 72),  # across the first horizontal border (y = 64)
        (58, 58, 72, 70),  # across both: in four tiles
        (100, 100, 120, 118),  # in the overlap of the last tiles
        (140, 140, 156, 156),  # at the image's corner
        (20, 20, 30, 30),  # inside one tile's core
    ]
    ((meta, boxes),) = _sliced([_painted((160, 160), objects)], SliceConfig(64, 24))
    assert _as_set(boxes) == sorted(objects)  # each once, whole
    assert meta["size"] == (160, 160) and meta["file_name"] == "painted.png"


def test_a_border_object_would_be_found_twice_by_nms_alone():
    """The first tile sees the object cut (IoU 8/14 with the whole one, under NMS's 0.7): the
    tiles' cores keep it once, not the NMS."""
    item = _painted((160, 160), [(56, 10, 70, 22)])
    first_tile = SimpleNamespace(
        images=item["image"][None, :, :64, :64], image_sizes=torch.tensor([[64, 64]])
    )
    cut = _oracle(first_tile).boxes[0, 0]
    assert cut.tolist() == [56, 10, 64, 22]  # cut by the tile's border
    whole = torch.tensor([[56.0, 10, 70, 22]])
    assert box_iou(cut[None], whole).item() == pytest.approx(8 / 14)


def test_images_are_merged_in_order_whatever_the_batch():
    items = [
        _painted((160, 100), [(30, 70, 50, 90)]),
        _painted((40, 40), [(5, 5, 15, 15)]),  # fits in a tile: one view
        _painted((200, 200), [(60, 60, 70, 70), (150, 20, 170, 40)]),
    ]
    for batch_size in (1, 4, 50):
        found = _sliced(items, SliceConfig(64, 24), batch_size)
        assert [_as_set(b) for _, b in found] == [
            [(30, 70, 50, 90)],
            [(5, 5, 15, 15)],
            [(60, 60, 70, 70), (150, 20, 170, 40)],
        ]


def test_the_full_view_adds_objects_no_tile_holds_whole():
    big = (20, 20, 110, 110)  # 90 px: wider than any tile's share
    item = _painted((128, 128), [big, (120, 2, 126, 8)])
    tiles_only = _as_set(_sliced([item], SliceConfig(64, 16))[0][1])
    assert big not in tiles_only
    with_full = _as_set(_sliced([item], SliceConfig(64, 16, full_view=True))[0][1])
    assert big in with_full and (120, 2, 126, 8) in with_full
    # the full view keeps only boxes larger than the overlap: the small one is not doubled
    assert with_full.count((120, 2, 126, 8)) == 1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiling")
    tiny = preset_config("tiny")
    torch.manual_seed(0)
    rpn = build_model(tiny)
    with torch.no_grad():  # spread the untrained scores (see test_runtime)
        torch.nn.init.normal_(rpn.rpn.head.conv.weight, std=0.3)
        for layer in rpn.rpn.head.cls_logits:
            torch.nn.init.normal_(layer.weight, std=3.0)
    config = detector_config(tiny, 1)
    detector = build_detector(config)
    with torch.no_grad():
        torch.nn.init.normal_(detector.roi_heads.box_head.cls_score.weight, std=0.3)
    return {
        "rpn": save_model(folder / "rpn.safetensors", rpn, ModelSpec("rpn", tiny, ("thing",))),
        "detector": save_model(
            folder / "det.safetensors", detector, ModelSpec("faster-rcnn", config, ("thing",))
        ),
    }


def _image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_sliced_inference_on_an_image_smaller_than_a_tile_equals_plain(models):
    rpn = rpnkit.load(models["rpn"], "cpu", **SMALL)
    images = [_image(1, 90, 120), _image(2, 200, 150)]
    for top in (50, 400):  # 400: above the preset's 300, raised alike
        plain = rpn.propose(images, top=top, batch_size=1)
        sliced = rpn.propose(images, top=top, batch_size=1, tile_size=256)
        for a, b in zip(plain, sliced):
            assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
            assert a.image_size == b.image_size
    detector = rpnkit.load(models["detector"], "cpu", **SMALL)
    plain = detector.detect(images, batch_size=1)
    sliced = detector.detect(images, batch_size=1, tile_size=256, full_view=True)
    for a, b in zip(plain, sliced):
        assert len(a.boxes) > 0
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)


def test_sliced_inference_of_a_large_image_is_in_its_pixels(models):
    rpn = rpnkit.load(models["rpn"], "cpu", **SMALL)
    (r,) = rpn.propose([_image(3, 300, 420)], top=500, tile_size=128, tile_overlap=32)
    assert r.image_size == (300, 420) and 300 < len(r.boxes) <= 500
    assert r.boxes[:, 2].max() > 400 and r.boxes[:, 3].max() > 280  # beyond any one tile
    assert (r.scores[:-1] >= r.scores[1:]).all()
    with pytest.raises(ValueError, match="full view needs a tile size"):
        rpn.propose([_image(3, 300, 420)], full_view=True)


def test_sliced_evaluation_of_small_images_equals_plain(models, tmp_path):
    rpn = rpnkit.load(models["rpn"], "cpu", **SMALL)
    records = [
        _record(_png(tmp_path / f"{i}.png", 120, 90), 120, 90, [[10, 10, 60, 50]]) for i in range(2)
    ]
    index = DatasetIndex(records, ["thing"], source="hand-made")
    plain = rpn.evaluate(index, batch_size=1)
    sliced = rpn.evaluate(index, batch_size=2, tile_size=256)
    assert plain.metrics == sliced.metrics


def test_sliced_detection_and_its_evaluation(models, tmp_path):
    detector = rpnkit.load(models["detector"], "cpu", **SMALL)
    (r,) = detector.detect([_image(8, 300, 420)], tile_size=128, full_view=True)
    assert len(r.boxes) > 100  # every detection the tiles keep: more than one image's 100
    assert ((r.labels >= 1) & (r.labels <= 1)).all() and (r.boxes[:, 2] <= 420).all()
    (capped,) = detector.detect([_image(8, 300, 420)], tile_size=128, max_detections=50)
    assert len(capped.boxes) == 50
    torch.testing.assert_close(capped.boxes, r.boxes[:50])  # the same, best first
    records = [_record(_png(tmp_path / "d.png", 120, 90), 120, 90, [[10, 10, 60, 50]])]
    index = DatasetIndex(records, ["thing"], source="hand-made")
    plain = detector.evaluate(index, batch_size=1).metrics
    sliced = detector.evaluate(index, batch_size=1, tile_size=256).metrics
    numbers = {k: v for k, v in plain.items() if isinstance(v, float)}
    assert "VOC07_mAP50" in numbers
    assert numbers == {k: v for k, v in sliced.items() if isinstance(v, float)}


def test_detection_limits_are_the_calls_own_and_leave_the_model_as_it_is(models):
    detector = rpnkit.load(models["detector"], "cpu", **SMALL)
    network = detector.network
    heads, rpn = network.roi_heads.config, network.rpn.config
    proposals, head = detection_limits(network, 500)
    assert head.detections_per_image == 500 and head.nms_candidates >= 2500
    assert proposals.post_nms_top_n >= 500
    # fewer, or none: nothing for the forward (the runtime keeps the best of its output)
    assert detection_limits(network, 10) == detection_limits(network, None) == (None, None)
    proposals, head = detection_limits(network, None, score_floor=0.01)
    assert proposals is None and head.score_threshold == 0.01
    image = _image(4, 200, 150)
    (many,) = detector.detect([image], max_detections=400)
    (few,) = detector.detect([image])
    (three,) = detector.detect([image], max_detections=3)
    assert len(few.boxes) <= 100 < len(many.boxes) <= 400
    assert torch.equal(three.boxes, few.boxes[:3]) and torch.equal(three.scores, few.scores[:3])
    # a generator with a raised limit, left open, changes nothing for another call
    open_call = detector.iter_detections([image] * 3, batch_size=1, max_detections=300)
    assert len(next(open_call).boxes) > 100
    (again,) = detector.detect([image])
    assert torch.equal(again.boxes, few.boxes)
    assert network.roi_heads.config is heads and network.rpn.config is rpn
    open_call.close()


# ---------------------------------------------------------------- the anchors' advice


def test_anchors_advise_tiles_for_objects_too_small_at_the_training_scale(tmp_path):
    # 2000 px images (resized to 800: x0.4) with 15 px objects: 6 px at training scale,
    # under half the tiny preset's smallest anchor (16 px)
    boxes = [[100 + 40 * i, 100, 115 + 40 * i, 115] for i in range(20)]
    records = [_record(tmp_path / "a.png", 2000, 2000, boxes)]
    index = DatasetIndex(records, ["thing"], source="hand-made")
    report = anchor_report(preset_config("tiny"), index, short=800, max_size=1333)
    assert "objects too small for the anchors: 100% of the boxes" in report.advice
    assert "--tile-size 800" in report.advice and "--short-side 1536" in report.advice
    assert report.advice in report.format()
    # at native resolution in tiles the 15 px objects fit the 16 px anchors
    tiled = anchor_report(preset_config("tiny"), index, short=800, tile_size=512)
    assert tiled.advice is None
    # 5 px objects are too small even at native resolution: upscale or fit anchors
    tiny = [[100 + 40 * i, 100, 105 + 40 * i, 105] for i in range(20)]
    records = [_record(tmp_path / "a.png", 2000, 2000, tiny)]
    index = DatasetIndex(records, ["thing"], source="hand-made")
    advice = anchor_report(preset_config("tiny"), index, tile_size=512).advice
    assert "Even native resolution is too coarse" in advice and "--fit" in advice


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("command", "option", "rule", "value"),
    [
        (["train"], "--tile-size", "an integer >= 32", "16"),
        (["train"], "--tile-min-visible", "a fraction in (0, 1]", "0"),
        (["train"], "--tile-min-visible", "a fraction in (0, 1]", "1.5"),
        (["propose", "x.jpg"], "--tile-size", "an integer >= 32", "8"),
        (["propose", "x.jpg"], "--tile-overlap", "an integer >= 0", "-1"),
        (["detect", "x.jpg"], "--max-detections", "an integer >= 1", "0"),
        (["eval"], "--tile-size", "an integer >= 32", "0"),
        (["eval"], "--top", "an integer >= 1", "0"),
        (["anchors"], "--tile-size", "an integer >= 32", "31"),
    ],
)
def test_tile_options_are_range_checked(command, option, rule, value, capsys):
    assert main([*command, option, value]) == 2
    assert one_error_line(capsys) == (
        f"rpnkit {command[0]}: error: argument {option}: must be {rule}, got {value}"
    )


def test_an_overlap_as_large_as_the_tile_is_one_line(models, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(_image(5, 64, 64)).save(image)
    argv = ["propose", str(image), "--checkpoint", str(models["rpn"]), "--no-progress"]
    code = main([*argv, "--tile-size", "64", "--tile-overlap", "64", "--device", "cpu"])
    assert code != 0
    assert "tile overlap must be an integer in [0, tile size 64), got 64" in one_error_line(capsys)


def test_sliced_propose_from_the_command_line(models, tmp_path):
    image = tmp_path / "big.png"
    Image.fromarray(_image(6, 300, 400)).save(image)
    out = tmp_path / "p.json"
    argv = ["propose", str(image), "--checkpoint", str(models["rpn"]), "--no-progress"]
    argv += ["--device", "cpu", "--tile-size", "128", "--top", "700", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    assert 300 < len(results) <= 700
    assert max(r["bbox"][0] + r["bbox"][2] for r in results) > 300  # original pixels


def test_a_score_threshold_below_the_models_lowers_it_for_the_call_alone(models):
    detector = rpnkit.load(models["detector"], "cpu", **SMALL)
    image = _image(4, 200, 150)
    (every,) = detector.detect([image])  # 100 boxes above 0.05 (an untrained head: near 0.5)
    floor = float(every.scores[20])  # a model whose own threshold keeps about 20 of them
    heads = detector.network.roi_heads
    heads.config = dataclasses.replace(heads.config, score_threshold=floor)
    (own,) = detector.detect([image])
    (low,) = detector.detect([image], score_threshold=0.001)
    assert own.scores.min() >= floor and len(own.boxes) < len(low.boxes) == 100
    assert (low.scores < floor).any()
    assert heads.config.score_threshold == floor  # the model's own, unchanged
