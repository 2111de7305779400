import re

import numpy as np
import pytest

from rpnkit.evaluation.detection import (
    ImageDetections,
    ImageTruth,
    coco_map,
    format_detection_metrics,
    format_metric,
    format_per_class,
    voc_ap,
    voc_map,
)


def _truth(boxes, labels, ignore=None, size=(200, 200)):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ignore = np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore)
    return ImageTruth(boxes, np.asarray(labels), ignore, areas, size[1], size[0])


def _dets(boxes, scores, labels):
    return ImageDetections(
        np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores), np.asarray(labels)
    )


def test_voc_ap_by_hand():
    # recall 0.5 at precision 1, then recall 1.0 at precision 0.5:
    # area form: 0.5 * 1 + 0.5 * 0.5 = 0.75; 11-point: 6 points at 1 (t <= 0.5), 5 at 0.5
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(recall, precision) == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]), use_07_metric=True) == pytest.approx(
        (6 * 1.0 + 5 * 0.5) / 11
    )


def test_voc_map_with_a_duplicate_a_miss_and_a_difficult_box():
    truths = [
        _truth(
            [[0, 0, 50, 50], [100, 100, 150, 150], [10, 150, 40, 190]],
            [1, 1, 1],
            ignore=[False, False, True],
        )
    ]
    dets = [
        _dets(
            [[0, 0, 50, 50], [1, 1, 50, 50], [12, 150, 40, 190], [160, 0, 190, 30]],
            [0.9, 0.8, 0.7, 0.6],
            [1, 1, 1, 1],
        )
    ]
    # ranked: TP (box 0), FP (duplicate), ignored (difficult), FP (nothing there)
    # -> recall 0.5, 0.5, 0.5; precision 1, 0.5, 1/3; the second real box is never found
    mean, per_class = voc_map(truths, dets, ["thing"], use_07_metric=False)
    assert per_class["thing"] == pytest.approx(0.5)
    assert mean == pytest.approx(0.5)


def test_coco_map_perfect_and_absent_class():
    truths = [
        _truth([[0, 0, 50, 50], [100, 100, 190, 180]], [1, 2]),
        _truth([[20, 20, 60, 90]], [1]),
    ]
    perfect = [_dets(t.boxes, np.ones(len(t.boxes)), t.labels) for t in truths]
    stats, per_class, pr = coco_map(truths, perfect, ["cat", "dog", "bird"])
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert per_class["cat"] == pytest.approx(1.0) and np.isnan(per_class["bird"])  # no bird GT
    shifted = [_dets(t.boxes + 8, np.ones(len(t.boxes)), t.labels) for t in truths]
    worse, _, pr_worse = coco_map(truths, shifted, ["cat", "dog", "bird"])
    assert worse["AP"] < 1.0
    none, _, _ = coco_map(truths, [_dets([], [], []) for _ in truths], ["cat", "dog", "bird"])
    assert none["AP"] == 0.0
    table = format_per_class(per_class)  # bird has no GT: n/a, as the report says
    assert re.search(r"^bird +n/a$", table, re.M), table
    # precision-recall: perfect detections keep precision 1 up to recall 1; classes without GT
    # have no curve
    assert len(pr["recall"]) == 101 and min(pr["precision@0.5"]) == pytest.approx(1.0)
    assert set(pr["per_class@0.5"]) == {"cat", "dog"}
    assert min(pr_worse["precision@0.75"]) < 1.0


def test_coco_map_works_with_pycocotools_2_0_10(monkeypatch):
    # regression: pycocotools 2.0.10's loadRes copies the GT's "info"; a GT dataset without it
    # raised KeyError on the GPU machine (2.0.11 does not need it)
    from pycocotools.coco import COCO

    original = COCO.loadRes

    def load_res_2_0_10(self, results):
        info = self.dataset["info"]  # what 2.0.10 reads
        res = original(self, results)
        res.dataset["info"] = info
        return res

    monkeypatch.setattr(COCO, "loadRes", load_res_2_0_10)
    truths = [_truth([[0, 0, 50, 50]], [1])]
    stats, _, _ = coco_map(truths, [_dets([[0, 0, 50, 50]], [0.9], [1])], ["cat"])
    assert stats["AP"] == pytest.approx(1.0)


def test_no_gt_of_a_size_prints_as_n_a_and_stays_minus_one_in_the_metrics():
    # regression: the table printed pycocotools' "no GT" marker as "APs -1.000"
    truths = [_truth([[0, 0, 150, 150]], [1])]  # one large box: no small or medium GT
    stats, per_class, _ = coco_map(truths, [_dets([[0, 0, 150, 150]], [0.9], [1])], ["cat"])
    assert stats["APs"] == stats["APm"] == -1.0 and stats["APl"] == pytest.approx(1.0)
    metrics = {**stats, "VOC07_mAP50": 1.0, "VOC_area_mAP50": 1.0, "per_class_AP": per_class}
    text = format_detection_metrics(metrics)
    assert "APs n/a, APm n/a, APl 1.000" in text and "-1" not in text
    assert format_metric(0.25, 7) == "  0.250" and format_metric(-1.0, 7) == "    n/a"


def test_voc_map_without_any_gt_is_no_gt_not_zero_and_prints_n_a():
    # a validation set of crowd regions only once printed VOC mAP 0.000 beside COCO's n/a
    truths = [_truth([[0, 0, 150, 150]], [1], ignore=[True])]  # difficult / crowd only
    detections = [_dets([[0, 0, 150, 150]], [0.9], [1])]
    mean, per_class = voc_map(truths, detections, ["cat"])
    assert mean == -1.0 and np.isnan(per_class["cat"])
    stats, per_class, _ = coco_map(truths, detections, ["cat"])
    metrics = {**stats, "VOC07_mAP50": mean, "VOC_area_mAP50": mean, "per_class_AP": per_class}
    assert "VOC mAP@0.5: 2007 11-point n/a, area n/a" in format_detection_metrics(metrics)
    # one class with GT: the mean is over it alone, as before
    truths.append(_truth([[0, 0, 50, 50]], [2]))
    detections.append(_dets([[0, 0, 50, 50]], [0.9], [2]))
    mean, _ = voc_map(truths, detections, ["cat", "dog"])
    assert mean == pytest.approx(1.0)
