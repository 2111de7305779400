"""Training on a class subset (``data.class_subset``, ``DataConfig.classes``, ``rpnkit train
--classes``): which boxes remain, how they are labelled, that the run records it and validates
on the same subset, the OLN protocol from the command line; and the kind a preset trains as
(``rpnkit train --model`` against an OLN full-model preset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rpnkit.cli import main
from rpnkit.config import config_from_dict, config_to_dict
from rpnkit.data import DataConfig, DatasetIndex, Record
from rpnkit.data.class_subset import (
    VOC_CLASSES_IN_COCO,
    keep_classes,
    only_classes,
    seen_class_names,
)
from rpnkit.engine.checkpoint import DETECTOR, RPN, load_model
from rpnkit.engine.fit import model_kind, model_spec
from rpnkit.engine.run_record import RunRecord
from rpnkit.viz.report import report_data

COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"


# ---------------------------------------------------------------- hand-written indexes


def _record(name: str, labels: list[int], ignore: list[bool] | None = None) -> Record:
    """An image whose i-th box is (10 i, 0, 10 i + 5, 5), so each box tells where it was."""
    n = len(labels)
    boxes = np.array([[10.0 * i, 0.0, 10.0 * i + 5, 5.0] for i in range(n)], np.float32)
    return Record(
        path=Path(name),
        image_id=name,
        width=100,
        height=100,
        boxes=boxes.reshape(n, 4),
        labels=np.array(labels, np.int64),
        ignore=np.array(ignore or [False] * n, bool),
        areas=np.full(n, 25.0, np.float32),
    )


def _index() -> DatasetIndex:
    # classes: 1 cat, 2 dog, 3 kite
    records = [
        _record("a", [1, 2, 3, 2], ignore=[False, True, False, False]),
        _record("b", [3, 3]),  # no cat or dog: ends with no box
        _record("c", []),
    ]
    return DatasetIndex(records, ["cat", "dog", "kite"], source="hand")


def _x1(record: Record) -> list[float]:
    return record.boxes[:, 0].tolist()


def test_keep_classes_keeps_those_boxes_and_every_class_name():
    kept = keep_classes(_index(), ["dog", "cat"])
    a, b, c = kept.records
    # image a: boxes 0 (cat), 1 (dog, an ignore region: kept as one) and 3 (dog); kite left out
    assert _x1(a) == [0.0, 10.0, 30.0]
    assert a.labels.tolist() == [1, 2, 2] and a.ignore.tolist() == [False, True, False]
    assert len(a.areas) == 3
    assert len(b.boxes) == 0 and len(c.boxes) == 0  # the images stay, with no box
    assert kept.class_names == ["cat", "dog", "kite"]


def test_only_classes_relabels_by_the_given_order():
    index = _index()
    kept = only_classes(index, ["kite", "cat"])
    a, b, _ = kept.records
    assert kept.class_names == ["kite", "cat"]
    # image a: box 0 was cat (now 2), box 2 was kite (now 1); the dogs are gone
    assert _x1(a) == [0.0, 20.0] and a.labels.tolist() == [2, 1]
    assert _x1(b) == [0.0, 10.0] and b.labels.tolist() == [1, 1]
    assert index.records[0].labels.tolist() == [1, 2, 3, 2]  # the input is left as it was
    # a name the index lacks (a validation split without it) labels nothing
    kept = only_classes(index, ["zebra", "dog"])
    assert kept.class_names == ["zebra", "dog"] and kept.records[0].labels.tolist() == [2, 2]


def test_seen_class_names_expands_voc_and_drops_repeats():
    assert seen_class_names("voc") == VOC_CLASSES_IN_COCO and len(VOC_CLASSES_IN_COCO) == 20
    assert seen_class_names(" dog, cat,dog ") == ("dog", "cat")
    assert seen_class_names(["cat", "VOC"])[:2] == ("cat", "airplane")


# ---------------------------------------------------------------- DataConfig.classes


def test_data_config_normalises_and_records_the_classes():
    assert DataConfig("d", classes="voc").classes == VOC_CLASSES_IN_COCO
    assert DataConfig("d", classes=["cat", " dog"]).classes == ("cat", "dog")
    assert DataConfig("d").classes is None
    for bad in ("", " , ", [], [3]):
        with pytest.raises(ValueError, match=r"DataConfig\.classes must be"):
            DataConfig("d", classes=bad)
    # config.yaml's round trip: the names written out, not "voc"
    config = DataConfig("d", classes="dog,cat")
    written = yaml.safe_load(yaml.safe_dump(config_to_dict(config)))
    assert written["classes"] == ["dog", "cat"]
    assert config_from_dict(DataConfig, written) == config


def _write_coco(folder: Path) -> Path:
    """A COCO JSON of two 64x64 images: a cat, a dog and a kite; two kites. No zebra."""
    (folder / "images").mkdir(parents=True)
    for name in ("one.png", "two.png"):
        Image.new("RGB", (64, 64), (90, 90, 90)).save(folder / "images" / name)
    boxes = [(1, 1, [0, 0, 10, 10]), (1, 2, [20, 0, 10, 10]), (1, 3, [40, 0, 10, 10])]
    boxes += [(2, 3, [0, 0, 20, 20]), (2, 3, [30, 30, 20, 20])]
    data = {
        "images": [
            {"id": i, "file_name": name, "width": 64, "height": 64}
            for i, name in ((1, "one.png"), (2, "two.png"))
        ],
        "categories": [
            {"id": i, "name": name} for i, name in enumerate(("cat", "dog", "kite", "zebra"), 1)
        ],
        "annotations": [
            {"id": k, "image_id": image, "category_id": cat, "bbox": box, "area": 100, "iscrowd": 0}
            for k, (image, cat, box) in enumerate(boxes)
        ],
    }
    path = folder / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_data_config_reads_the_subset_for_training_and_validation(tmp_path, recwarn):
    path = _write_coco(tmp_path / "coco")
    config = DataConfig(str(path), val_data=str(path), classes="dog,cat")
    train = config.read_train()
    assert train.class_names == ["dog", "cat"]
    one, two = train.records
    assert one.boxes[:, 0].tolist() == [0.0, 20.0] and one.labels.tolist() == [2, 1]
    assert len(two.boxes) == 0  # its kites are unlabelled
    # validation: the same subset, the same labels, and no "unknown class" skips for the kites
    val = config.read_val(class_names=train.class_names)
    assert val.class_names == train.class_names
    assert [r.labels.tolist() for r in val.records] == [[2, 1], []]
    assert not val.issues and not [w for w in recwarn if "skipped" in str(w.message)]
    with pytest.raises(ValueError, match=r"\['lion'\] are not among .* 4 classes \(cat, dog"):
        DataConfig(str(path), classes="cat,lion").read_train()
    with pytest.raises(ValueError, match=r"has no box of the classes \['zebra'\]"):
        DataConfig(str(path), classes="zebra").read_train()


# ---------------------------------------------------------------- the kind a preset trains as


def test_a_full_detector_preset_trains_as_a_detector():
    assert model_kind(None, "tiny-oln-rcnn") == DETECTOR
    assert model_kind(None, "effnet-lite0-fpn-oln-rcnn") == DETECTOR
    assert model_kind(None, "tiny") == RPN and model_kind(None, "effnet-lite0-fpn-oln") == RPN
    assert model_kind(DETECTOR, "tiny") == DETECTOR
    assert model_spec(None, "tiny-oln-rcnn", ["cat"]).is_detector
    for call in (
        lambda: model_kind(RPN, "tiny-oln-rcnn"),
        lambda: model_spec(RPN, "tiny-oln-rcnn", []),
    ):
        with pytest.raises(ValueError, match="is OLN's full detector, not an RPN"):
            call()
    with pytest.raises(ValueError, match="model kind must be"):
        model_kind("detector", "tiny")


def test_cli_refuses_an_rpn_of_a_detector_preset_in_one_line(tmp_path, capsys):
    """Regression: ``--model rpn --preset tiny-oln-rcnn`` trained the RPN alone, silently. It
    fails before the data is read (the path does not exist)."""
    argv = ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]
    assert main([*argv, "--model", "rpn", "--preset", "tiny-oln-rcnn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model faster-rcnn" in err
    assert "tiny-oln-rcnn" in err and "nowhere" not in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the protocol from the CLI


def _few_coco128_images(tmp_path: Path, count: int = 4) -> Path:
    """A COCO JSON of COCO128's first ``count`` train images (--images points at them)."""
    data = json.loads((COCO128 / "annotations" / "instances_train2017.json").read_text())
    data["images"] = data["images"][:count]
    ids = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    path = tmp_path / "few.json"
    path.write_text(json.dumps(data))
    return path


