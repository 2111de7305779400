import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from rpnkit.cli import main
from rpnkit.config import load_config
from rpnkit.data import DatasetIndex, read_dataset
from rpnkit.data.readers import Record
from rpnkit.evaluation.anchor_fit import (
    GTSample,
    anchor_report,
    best_anchor_iou,
    collect_gt,
    coverage_table,
    fit_anchors,
    kmeans_iou,
    unmatched,
)
from rpnkit.modeling.anchors import AnchorConfig
from rpnkit.modeling.presets import ModelConfig, build_model, preset_config

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"


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
    assert any(lv.shapes for lv in config.rpn.anchors.levels)
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
    capped = "--max-size 1333 caps the resize: the median image's shorter side is 666 px, not "
    assert capped + "the 800 of --short-side." in report.advice
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
    hint = "a CSV's images are looked for beside it: give --images DIR"
    assert "(160 skipped; first: " in last
    assert last.endswith(f"image file not found): no box to check the anchors on; {hint}")
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
