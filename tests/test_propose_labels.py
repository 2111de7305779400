"""Proposals as annotation files (``rpnkit propose --labels DIR``, ``write_labels(...,
proposal_class=)``): an RPN's class-agnostic boxes written as detections of one class,
``object``, to start annotating a new dataset from; read back by rpnkit's own readers, they
are the proposals of the results JSON, ``--top`` of them per image."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RACCOON

from rpnkit.cli import main
from rpnkit.data import read_dataset
from rpnkit.engine.label_files import LabelWriter, as_detections, write_labels
from rpnkit.engine.results import DetectionResult, ProposalResult

IMAGES = RACCOON / "images"
FEW = ["raccoon-1.jpg", "raccoon-10.jpg", "raccoon-100.jpg"]
TOP = 7


@pytest.fixture(scope="module")
def rpn_checkpoint(tmp_path_factory) -> Path:
    """The tiny preset's RPN, untrained and seeded, at 160 / 240 px."""
    from rpnkit.engine.checkpoint import ModelSpec, save_model
    from rpnkit.modeling.presets import build_model, preset_config

    torch.manual_seed(0)
    spec = ModelSpec("rpn", preset_config("tiny"), ("thing",))
    path = tmp_path_factory.mktemp("rpn") / "rpn.safetensors"
    return save_model(path, build_model(preset_config("tiny")), spec, input_size=(160, 240))


def _propose(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return [
        "propose",
        *(str(IMAGES / name) for name in FEW),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _read_back(folder: Path, fmt: str):
    """The labels read by rpnkit's readers, nothing clipped or skipped (a note fails), the
    images from raccoon's folder (YOLO: the writer's links to them at images/)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if fmt == "yolo":
            return read_dataset(folder)
        return read_dataset(folder, images=IMAGES)


@pytest.mark.parametrize("fmt", ["voc", "yolo", "csv"])
def test_propose_labels_are_the_proposals_of_the_json(rpn_checkpoint, tmp_path, capsys, fmt):
    out, labels = tmp_path / "p.json", tmp_path / "labels"
    argv = _propose(rpn_checkpoint, out, "--top", str(TOP))
    assert main([*argv, "--labels", str(labels), "--labels-format", fmt]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"; {fmt} labels for 3 image(s) in {labels}" in last
    entries = json.loads(out.read_text())
    index = _read_back(labels, fmt)
    assert list(index.class_names) == ["object"]
    records = {record.file_name: record for record in index.records}
    assert sorted(records) == sorted(FEW)
    for name, record in records.items():
        mine = [e for e in entries if e["file_name"] == name]
        assert len(mine) == TOP  # --top limits the labels as it limits the JSON
        assert record.labels.tolist() == [1] * TOP
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (e["bbox"] for e in mine)])
        # VOC: whole pixels; YOLO: 1e-6 of the side; CSV: 0.01 px, as the JSON
        np.testing.assert_allclose(record.boxes, xyxy, atol=0.51 if fmt == "voc" else 0.011)
    if fmt == "yolo":
        assert "names:\n  0: object\n" in (labels / "data.yaml").read_text()


def test_propose_labels_keep_the_scores_where_the_format_has_a_place(rpn_checkpoint, tmp_path):
    out = tmp_path / "p.json"
    for fmt in ("voc", "csv"):
        argv = _propose(rpn_checkpoint, out, "--top", "3")
        assert main([*argv, "--labels", str(tmp_path / fmt), "--labels-format", fmt]) == 0
    expected = [e["score"] for e in json.loads(out.read_text())]  # image by image, best first
    rows = (tmp_path / "csv" / "detections.csv").read_text().splitlines()[1:]
    assert [row.split(",")[3] for row in rows] == ["object"] * 9
    assert [float(row.split(",")[-1]) for row in rows] == pytest.approx(expected, abs=5e-6)
    voc = [
        float(line.strip().removeprefix("<score>").removesuffix("</score>"))
        for name in FEW
        for line in (tmp_path / "voc" / f"{Path(name).stem}.xml").read_text().splitlines()
        if "<score>" in line
    ]
    assert voc == pytest.approx(expected, abs=5e-6)


def test_propose_checks_the_labels_options_before_loading(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"  # never loaded: the options stop first
    argv = _propose(missing, tmp_path / "p.json")
    assert main([*argv, "--labels-format", "yolo"]) == 2
    assert "--labels-format does nothing without --labels" in capsys.readouterr().err
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "a.xml").write_text("<annotation/>")
    assert main([*argv, "--labels", str(earlier)]) == 2
    assert f"{earlier}: holds 1 voc label file(s) already" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]


def test_proposals_by_hand_are_one_class_and_refused_without_it(tmp_path):
    # two proposals of a 200x100 image: (10.4, 20.6)-(110.2, 80.5) at 0.9, the whole at 0.25
    boxes = torch.tensor([[10.4, 20.6, 110.2, 80.5], [0.0, 0.0, 200.0, 100.0]])
    proposals = ProposalResult(3, "a.jpg", boxes, torch.tensor([0.9, 0.25]), (100, 200))
    detections = as_detections(proposals)
    assert isinstance(detections, DetectionResult)
    assert (detections.names, detections.class_names) == (["object", "object"], ("object",))
    write_labels([proposals], tmp_path / "csv", format="csv", proposal_class="object")
    assert (tmp_path / "csv" / "detections.csv").read_text().splitlines()[1:] == [
        "a.jpg,200,100,object,10.4,20.6,110.2,80.5,0.9",
        "a.jpg,200,100,object,0,0,200,100,0.25",
    ]
    write_labels(proposals, tmp_path / "yolo", format="yolo", proposal_class="region")
    assert (tmp_path / "yolo" / "labels" / "a.txt").read_text() == (
        "0 0.3015 0.5055 0.499 0.599\n0 0.5 0.5 1 1\n"
    )
    writer = LabelWriter(tmp_path / "voc")  # no proposal_class
    with pytest.raises(TypeError, match=r"proposals \(no class: give proposal_class\)"), writer:
        writer.add(proposals)
