"""Detections as annotation files (``engine.label_files``, ``rpnkit detect --labels``): the
exact text of each format for hand-built results, and the round trip: a detector's results
written as VOC, YOLO and CSV and read back by rpnkit's own readers give the same boxes (to the
format's rounding), classes and image sizes."""

import csv
import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rpnkit
from rpnkit.cli import main
from rpnkit.data import read_dataset
from rpnkit.data.csv_dataset import read_csv
from rpnkit.data.voc import read_voc
from rpnkit.data.yolo import read_yolo
from rpnkit.engine.label_files import LabelWriter, write_labels
from rpnkit.engine.results import DetectionResult, ProposalResult

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
IMAGES = RACCOON / "images"
FEW = ["raccoon-1.jpg", "raccoon-10.jpg", "raccoon-100.jpg", "raccoon-101.jpg"]
CLASSES = ("cat", "dog")


def _result(file_name="a.jpg", boxes=(), scores=(), labels=(), size=(100, 200), source=None):
    """A DetectionResult built by hand: ``size`` is (height, width), as the runtime's."""
    return DetectionResult(
        7,
        file_name,
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.int64),
        CLASSES,
        size,
        source,
    )


def _two_detections(**kwargs) -> DetectionResult:
    # a dog at (10.4, 20.6)-(110.2, 80.5) and a cat covering the whole 200x100 image
    boxes = [[10.4, 20.6, 110.2, 80.5], [0.0, 0.0, 200.0, 100.0]]
    return _result(boxes=boxes, scores=[0.912345678, 0.5], labels=[2, 1], **kwargs)


