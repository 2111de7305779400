"""Stored detections scored for mAP without a checkpoint (``rpnkit eval --detections``,
``engine.stored_results.evaluate_stored_detections``): matched to images as stored proposals are,
to classes by category_name or category_id; and the eval command's ``--out`` checks."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpnkit.cli import main
from rpnkit.data import read_dataset
from rpnkit.engine.results import write_json
from rpnkit.engine.stored_results import (
    category_labels,
    evaluate_stored_detections,
    read_stored_detections,
)

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"


def _quietly(read, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read(*args, **kwargs)


def _pictures(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (200, 200), (90, 120, 150)).save(folder / name)


def _coco(tmp_path: Path) -> Path:
    """Two 200x200 images, ids 11 and 12: a cat in a.png, a dog in b.png, both 100x100 (COCO
    "large": area 10000 > 96^2); category ids 7 (cat) and 9 (dog), not 1..K."""
    _pictures(tmp_path / "images", "a.png", "b.png")
    data = {
        "images": [
            {"id": 11, "file_name": "a.png", "width": 200, "height": 200},
            {"id": 12, "file_name": "b.png", "width": 200, "height": 200},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "bbox": [10, 10, 100, 100], "category_id": 7, "area": 1e4},
            {"id": 2, "image_id": 12, "bbox": [50, 50, 100, 100], "category_id": 9, "area": 1e4},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


# Ranked per class: cat: one hit (AP 1). dog: a miss at 0.8 (a dog in a.png, which has
# none), then a hit at 0.7 -> precision 0 then 1/2 at recall 1: pycocotools' envelope and
# VOC's both give 0.5 at every IoU. So AP = AP50 = AP75 = APl = (1 + 0.5) / 2 = 0.75, no
# small or medium GT (-1), VOC07 and VOC area 0.75.
GOOD = [
    {"file_name": "a.png", "bbox": [10, 10, 100, 100], "score": 0.9, "category_name": "cat"},
    {"image_id": 11, "bbox": [10, 10, 100, 100], "score": 0.8, "category_id": 9},
    {"file_name": "b.png", "bbox": [50, 50, 100, 100], "score": 0.7, "category_id": 9},
]
OTHERS = [
    {"image_id": 99, "bbox": [0, 0, 5, 5], "score": 0.5, "category_id": 7},  # no such image
    {"file_name": "a.png", "bbox": [0, 0, 5, 5], "score": 0.5, "category_name": "bird"},
    {"file_name": "a.png", "bbox": [0, 0, 5, 5], "score": 0.5, "category_id": 8},  # no such id
    {"image_id": 11, "bbox": [1, 2, 3], "score": 0.5, "category_id": 7},  # malformed bbox
    {"image_id": 11, "bbox": [1, 2, 3, 4], "score": 0.5},  # no category
]


def test_hand_checked_map_of_stored_detections_on_coco_ids(tmp_path):
    index = read_dataset(_coco(tmp_path))
    assert category_labels(index) == {
        ("category_name", "cat"): 1,
        ("category_name", "dog"): 2,
        ("category_id", 7): 1,
        ("category_id", 9): 2,
    }
    results = tmp_path / "results.json"
    results.write_text(json.dumps(GOOD))
    m = evaluate_stored_detections(results, index).metrics
    for key in ("AP", "AP50", "AP75", "APl", "VOC07_mAP50", "VOC_area_mAP50"):
        assert m[key] == pytest.approx(0.75), key
    assert m["APs"] == m["APm"] == -1.0  # pycocotools' "no GT of that size", kept in the JSON
    assert m["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 0.5})
    assert m["per_class_VOC07_AP50"] == pytest.approx({"cat": 1.0, "dog": 0.5})
    # what could not be scored is reported, one line each kind, and counted; the rest scores
    # the same
    results.write_text(json.dumps(GOOD + OTHERS))
    with pytest.warns(UserWarning) as caught:
        stored = read_stored_detections(results, index)
    lines = [str(w.message) for w in caught]
    assert any("entry 6: 'bbox' [1, 2, 3] is not 4 finite numbers" in x for x in lines), lines
    assert any("entry 7: neither a 'category_id' nor a 'category_name'" in x for x in lines)
    assert any("1 result(s) for 1 image(s) not in" in x and "(first: 99)" in x for x in lines)
    classes = [x for x in lines if "class(es) not in" in x]
    assert len(classes) == 1 and "2 result(s) of 2 class(es)" in classes[0], lines
    assert "first: category_name 'bird'" in classes[0]
    assert "its COCO JSON's category ids" in classes[0]
    assert stored.describe() == (
        f"{results}: 8 results for 2 of 2 images; 1 for images not in the dataset; "
        "2 malformed; 2 of classes not in the dataset"
    )
    assert [b.tolist() for b in stored.boxes] == [
        [[10, 10, 110, 110], [10, 10, 110, 110]],
        [[50, 50, 150, 150]],
    ]
    assert [k.tolist() for k in stored.labels] == [[1, 2], [2]]
    report = evaluate_stored_detections(stored, index)
    assert report.metrics == m and report.unknown_results == 1 and len(report.notes) == 4
    text = report.format()
    assert "APs n/a, APm n/a, APl 0.750" in text and "-1.000" not in text


def test_category_ids_of_other_formats_are_1_to_k_in_class_order(tmp_path):
    _pictures(tmp_path / "pics", "a.png", "b.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("a.png,10,10,110,110,cat\nb.png,50,50,150,150,dog\n")
    index = read_dataset(csv, images=tmp_path / "pics")
    assert index.class_names == ["cat", "dog"]
    # GOOD with the ids 1..K (cat 1, dog 2) and file names: a.png, a.png, b.png
    entries = [
        {"file_name": "ab"[i // 2] + ".png", "bbox": e["bbox"], "score": e["score"]}
        for i, e in enumerate(GOOD)
    ]
    for entry, category in zip(entries, (1, 2, 2)):
        entry["category_id"] = category
    results = tmp_path / "results.json"
    results.write_text(json.dumps(entries))
    m = evaluate_stored_detections(results, index).metrics
    assert m["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 0.5})
    # a file of none of the dataset's classes is an error that says what it takes
    results.write_text(json.dumps([{**e, "category_id": 0} for e in entries]))
    with pytest.raises(ValueError, match=r"none of its results for the images of .* is of one"):
        _quietly(read_stored_detections, results, index)
    # max_detections: each image's best N count (a.png keeps its cat, b.png its dog)
    results.write_text(json.dumps(entries))
    m = evaluate_stored_detections(results, index, max_detections=1).metrics
    assert m["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 1.0})


def test_eval_detections_from_the_command_line(tmp_path, capsys):
    data = _coco(tmp_path)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(GOOD + OTHERS))
    out = tmp_path / "m.json"
    argv = ["eval", "--detections", str(results), "--data", str(data), "--no-progress"]
    assert main([*argv, "--out", str(out), "--plots", str(tmp_path / "plots")]) == 0
    captured = capsys.readouterr()
    assert "8 results for 2 of 2 images; 1 for images not in the dataset" in captured.out
    assert "COCO box AP: AP 0.750, AP50 0.750, AP75 0.750, APs n/a, APm n/a, APl 0.750" in (
        captured.out
    )
    assert "2 result(s) of 2 class(es) not in" in captured.err
    metrics = json.loads(out.read_text())
    assert metrics["AP"] == pytest.approx(0.75) and metrics["APs"] == -1.0
    assert (tmp_path / "plots" / "precision_recall.png").is_file()
    # one line for what cannot go together
    assert main([*argv, "--top", "5"]) == 2
    assert "--top counts proposals" in capsys.readouterr().err
    assert main([*argv, "--seen-classes", "cat"]) == 2
    assert "not stored --detections" in capsys.readouterr().err


def test_eval_out_given_a_folder_stops_before_evaluating(tmp_path, capsys):
    # regression: the whole evaluation ran, then renaming 'imgs.tmp' to 'imgs' raised
    # IsADirectoryError and left 'imgs.tmp' behind
    data = _coco(tmp_path)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(GOOD))
    folder = tmp_path / "imgs"
    folder.mkdir()
    argv = ["eval", "--detections", str(results), "--data", str(data), "--out", str(folder)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert f"{folder}: is a folder; give the JSON file to write" in captured.err
    assert "COCO box AP" not in captured.out  # said before evaluating
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "images",
        "imgs",
        "instances.json",
        "results.json",
    ]


def test_write_json_leaves_no_temporary_behind(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="is a folder; give the JSON file to write"):
        write_json(tmp_path, {"a": 1})

    def fail(self, target):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(ValueError, match=r"m.json: cannot write the JSON there \(disk full\)"):
        write_json(tmp_path / "m.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_eval_of_detect_output_equals_eval_of_the_checkpoint(detector_checkpoint, tmp_path):
    # raccoon's test split (40 images), the same batch size and sizes; detect keeps what the
    # box head keeps (--score 0.05, its own threshold) and writes rounded numbers (0.01 px,
    # scores to 1e-5): ties the rounding makes may reorder a few detections, so the figures
    # agree to 1e-3, not to the last digit
    split = ["--split-file", str(RACCOON / "test_labels.csv"), "--no-progress"]
    common = [*split, "--batch-size", "4"]
    detections = tmp_path / "det.json"
    argv = ["detect", str(RACCOON), "--checkpoint", str(detector_checkpoint), *common]
    assert main([*argv, "--score", "0.05", "--out", str(detections)]) == 0
    entries = json.loads(detections.read_text())
    assert len(entries) > 1000 and {e["category_name"] for e in entries} == {"raccoon"}
    metrics = {}
    for name, what in (
        ("checkpoint", ["--checkpoint", str(detector_checkpoint), "--batch-size", "4"]),
        ("detections", ["--detections", str(detections)]),  # no model runs: no batch size
    ):
        out = tmp_path / f"{name}.json"
        assert main(["eval", *what, "--data", str(RACCOON), *split, "--out", str(out)]) == 0
        metrics[name] = json.loads(out.read_text())
    assert metrics["detections"].keys() == metrics["checkpoint"].keys()
    figures = {k: v for k, v in metrics["checkpoint"].items() if isinstance(v, float)}
    assert {"AP", "AP50", "VOC07_mAP50"} <= figures.keys()
    for key, value in figures.items():
        assert metrics["detections"][key] == pytest.approx(value, abs=1e-3), key
    assert metrics["checkpoint"]["AP50"] > 0  # something matched: not all zeros
    assert np.isfinite(metrics["checkpoint"]["AP"])


def test_equals_pycocotools_on_the_coco_json_and_the_results_file(tmp_path):
    # detectron2's / mmdet's form (image_id and category_id, COCO's own ids): pycocotools
    # reading the instances JSON and the results file itself gives the same six numbers
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    instances = RACCOON.parent / "coco128" / "annotations" / "instances_train2017.json"
    data = json.loads(instances.read_text())
    rng = np.random.default_rng(0)
    categories = [c["id"] for c in data["categories"]]
    entries = []
    for ann in data["annotations"]:  # two jittered boxes per object, a fifth of wrong class
        x, y, w, h = ann["bbox"]
        for _ in range(2):
            dx, dy, dw, dh = rng.normal(0, 0.08, 4) * [w, h, w, h]
            right = rng.random() < 0.8
            category = ann["category_id"] if right else int(rng.choice(categories))
            bbox = [x + dx, y + dy, max(w + dw, 1), max(h + dh, 1)]
            bbox = [round(v, 2) for v in bbox]
            score = round(float(rng.random()), 5)
            entries.append(
                {"image_id": ann["image_id"], "category_id": category, "bbox": bbox, "score": score}
            )
    results = tmp_path / "results.json"
    results.write_text(json.dumps(entries))
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(instances))
        evaluation = COCOeval(truth, truth.loadRes(str(results)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    ours = evaluate_stored_detections(results, _quietly(read_dataset, instances)).metrics
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    assert [ours[k] for k in names] == [float(v) for v in evaluation.stats[:6]]
    assert 0.2 < ours["AP"] < 0.9  # neither trivially 0 nor 1


def test_an_empty_results_file_scores_zero_as_a_model_that_found_nothing(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    split = ["--data", str(RACCOON), "--split-file", str(RACCOON / "test_labels.csv")]
    for what, key in (("--detections", "AP50"), ("--proposals", "AR@100")):
        out = tmp_path / f"{what[2:]}.json"
        assert main(["eval", what, str(empty), *split, "--out", str(out)]) == 0
        assert json.loads(out.read_text())[key] == 0.0
        err = capsys.readouterr().err
        assert "empty.json: no results: every image scores as found nothing" in err


def test_results_in_memory_score_as_the_model_does(detector_checkpoint):
    # model.detect's results against a dataset given by path or as an index: the figures
    # model.evaluate gives; their COCO results entries the same to the entries' rounding
    import rpnkit
    from rpnkit.data import read_dataset

    model = rpnkit.load(detector_checkpoint, device="cpu", num_workers=0)
    split = {"split_file": str(RACCOON / "test_labels.csv")}
    direct = model.evaluate_detections(str(RACCOON), batch_size=4, **split).metrics
    found = model.detect(str(RACCOON), batch_size=4, **split)
    index = read_dataset(RACCOON, **split)
    stored = rpnkit.evaluate_stored_detections(found, index).metrics
    entries = rpnkit.evaluate_stored_detections(rpnkit.to_coco_results(found), index).metrics
    for key in ("AP", "AP50", "VOC07_mAP50"):
        assert stored[key] == direct[key], key
        assert entries[key] == pytest.approx(stored[key], abs=1e-3), key
    assert direct["AP50"] > 0
    # proposals in memory, as a file's: recall equal to the model's own
    proposals = model.propose(str(RACCOON), batch_size=4, top=1000, **split)  # AR@1000 too
    recall = rpnkit.evaluate_stored_proposals(proposals, index).metrics
    own = model.evaluate_proposals(str(RACCOON), batch_size=4, top=1000, **split).metrics
    assert recall == own
    # a dataset by path: read_dataset's defaults (raccoon's 200 images, 40 with proposals)
    by_path = rpnkit.evaluate_stored_proposals(proposals, RACCOON).metrics
    assert by_path == rpnkit.evaluate_stored_proposals(proposals, read_dataset(RACCOON)).metrics
    assert by_path["AR@100"] < recall["AR@100"]
    with pytest.raises(TypeError, match="stored results must be a COCO results file, or a"):
        rpnkit.evaluate_stored_proposals(42, index)
    with pytest.raises(TypeError, match="the dataset must be a path, a DatasetIndex or a"):
        rpnkit.evaluate_stored_proposals(proposals, 42)


def test_a_dataset_by_path_is_read_at_the_split_the_model_reads():
    # model.detect(path) reads a dataset's val split: stored results scored against the same
    # path read its train split (COCO128's train2017 JSON), where none of them belonged
    import rpnkit

    coco128 = RACCOON.parent / "coco128"
    index = _quietly(read_dataset, coco128, split="val")
    entries = [
        {"file_name": r.file_name, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 1.0}
        for r in index.records
        for x1, y1, x2, y2 in r.boxes.tolist()
    ]
    recall = _quietly(rpnkit.evaluate_stored_proposals, entries, coco128).metrics
    assert recall["recall@100@0.5"] == 1.0  # every box is its own result
    detections = [{**entry, "category_id": 1} for entry in entries]  # all "person"
    report = _quietly(rpnkit.evaluate_stored_detections, detections, coco128)
    assert report.metrics["AP50"] > 0
    with pytest.raises(ValueError, match=r"none of its \d+ results is for an image of"):
        _quietly(rpnkit.evaluate_stored_proposals, entries, coco128, split="train2017")


def test_notes_on_stored_results_point_at_the_callers_line():
    # they pointed inside rpnkit (stored_results.py's call of read_stored_detections)
    import rpnkit

    index = _quietly(read_dataset, RACCOON)
    with pytest.warns(rpnkit.data.DataNote, match="the results given: no results") as caught:
        rpnkit.evaluate_stored_detections([], index)
    assert [w.filename for w in caught] == [__file__]
    unknown = [{"file_name": "nowhere.jpg", "bbox": [0, 0, 1, 1], "score": 1.0}]
    unknown.append({"file_name": "raccoon-1.jpg", "bbox": [0, 0, 1, 1], "score": 1.0})
    with pytest.warns(rpnkit.data.SkippedSample, match="not in") as caught:
        rpnkit.evaluate_stored_proposals(unknown, index)
    assert {w.filename for w in caught} == {__file__}


def test_recall_curves_end_at_the_most_proposals_an_image_has():
    # a model keeping 300 proposals once got a point at 1000 (its AR@300 drawn as if
    # measured there, a flat tail) and a "recall@1000" curve against IoU
    import rpnkit

    index = _quietly(read_dataset, RACCOON, split_file=RACCOON / "test_labels.csv")
    entries = [
        {"file_name": r.file_name, "bbox": [x1 + i, y1, x2 - x1, y2 - y1], "score": 1 - i / 100}
        for r in index.records
        for x1, y1, x2, y2 in r.boxes.tolist()
        for i in range(30)  # 30 shifted copies of each GT box
    ]
    report = rpnkit.evaluate_stored_proposals(entries, index)
    by_proposals, by_iou = report.curves()
    most = max(len(boxes) for boxes, _ in report.kept)
    assert by_proposals["k"][-1] == most < 100 and max(by_proposals["k"]) == most
    assert [k for k in by_iou if k.startswith("recall@")] == [f"recall@{most}"]
