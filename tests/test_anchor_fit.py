import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from rpnkit.cli import main
from rpnkit.config import load_config
from rpnkit.data import DatasetIndex, read_dataset
from rpnkit.data.records import Record
from rpnkit.evaluation.anchor_coverage import (
    THRESHOLDS,
    GTSample,
    best_anchor_iou,
    collect_gt,
    coverage_table,
    unmatched,
)
from rpnkit.evaluation.anchor_fit import anchor_report, match_threshold
from rpnkit.evaluation.anchor_search import RATIO_RANGE, SIZE_STEP, fit_anchors, kmeans_iou
from rpnkit.modeling.anchors import AnchorConfig, AnchorGenerator, LevelAnchors
from rpnkit.modeling.boxes import box_iou
from rpnkit.modeling.cascade_rpn import anchor_scale
from rpnkit.modeling.presets import ModelConfig, build_model, preset_config
from rpnkit.modeling.sizes import feature_sizes

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RACCOON = DATA / "raccoon"
COCO128 = DATA / "coco128" / "annotations" / "instances_train2017.json"


def _sample(boxes, areas=None, size=(64, 64)):
    boxes = np.asarray(boxes, np.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if areas is None else areas
    return GTSample(boxes, np.asarray(areas, np.float32), np.zeros(len(boxes), np.int64),
                    ["img.jpg"], [size])  # fmt: skip


def test_best_anchor_iou_by_hand():
    # one 32x32 anchor per 16-px cell, centred at (16 j, 16 i) with offset 0
    config = AnchorConfig.single_level(stride=16, sizes=(32,), ratios=(1.0,))
    sample = _sample(
        [
            [0, 0, 32, 32],  # the anchor centred at (16, 16): IoU 1
            [8, 8, 24, 24],  # 16x16 inside it: IoU 256 / 1024
            [40, 40, 42, 42],
        ]
    )  # 2x2: at most 4 / 1024 with any anchor
    best = best_anchor_iou(config, sample)
    assert best[0] == pytest.approx(1.0) and best[1] == pytest.approx(0.25)
    assert best[2] == pytest.approx(4 / 1024)
    table = coverage_table(sample, best)
    assert table["all"]["count"] == 3 and table["all"][">=0.7"] == pytest.approx(1 / 3)
    assert table["small"][">=0.3"] == pytest.approx(1 / 3)  # all three are small (< 32^2)
    assert table["large"][">=0.5"] is None  # no large boxes
    lost = unmatched(sample, best, 0.3)
    assert [row["best_iou"] for row in lost] == [0.004, 0.25] and lost[0]["file"] == "img.jpg"


def test_kmeans_with_iou_distance_finds_the_shape_clusters():
    rng = np.random.default_rng(0)
    wide = np.array([120.0, 40.0]) * rng.uniform(0.9, 1.1, (200, 2))
    square = np.array([20.0, 20.0]) * rng.uniform(0.9, 1.1, (200, 2))
    centres = kmeans_iou(np.concatenate([wide, square]), 2)
    assert np.allclose(centres[0], [20, 20], rtol=0.1)
    assert np.allclose(centres[1], [120, 40], rtol=0.1)
    with pytest.raises(ValueError, match="cannot fit 5 anchors to 3 boxes"):
        kmeans_iou(wide[:3], 5)


def test_fitted_anchors_cover_raccoon_better_and_train():
    sample = collect_gt(read_dataset(RACCOON), short=320, max_size=533)
    paper = preset_config("vgg16-c5").rpn.anchors
    fitted = fit_anchors(paper, sample)
    assert sum(fitted.num_anchors_per_level) == sum(paper.num_anchors_per_level) == 9
    before = coverage_table(sample, best_anchor_iou(paper, sample))["all"][">=0.7"]
    after = coverage_table(sample, best_anchor_iou(fitted, sample))["all"][">=0.7"]
    assert after > before + 0.2


def test_every_level_keeps_an_anchor():
    sample = _sample([[0, 0, 30, 30]] * 10 + [[0, 0, 34, 28]] * 10, size=(256, 256))
    config = AnchorConfig.pyramid(strides=(8, 16, 32), sizes=(32, 64, 128))
    fitted = fit_anchors(config, sample)
    assert all(lv.num_anchors >= 1 for lv in fitted.levels)
    assert sum(fitted.num_anchors_per_level) == 9


def test_cli_writes_a_config_that_trains(tmp_path, capsys):
    out = tmp_path / "fitted.yaml"
    code = main(["anchors", "--data", str(RACCOON), "--preset", "tiny", "--fit", "--short-side",
                 "256", "--max-size", "384", "--out-config", str(out), "--json",
                 str(tmp_path / "r.json")])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "IoU>=0.7" in text and "fitted anchors" in text
    assert f"train --config {out} --short-side 256 --max-size 384 ..." in text  # its size
    assert out.read_text().startswith(  # the file says its size too
        "# rpnkit anchors --fit: anchors fitted to the boxes at --short-side 256 --max-size 384\n"
    )
    config = load_config(ModelConfig, out)
    preset = preset_config("tiny").rpn.anchors
    assert config.rpn.anchors != preset and "fitted anchors: " in text  # the fit beat it
    assert config.rpn.anchors.num_anchors_per_level == preset.num_anchors_per_level
    model = build_model(config).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 128, 128), torch.tensor([[128, 128]])).proposals.num > 0