def test_cli_trains_on_voc_classes_then_evaluates_the_novel_ones(tmp_path, capsys):
    """rpnkit train --classes voc (the preset's kind: OLN's full detector) then rpnkit eval
    --seen-classes voc, on 4 COCO128 images at 128 px, 2 steps."""
    data = _few_coco128_images(tmp_path)
    images = str(COCO128 / "images" / "train2017")
    run = tmp_path / "run"
    located = ["--data", str(data), "--images", images]
    argv = ["train", *located, "--val-data", str(data), "--val-images", images]
    argv += ["--classes", "voc", "--preset", "tiny-oln-rcnn", "--out", str(run)]
    argv += ["--steps", "2", "--batch-size", "2", "--short-side", "128", "--max-size", "192"]
    argv += ["--workers", "0", "--warmup", "0", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "training on the boxes of 20 classes only" in printed
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["data"]["classes"] == list(VOC_CLASSES_IN_COCO)
    assert record["model"]["kind"] == DETECTOR
    _, spec = load_model(run / "checkpoint.safetensors", "cpu")
    assert spec.is_detector and spec.class_names == VOC_CLASSES_IN_COCO
    assert (run / "metrics.json").is_file()  # validated on the same subset
    # rpnkit report scores the run on the classes it trained on
    assert report_data(run, RunRecord.load(run)).classes == VOC_CLASSES_IN_COCO
    out = tmp_path / "open_world.json"
    argv = ["eval", "--checkpoint", str(run / "checkpoint.safetensors"), *located]
    argv += ["--short-side", "128", "--max-size", "192", "--no-progress", "--device", "cpu"]
    assert main([*argv, "--seen-classes", "voc", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["seen_classes"] == list(VOC_CLASSES_IN_COCO)
    assert metrics["novel"]["num_novel"] > 0
    # a name COCO lacks stops the run at once, in one line
    assert main(["train", *located, "--classes", "dog,zebrafish", "--out", str(run) + "2"]) == 2
    assert "['zebrafish'] are not among" in capsys.readouterr().err


# ---------------------------------------------------------------- detections in a JSON's ids


def _detector_of(tmp_path: Path, names: tuple[str, ...]) -> Path:
    from conftest import tiny_detector_pair

    from rpnkit.engine.checkpoint import ModelSpec, save_model
    from rpnkit.modeling.presets import DetectorConfig, preset_config

    ours, _ = tiny_detector_pair()  # 4 classes
    config = DetectorConfig(model=preset_config("tiny"), roi=ours.roi_heads.config)
    return save_model(tmp_path / "d.safetensors", ours, ModelSpec(DETECTOR, config, names))


def test_detections_on_a_coco_json_are_written_with_its_category_ids(tmp_path):
    # A checkpoint's labels are 1..K in its own class order; the JSON's ids (here 1..4 for cat,
    # dog, kite, zebra) are what pycocotools scores the results file against
    import rpnkit

    path = _write_coco(tmp_path / "coco")
    checkpoint = _detector_of(tmp_path, ("dog", "kite", "zebra", "cat"))  # each moved
    runtime = rpnkit.load(checkpoint, "cpu", short_side=64, max_size=64)
    entries = [e for r in runtime.detect(path) for e in r.to_coco_results()]
    in_json, own = ["cat", "dog", "kite", "zebra"], list(runtime.class_names)
    assert entries and all(
        e["category_id"] == in_json.index(e["category_name"]) + 1 for e in entries
    )
    assert all(own.index(e["category_name"]) + 1 != e["category_id"] for e in entries)
    images = sorted((tmp_path / "coco" / "images").iterdir())  # a folder: the checkpoint's 1..K
    entries = [e for r in runtime.detect(images) for e in r.to_coco_results()]
    assert entries and all(e["category_id"] == own.index(e["category_name"]) + 1 for e in entries)


def test_a_coco_json_without_a_checkpoint_class_keeps_the_labels_with_a_warning(tmp_path):
    import rpnkit

    path = _write_coco(tmp_path / "coco")
    checkpoint = _detector_of(tmp_path, ("cat", "dog", "kite", "lion"))
    runtime = rpnkit.load(checkpoint, "cpu", short_side=64, max_size=64)
    with pytest.warns(UserWarning, match="not one category named 'lion'.*category_id 1..K"):
        results = runtime.detect(path)
    entries = [e for r in results for e in r.to_coco_results()]
    own = list(runtime.class_names)
    assert entries and all(e["category_id"] == own.index(e["category_name"]) + 1 for e in entries)


def test_category_ids_follow_the_json_by_position_or_by_one_name_each():
    from types import SimpleNamespace

    from rpnkit.engine.runtime import coco_category_ids

    pairs = [(1, "cat"), (2, "dog"), (5, "kite"), (9, "cat")]  # a name used twice
    dataset = SimpleNamespace(index=SimpleNamespace(categories=pairs, source="x.json"))
    assert coco_category_ids(dataset, ("cat", "dog", "kite", "cat")) == (1, 2, 5, 9)  # its own
    assert coco_category_ids(dataset, ("kite", "dog")) == (5, 2)  # by name, each name once
    with pytest.warns(UserWarning, match="x.json: not one category named 'cat'"):
        assert coco_category_ids(dataset, ("dog", "cat")) is None  # 'cat' is 1 or 9: 1..K
    assert coco_category_ids(SimpleNamespace(), ("cat",)) is None  # not a COCO JSON
