from pathlib import Path

import numpy as np
import pytest
import torch

from rpnkit.cli import main
from rpnkit.config import load_config
from rpnkit.data import read_dataset
from rpnkit.evaluation.anchor_fit import (
    GTSample,
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