def _index(tmp_path, width, height, boxes) -> DatasetIndex:
    """One image of ``width`` x ``height`` (never read: the anchors need its size alone)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    record = Record(tmp_path / "a.png", 1, width, height, boxes, np.ones(n, np.int64),
                    np.zeros(n, bool), areas)  # fmt: skip
    return DatasetIndex([record], ["thing"], source="hand-made")


def test_size_advice_raises_the_cap_that_stops_the_resize(tmp_path):
    # a 2000 x 1000 image with 20 px objects, one 32 px anchor: at --short-side 800
    # --max-size 1333 the cap binds (x0.6665, not x0.8: shorter side 666), objects 13 px,
    # under half the anchor. Bringing 20 px to 32 / sqrt(2) = 22.6 px takes x1.131:
    # a shorter side of ceil32(1131.4) = 1152, and a longer one of 2 x 1152 = 2304
    model = preset_config("tiny")
    anchors = AnchorConfig.single_level(stride=16, sizes=(32,), ratios=(1.0,))
    model = dataclasses.replace(model, rpn=dataclasses.replace(model.rpn, anchors=anchors))
    index = _index(
        tmp_path, 2000, 1000, [[100 + 40 * i, 100, 120 + 40 * i, 120] for i in range(20)]
    )
    report = anchor_report(model, index, short=800, max_size=1333)
    capped = "--max-size 1333 caps the resize: the median box's image has a shorter side of "
    assert capped + "666 px, not the 800 of --short-side." in report.advice
    assert report.advice.endswith(
        "upscale about 1.1x the original, to a shorter side of 1152 with the longer side up to "
        "2304 (--short-side 1152 --max-size 2304), or fit smaller anchors (--fit)."
    )
    assert "(shorter side 800, longer side at most 1333)" in report.format()
    # a cap that does not bind: neither the note nor a new --max-size
    roomy = anchor_report(model, index, short=600, max_size=4000).advice  # x0.6: 12 px
    assert "caps the resize" not in roomy and "--max-size" not in roomy
    assert "--short-side 1152)" in roomy


def test_anchors_stop_with_one_line_when_there_is_no_box(tmp_path, capsys):
    # raccoon's CSV lists images that lie in images/, not beside it
    args = ["anchors", "--data", str(RACCOON / "train_labels.csv"), "--preset", "tiny"]
    assert main([*args, "--short-side", "128", "--max-size", "192"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"rpnkit anchors: error: {RACCOON / 'train_labels.csv'}: no image ")
    hint = "a CSV's images are looked for beside it: give --images DIR (images=)"
    assert "(160 skipped; first: " in last
    assert last.endswith(f"image file not found); {hint} (no box to check the anchors on)")
    # images read, none with a box
    index = _index(tmp_path, 64, 48, [])
    with pytest.raises(ValueError, match=r"^hand-made: none of its 1 image\(s\) has a box"):
        anchor_report(preset_config("tiny"), index, short=128, max_size=192)


def test_anchors_help_names_every_format_and_the_heading_names_a_config_file(tmp_path, capsys):
    from rpnkit.cli import build_parser
    from rpnkit.config import save_config

    anchors = build_parser()._subparsers._group_actions[0].choices["anchors"]
    (data,) = [a for a in anchors._actions if a.dest == "data"]
    assert "CSV" in data.help and "COCO" in data.help and "VOC" in data.help
    config = tmp_path / "mine.yaml"
    save_config(preset_config("tiny"), config)
    args = ["anchors", "--data", str(RACCOON), "--short-side", "96", "--max-size", "144"]
    assert main([*args, "--config", str(config)]) == 0
    assert f"\nanchors of {config} (preset tiny):\n" in capsys.readouterr().out
    assert main([*args, "--preset", "tiny"]) == 0
    assert "\nanchors of preset tiny:\n" in capsys.readouterr().out


# ------------------------------------------------ fitted anchors: layout, order, never worse


def _reference_best_iou(config: AnchorConfig, sample: GTSample) -> np.ndarray:
    """Every anchor of every image from the generator, against every box."""
    generator, best = AnchorGenerator(config), np.zeros(len(sample.boxes), np.float32)
    for i, (h, w) in enumerate(sample.sizes):
        rows = np.nonzero(sample.image == i)[0]
        anchors = generator(feature_sizes(h, w, config.strides))
        if len(rows):
            best[rows] = box_iou(torch.from_numpy(sample.boxes[rows]), anchors).max(1).values
    return best


def test_best_anchor_iou_equals_every_anchor_against_every_box():
    # the nearest anchor centre per level, without a grid, against the full grids
    sample = collect_gt(read_dataset(RACCOON), short=192, max_size=320)
    tiny, vgg = preset_config("tiny").rpn.anchors, preset_config("vgg16-c5").rpn.anchors
    shifted = dataclasses.replace(tiny, offset=0.5, round_base=True)
    for config in (tiny, vgg, shifted):
        expected = _reference_best_iou(config, sample)
        assert np.allclose(best_anchor_iou(config, sample), expected, atol=1e-5)


def _reached(sample: GTSample, config: AnchorConfig) -> np.ndarray:
    """(ranges, thresholds) boxes whose best anchor reaches each threshold, per size range."""
    table = coverage_table(sample, best_anchor_iou(config, sample))
    return np.array([[row["count"] * (row[f">={t}"] or 0) for t in THRESHOLDS]
                     for row in table.values()]).round()  # fmt: skip


def _check_fit(preset: AnchorConfig, fitted: AnchorConfig, sample: GTSample) -> None:
    """The preset's layout, sizes strictly increasing level after level, shared sensible
    ratios, and the fit nowhere below the preset, strictly above it at IoU 0.7."""
    assert fitted.num_anchors_per_level == preset.num_anchors_per_level
    assert fitted.strides == preset.strides
    assert all(lv.sizes and not lv.shapes for lv in fitted.levels)
    sizes = [s for lv in fitted.levels for s in lv.sizes]
    assert all(b >= a * SIZE_STEP - 1e-9 for a, b in itertools.pairwise(sizes)), sizes
    (ratios,) = {lv.ratios for lv in fitted.levels}
    assert list(ratios) == sorted(set(ratios)) and RATIO_RANGE[0] <= min(ratios)
    assert max(ratios) <= RATIO_RANGE[1]
    before, after = _reached(sample, preset), _reached(sample, fitted)
    assert (after >= before).all() and after[0, 0] > before[0, 0]  # row "all", IoU 0.7


def test_fit_on_coco128_orders_the_levels_and_beats_the_preset():
    # at shorter side 320 the old fit put 9 shapes on P2 and a 179 px anchor on P6 below
    # P5's 297 px; its 15 free shapes also changed the head (6, 2, 2, 2, 3 per level)
    sample = collect_gt(read_dataset(COCO128), short=320, max_size=533)
    preset = preset_config("effnet-lite0-fpn").rpn.anchors
    fitted = fit_anchors(preset, sample)
    _check_fit(preset, fitted, sample)
    # 228 of 929 boxes at IoU 0.7 with the preset's anchors
    assert (best_anchor_iou(preset, sample) >= 0.7).sum() == 228
    assert (best_anchor_iou(fitted, sample) >= 0.7).sum() >= 300


def test_fit_finds_the_two_box_sizes_by_hand():
    # 24 px and 96 px squares centred on anchor centres of every level (multiples of 32):
    # the preset's 32 / 64 / 128 reach IoU 576 / 1024 = 0.5625 with both, so no box is
    # matched at 0.7; an anchor of 24 px and one of 96 px match all at IoU 1
    boxes = [[c - s / 2, c - s / 2, c + s / 2, c + s / 2] for c in (64, 128, 192) for s in (24, 96)]
    sample = _sample(boxes * 4, size=(256, 256))
    preset = AnchorConfig.pyramid(strides=(8, 16, 32), sizes=(32, 64, 128), ratios=(1.0,))
    assert best_anchor_iou(preset, sample).max() == pytest.approx(0.5625)
    fitted = fit_anchors(preset, sample)
    _check_fit(preset, fitted, sample)
    assert fitted.levels[0].sizes[0] == pytest.approx(24, rel=0.02)  # the smallest, on P3
    assert any(lv.sizes[0] == pytest.approx(96, rel=0.02) for lv in fitted.levels[1:])
    assert fitted.levels[0].ratios[0] == pytest.approx(1, abs=0.02)  # squares stay square
    assert (best_anchor_iou(fitted, sample) >= 0.95).all()


def test_fit_keeps_anchors_it_cannot_beat_and_says_so(tmp_path):
    # every box is one of the anchors (32 px at the centres (16 j, 16 i)): IoU 1 for all,
    # nothing to gain; a fit that moved the size would lose them
    config = AnchorConfig(levels=(LevelAnchors(stride=16, sizes=(32.0,), ratios=(1.0,)),))
    boxes = [[16 * j - 16, 16 * i - 16, 16 * j + 16, 16 * i + 16] for i in (2, 3) for j in (2, 4)]
    assert fit_anchors(config, _sample(boxes, size=(96, 96))) is config
    model = preset_config("tiny")
    model = dataclasses.replace(model, rpn=dataclasses.replace(model.rpn, anchors=config))
    report = anchor_report(model, _index(tmp_path, 96, 96, boxes), short=96, max_size=96, fit=True)
    assert not report.fit_improved and report.fitted_model() == model
    assert report.to_dict()["fit"] == {"iou": 0.7, "boxes_matched": {"preset": 4, "fitted": 4},
                                       "improved": False}  # fmt: skip
    assert "no fitted anchors beat the ones above: none found match more than their 4 of 4 " in (
        report.format()
    )


def test_fit_keeps_a_cascade_rpn_buildable_and_oln_fits_at_its_own_iou():
    # the old fit gave tiny-cascade on raccoon 243 x 274 px at stride 8 and 163 x 155 at
    # stride 16: a config its Cascade RPN refused (one square anchor, one scale)
    sample = collect_gt(read_dataset(RACCOON), short=320, max_size=533)
    cascade = preset_config("tiny-cascade").rpn
    fitted = fit_anchors(cascade.anchors, sample, same_scale=True)
    _check_fit(cascade.anchors, fitted, sample)
    scale = anchor_scale(dataclasses.replace(cascade, anchors=fitted))
    assert [lv.sizes for lv in fitted.levels] == [(scale * s,) for s in fitted.strides]
    assert match_threshold(cascade) == 0.7
    assert match_threshold(preset_config("effnet-lite0-fpn-oln").rpn) == 0.3


@pytest.mark.parametrize("preset", ["tiny", "vgg16-c5", "r50-c4", "effnet-lite0-fpn"])
def test_a_fit_is_the_preset_or_nowhere_worse(preset):
    sample = collect_gt(read_dataset(RACCOON), short=192, max_size=320)
    anchors = preset_config(preset).rpn.anchors
    fitted = fit_anchors(anchors, sample, seed=1)
    if fitted is not anchors:
        _check_fit(anchors, fitted, sample)


def test_size_advice_follows_the_images_that_hold_the_boxes(tmp_path):
    # a 1024 x 768 image holding 40 boxes of 6 px among four 320 x 240 images with one each.
    # The advice must follow the large image, not the median image (a small one: 240 x 3.77
    # gave --short-side 928). 6 px to 32 / sqrt(2) = 22.6 px takes x3.77 of the original:
    # 768 x 3.77 -> 2912, 4 / 3 of it 3904.
    model = preset_config("tiny")
    anchors = AnchorConfig.single_level(stride=16, sizes=(32,), ratios=(1.0,))
    model = dataclasses.replace(model, rpn=dataclasses.replace(model.rpn, anchors=anchors))
    crowd = [[10 + 20 * i, 10 + 15 * (i % 8), 16 + 20 * i, 16 + 15 * (i % 8)] for i in range(40)]
    records = [_index(tmp_path / "big", 1024, 768, crowd).records[0]]
    for i in range(4):
        small = _index(tmp_path / f"s{i}", 320, 240, [[100, 100, 106, 106]])
        records.append(dataclasses.replace(small.records[0], image_id=i + 1))
    index = dataclasses.replace(small, records=records)
    report = anchor_report(model, index, short=256, max_size=512)
    assert "(--short-side 2912 --max-size 3904)" in report.advice