def _quietly(read, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing clipped, nothing skipped: a note fails
        return read(*args, **kwargs)


def _pictures(folder: Path, *names: str, size=(200, 100)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", size, (90, 120, 150)).save(folder / name)
    return [folder / name for name in names]


# ---------------------------------------------------------------- the texts, by hand


def test_voc_xml_by_hand(tmp_path):
    # VOC: 1-based inclusive pixel indices of the rounded box: x1 10.4 -> 10 -> xmin 11,
    # y1 20.6 -> 21 -> ymin 22, x2 110.2 -> 110, y2 80.5 -> 80 (half to even)
    write_labels(_two_detections(), tmp_path, format="voc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xml"]
    obj = (
        "\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n"
        "\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<score>{}</score>\n"
        "\t\t<bndbox>\n\t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n\t\t\t<xmax>{}</xmax>\n"
        "\t\t\t<ymax>{}</ymax>\n\t\t</bndbox>\n\t</object>\n"
    )
    assert (tmp_path / "a.xml").read_text() == (
        "<annotation>\n\t<filename>a.jpg</filename>\n"
        "\t<size>\n\t\t<width>200</width>\n\t\t<height>100</height>\n\t\t<depth>3</depth>\n"
        "\t</size>\n\t<segmented>0</segmented>\n"
        + obj.format("dog", "0.91235", 11, 22, 110, 80)
        + obj.format("cat", "0.5", 1, 1, 200, 100)
        + "</annotation>\n"
    )


def test_yolo_txt_and_data_yaml_by_hand(tmp_path):
    # cx = (10.4 + 110.2) / 2 / 200 = 0.3015, cy = (20.6 + 80.5) / 2 / 100 = 0.5055,
    # w = 99.8 / 200 = 0.499, h = 59.9 / 100 = 0.599; classes 0-based: dog 1, cat 0
    write_labels(_two_detections(), tmp_path, format="yolo")
    assert (tmp_path / "labels" / "a.txt").read_text() == (
        "1 0.3015 0.5055 0.499 0.599\n0 0.5 0.5 1 1\n"
    )
    text = (tmp_path / "data.yaml").read_text()
    assert text.endswith("train: images\nval: images\nnc: 2\nnames:\n  0: cat\n  1: dog\n")
    assert all(line.startswith("#") for line in text.splitlines()[:3])


def test_csv_by_hand(tmp_path):
    # xyxy pixels to 0.01 (float32's 10.4 is 10.399999618...), scores to 1e-5
    write_labels(_two_detections(), tmp_path, format="csv")
    assert (tmp_path / "detections.csv").read_text() == (
        "filename,width,height,class,xmin,ymin,xmax,ymax,score\n"
        "a.jpg,200,100,dog,10.4,20.6,110.2,80.5,0.91235\n"
        "a.jpg,200,100,cat,0,0,200,100,0.5\n"
    )


def test_an_image_without_detections_gets_its_empty_file(tmp_path):
    (image,) = _pictures(tmp_path / "images", "b.png", size=(60, 50))
    empty = _result("b.png", size=(50, 60), source=image)
    for fmt in ("voc", "yolo", "csv"):
        write_labels([empty], tmp_path / fmt, format=fmt)
    assert (tmp_path / "yolo" / "labels" / "b.txt").read_text() == ""
    assert (tmp_path / "csv" / "detections.csv").read_text().splitlines()[1] == "b.png,60,50,,,,,,"
    root = ET.parse(tmp_path / "voc" / "b.xml").getroot()
    assert root.find("object") is None and root.findtext("size/width") == "60"
    assert root.findtext("path") == str(image.resolve())  # the file, as labelImg writes it
    assert (tmp_path / "yolo" / "images" / "b.png").is_symlink()  # the writer's link
    for index in (
        _quietly(read_voc, tmp_path / "voc", tmp_path / "images", class_names=CLASSES),
        _quietly(read_yolo, tmp_path / "yolo" / "data.yaml"),
        _quietly(read_csv, tmp_path / "csv" / "detections.csv", tmp_path / "images"),
    ):
        (record,) = index.records
        assert (record.width, record.height, len(record.boxes)) == (60, 50, 0)


def test_boxes_under_a_pixel_keep_one_and_boxes_stay_in_the_image(tmp_path):
    # 10.4..10.6 rounds to 10..11 (not an empty 10..10 the reader would drop); a box beyond
    # the image is clipped to it, and one at its last pixel keeps that pixel
    boxes = [[10.4, 5.0, 10.6, 7.0], [-5.0, -3.0, 250.0, 120.0], [199.7, 99.8, 200.0, 100.0]]
    result = _result(boxes=boxes, scores=[0.9, 0.8, 0.7], labels=[1, 1, 2])
    write_labels(result, tmp_path, format="voc")
    found = [
        [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        for obj in ET.parse(tmp_path / "a.xml").getroot().iter("object")
    ]
    assert found == [[11, 6, 11, 7], [1, 1, 200, 100], [200, 100, 200, 100]]


# ---------------------------------------------------------------- names met twice


def test_images_of_one_name_in_two_folders_do_not_overwrite_each_other(tmp_path):
    first = _pictures(tmp_path / "a", "x.png")[0]
    second = _pictures(tmp_path / "b", "x.png")[0]
    results = [
        _result("x.png", [[1, 2, 30, 40]], [0.9], [1], source=first),
        _result("x.png", [[50, 20, 90, 60]], [0.8], [2], source=second),
    ]
    for fmt in ("voc", "yolo", "csv"):
        with LabelWriter(tmp_path / fmt, format=fmt) as out:
            for result in results:
                out.add(result)
        assert "x.png met again: written as " in out.describe()
    assert sorted(p.name for p in (tmp_path / "voc").iterdir()) == ["x-2.xml", "x.xml"]
    assert sorted(p.name for p in (tmp_path / "yolo" / "labels").iterdir()) == [
        "x-2.txt",
        "x.txt",
    ]
    # VOC and CSV name the second image by its full path: read from its own file
    voc = _quietly(read_voc, tmp_path / "voc", tmp_path / "a", class_names=CLASSES)
    csv_file = tmp_path / "csv" / "detections.csv"
    table = _quietly(read_csv, csv_file, tmp_path / "a", class_names=CLASSES)
    for index in (voc, table):
        found = {r.path.resolve(): (r.labels.tolist(), r.boxes.tolist()) for r in index.records}
        assert found == {
            first.resolve(): ([1], [[1, 2, 30, 40]]),
            second.resolve(): ([2], [[50, 20, 90, 60]]),
        }


def test_names_in_memory_met_again_get_a_numbered_name_and_case_does_not_part_them(tmp_path):
    results = [_result("p.jpg"), _result("P.jpg"), _result("p.jpg")]
    write_labels(results, tmp_path / "voc", format="voc")
    write_labels(results, tmp_path / "csv", format="csv")
    assert sorted(p.name for p in (tmp_path / "voc").iterdir()) == ["P-2.xml", "p-3.xml", "p.xml"]
    rows = (tmp_path / "csv" / "detections.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["p.jpg", "P-2.jpg", "p-3.jpg"]


# ---------------------------------------------------------------- the writer's contract


def test_the_writer_refuses_proposals_and_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="label format 'coco': use one of voc, yolo, csv"):
        LabelWriter(tmp_path, format="coco")
    proposals = ProposalResult(1, "a.jpg", torch.zeros(1, 4), torch.ones(1), (10, 10))
    with pytest.raises(TypeError, match="from detections"):
        write_labels([proposals], tmp_path, format="voc")
    with pytest.raises(TypeError, match="write_labels"):
        write_labels("a.jpg", tmp_path)


def test_files_are_whole_or_absent(tmp_path):
    # an error mid-run: the CSV (written at the end) is not there, nor any temporary file
    def failing():
        yield _two_detections()
        raise RuntimeError("the model failed")

    for fmt in ("voc", "csv"):
        with pytest.raises(RuntimeError):
            write_labels(failing(), tmp_path / fmt, format=fmt)
    assert [p.name for p in (tmp_path / "voc").iterdir()] == ["a.xml"]  # whole, kept
    assert list((tmp_path / "csv").iterdir()) == []
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        write_labels(_two_detections(), file / "labels")


def test_write_labels_is_the_facades():
    assert rpnkit.write_labels is write_labels


# ---------------------------------------------------------------- round trips


@pytest.fixture(scope="module")
def detections(detector_checkpoint):
    """A tiny untrained detector's detections on four raccoon photos (at the box head's 0.05:
    many, of the one class), at most 8 per image."""
    model = rpnkit.load(detector_checkpoint)
    results = model.detect([IMAGES / name for name in FEW], score_threshold=0.05, max_detections=8)
    assert [r.file_name for r in results] == FEW
    assert all(len(r.scores) > 0 for r in results)
    return results


def _read_back(folder: Path, fmt: str, class_names):
    """The written labels read by rpnkit's readers, the images from raccoon's folder (YOLO:
    the writer's links to them at images/, where YOLO looks), by file name."""
    if fmt == "yolo":
        index = _quietly(read_dataset, folder)  # data.yaml found, 'train' read
    else:  # the folder's format detected: XML files, or one CSV of boxes
        index = _quietly(read_dataset, folder, images=IMAGES, class_names=class_names)
    return index, {record.file_name: record for record in index.records}


@pytest.mark.parametrize("fmt", ["voc", "yolo", "csv"])
def test_detections_read_back_by_rpnkits_readers(detections, tmp_path, fmt):
    write_labels(detections, tmp_path, format=fmt)
    names = detections[0].class_names
    index, records = _read_back(tmp_path, fmt, names)
    assert list(index.class_names) == list(names)
    assert list(records) == FEW
    for result in detections:
        record = records[result.file_name]
        assert (record.height, record.width) == result.image_size
        assert [index.class_names[k - 1] for k in record.labels.tolist()] == result.names
        boxes = result.boxes.double().numpy()
        if fmt == "voc":  # whole pixels
            np.testing.assert_array_equal(record.boxes, np.round(boxes).astype(np.float32))
        else:  # YOLO: 1e-6 of the image's side; CSV: 0.01 px
            np.testing.assert_allclose(record.boxes, boxes, atol=1e-3 if fmt == "yolo" else 6e-3)
        assert not record.ignore.any()  # nothing written as difficult
    assert not list(tmp_path.rglob(".*.tmp"))


def test_scores_are_kept_in_voc_and_csv(detections, tmp_path):
    write_labels(detections, tmp_path / "voc", format="voc")
    write_labels(detections, tmp_path / "csv", format="csv")
    with open(tmp_path / "csv" / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = [s for r in detections for s in r.scores.tolist()]
    assert [float(row["score"]) for row in rows] == pytest.approx(expected, abs=5e-6)
    voc = [
        float(score.text)
        for name in FEW
        for score in ET.parse(tmp_path / "voc" / f"{Path(name).stem}.xml").iter("score")
    ]
    assert voc == pytest.approx(expected, abs=5e-6)


@pytest.mark.parametrize("fmt", ["voc", "yolo", "csv"])
def test_detect_labels_from_the_command_line(detector_checkpoint, tmp_path, capsys, fmt):
    # raccoon's own VOC dataset, four of its images (a split file of ids): the labels hold
    # what --out holds, image for image, and the last line says where they went
    split = tmp_path / "few.txt"
    split.write_text("".join(f"{Path(name).stem}\n" for name in FEW))
    out, labels = tmp_path / "det.json", tmp_path / "labels"
    argv = ["detect", str(RACCOON), "--split-file", str(split), "--no-progress"]
    argv += ["--checkpoint", str(detector_checkpoint), "--score", "0.05", "--max-detections", "5"]
    argv += ["--out", str(out), "--labels", str(labels), "--labels-format", fmt]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"; {fmt} labels for 4 image(s) in {labels}" in last
    entries = json.loads(out.read_text())
    _, records = _read_back(labels, fmt, ["raccoon"])
    assert sorted(records) == sorted(FEW)
    for name, record in records.items():
        mine = [e for e in entries if e["file_name"] == name]
        assert 0 < len(mine) <= 5 and len(record.boxes) == len(mine)
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (e["bbox"] for e in mine)])
        np.testing.assert_allclose(record.boxes, xyxy, atol=0.51 if fmt == "voc" else 0.011)
        assert {e["category_name"] for e in mine} == {"raccoon"}


def test_detect_checks_the_labels_options_before_loading(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    missing = str(tmp_path / "missing.safetensors")  # never loaded: the options stop first
    base = [
        "detect",
        str(IMAGES / FEW[0]),
        "--checkpoint",
        missing,
        "--out",
        str(tmp_path / "d.json"),
    ]
    assert main([*base, "--labels", str(blocker)]) == 2
    assert f"--labels {blocker}: is a file, not a folder" in capsys.readouterr().err
    assert main([*base, "--labels-format", "yolo"]) == 2
    assert "--labels-format does nothing without --labels" in capsys.readouterr().err
    earlier = tmp_path / "earlier"  # an earlier run's labels: kept apart, not mixed in
    (earlier / "labels").mkdir(parents=True)
    (earlier / "a.xml").write_text("<annotation/>")
    (earlier / "labels" / "a.txt").write_text("")
    for fmt in ("voc", "yolo"):
        assert main([*base, "--labels", str(earlier), "--labels-format", fmt]) == 2
        assert f"{earlier}: holds 1 {fmt} label file(s) already" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds 1 voc label file"):
        write_labels([], earlier, format="voc")
