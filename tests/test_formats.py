"""Dataset formats and layouts (CSV boxes, VOC XML wherever it is), the deterministic
validation split, and stored proposals scored without a checkpoint (``rpnkit eval
--proposals``, the alternating schedule's given proposal files). Every dataset is written in
tmp_path, with raccoon's images copied at test time."""

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from rpnkit.cli import build_parser, main
from rpnkit.data import DataConfig, DataError, DataNote, detect_format, read_dataset
from rpnkit.data.splits import (
    apply_split,
    held_out,
    make_split,
    read_split,
    validation_count,
    validation_names,
)
from rpnkit.engine.stored_results import evaluate_stored_proposals, read_stored_proposals

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
SMALL = ["--short-side", "96", "--max-size", "144", "--no-progress"]


def _images(folder: Path, *numbers: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n in numbers:
        shutil.copy(RACCOON / "images" / f"raccoon-{n}.jpg", folder)
        names.append(f"raccoon-{n}.jpg")
    return names


def _quietly(read, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read(*args, **kwargs)


# ---------------------------------------------------------------- CSV boxes


def test_csv_with_a_header_relative_paths_and_an_image_without_objects(tmp_path):
    _images(tmp_path / "pics", 1, 2, 3)
    csv = tmp_path / "boxes.csv"
    csv.write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        "pics/raccoon-1.jpg,10,20,110,220,raccoon\n"
        "pics/raccoon-2.jpg,,,,,\n"  # an image without objects
        "pics/raccoon-1.jpg,30,40,50,60,dog\n"
        f"{(tmp_path / 'pics' / 'raccoon-3.jpg').resolve()},1.5,2.5,30,40,dog\n"  # absolute
    )
    assert detect_format(csv) == "csv" and detect_format(tmp_path) == "csv"
    index = read_dataset(tmp_path)
    assert index.class_names == ["dog", "raccoon"] and not index.issues
    assert [r.file_name for r in index.records] == [
        "raccoon-1.jpg",
        "raccoon-2.jpg",
        "raccoon-3.jpg",
    ]
    first, empty, third = index.records
    assert first.boxes.tolist() == [[10, 20, 110, 220], [30, 40, 50, 60]]
    assert first.labels.tolist() == [2, 1] and not first.ignore.any()
    assert len(empty.boxes) == 0 and (empty.width, empty.height) == (800, 573)
    assert third.boxes.tolist() == [[1.5, 2.5, 30, 40]]
    # columns are found by name, in any order, other columns ignored (raccoon's own CSV form),
    # and --images says where relative paths start
    named = tmp_path / "named" / "labels.csv"
    named.parent.mkdir()
    named.write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "raccoon-1.jpg,650,417,raccoon,10,20,110,220\n"
    )
    index = read_dataset(named, images=tmp_path / "pics")
    assert index.records[0].boxes.tolist() == [[10, 20, 110, 220]]


def test_keras_retinanet_csv_and_class_map(tmp_path):
    _images(tmp_path, 1, 2)
    (tmp_path / "annotations.csv").write_text(
        "raccoon-1.jpg,10,20,110,220,raccoon\nraccoon-1.jpg,5,5,60,60,cat\nraccoon-2.jpg,,,,,\n"
    )
    (tmp_path / "classes.csv").write_text("raccoon,0\ncat,1\nzebra,2\n")
    assert detect_format(tmp_path / "annotations.csv") == "csv"
    # a folder's one class map is used: the classes in id order, unseen ones included
    index = read_dataset(tmp_path)
    assert index.class_names == ["raccoon", "cat", "zebra"]
    assert index.records[0].labels.tolist() == [1, 2] and len(index.records[1].boxes) == 0
    # the same from the CSV itself, the class map given
    index = read_dataset(tmp_path / "annotations.csv", class_map=tmp_path / "classes.csv")
    assert index.class_names == ["raccoon", "cat", "zebra"]
    assert read_dataset(tmp_path / "annotations.csv").class_names == ["cat", "raccoon"]
    # a class map with a header, and class_names (a checkpoint's) mapping by name
    (tmp_path / "classes.csv").write_text("class_name,id\ncat,4\nraccoon,3\n")
    assert read_dataset(tmp_path).class_names == ["raccoon", "cat"]
    index = read_dataset(tmp_path, class_names=["cat", "raccoon"])
    assert index.records[0].labels.tolist() == [2, 1]
    # a class map given as the data, or a broken one, is one clear error
    with pytest.raises(DataError, match=r"a class map .* not boxes.*--class-map"):
        detect_format(tmp_path / "classes.csv")
    (tmp_path / "classes.csv").write_text("cat,1\ndog,1\n")
    with pytest.raises(DataError, match=r"classes.csv line 2: id 1 appears twice"):
        read_dataset(tmp_path)


def test_csv_bad_rows_are_skipped_naming_the_file_and_the_line(tmp_path):
    _images(tmp_path, 1, 2)  # raccoon-1 is 650x417
    csv = tmp_path / "boxes.csv"
    csv.write_text(
        "path,x1,y1,x2,y2,class_name\n"  # the keras form may carry a header too
        "raccoon-1.jpg,10,20,110,220,raccoon\n"  # line 2: good
        "raccoon-1.jpg,10,20,110\n"  # 3: wrong field count
        "raccoon-1.jpg,10,abc,110,220,raccoon\n"  # 4: non-numeric
        "raccoon-1.jpg,nan,20,110,220,raccoon\n"  # 5: NaN
        "raccoon-1.jpg,110,20,10,220,raccoon\n"  # 6: inverted
        "raccoon-1.jpg,700,20,800,220,raccoon\n"  # 7: wholly outside
        "raccoon-1.jpg,-30,20,110,220,raccoon\n"  # 8: partly outside: clipped, counted
        "raccoon-1.jpg,10,20,110,220,dog\n"  # 9: unknown class with class_names
        "\n"  # 10: blank lines are nothing
        "missing.jpg,1,1,5,5,raccoon\n"  # 11: no such image
        "raccoon-2.jpg,1,2,30,40,\n"  # 12: no class name
    )
    with pytest.warns(UserWarning) as caught:
        index = read_dataset(csv, class_names=["raccoon"])
    expected = {
        3: "expected 6 fields (path,x1,y1,x2,y2,class_name), got 4",
        4: "non-numeric box value",
        5: "NaN or infinite coordinate",
        6: "empty or inverted",
        7: "wholly outside",
        11: "missing.jpg: image file not found",
        12: "no class name",
    }
    assert len(index.issues) == len(expected) + 1 == len(caught)
    for issue, (line, problem) in zip(index.issues, sorted(expected.items())):
        assert issue.startswith(f"{csv} line {line}: ") and problem in issue, issue
    assert index.issues[-1] == (  # objects of a class not given: one line for them all
        f"{csv}: 1 object(s) of classes not among the 1 given, left out ('dog' 1); the first: "
        f"{csv} line 9: unknown class 'dog' (known: 'raccoon')"
    )
    assert (index.skipped_images, index.skipped_annotations) == (1, 7)
    assert len(index.clipped) == 1 and index.clipped[0].startswith(f"{csv} line 8: ")
    assert [r.file_name for r in index.records] == ["raccoon-1.jpg", "raccoon-2.jpg"]
    assert index.records[0].boxes.tolist() == [[10, 20, 110, 220], [0, 20, 110, 220]]
    assert "1 image(s) and 7 annotation(s) skipped, 1 box(es) clipped" in index.summary()
    with pytest.raises(DataError, match=r"boxes.csv line 3: expected 6 fields"):
        read_dataset(csv, strict=True)


def test_csv_text_that_is_not_utf8_loses_its_row_and_a_quote_left_open_stops(tmp_path):
    _images(tmp_path, 1)
    csv = tmp_path / "boxes.csv"
    good = b"raccoon-1.jpg,10,20,110,220,raccoon\n"
    csv.write_bytes(
        b"image_path,xmin,ymin,xmax,ymax,label\n" + good * 300 + b"raccoon-1.jpg,1,1,5,5,r\xe9d\n"
    )
    with pytest.warns(UserWarning) as caught:
        index = read_dataset(csv)
    assert [str(w.message) for w in caught if w.category is not DataNote] == [  # not the repeats
        f"skipped {csv} line 302: not UTF-8 text (byte 0xe9): save the file as UTF-8"
    ]  # its own line, not the offset in a read buffer
    assert len(index.records[0].boxes) == 300 and index.class_names == ["raccoon"]
    csv.write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        'raccoon-1.jpg,10,20,110,220,"raccoon\n'  # the quote is never closed
        "raccoon-1.jpg,10,20,110,220,raccoon\n"
        "raccoon-1.jpg,10,20,110,220,raccoon\n"
    )
    with pytest.raises(DataError, match=r"boxes.csv line 2: a quoted field runs on to line 4"):
        read_dataset(csv)


def test_csv_detection_looks_at_the_first_row(tmp_path):
    _images(tmp_path / "a", 1)
    (tmp_path / "a" / "notes.csv").write_text("what,when\nlunch,noon\n")
    why = r"not a CSV of boxes: its first row is 'what,when', 2 field\(s\)"
    with pytest.raises(DataError, match=why):
        detect_format(tmp_path / "a" / "notes.csv")
    with pytest.raises(DataError, match=r"cannot tell the dataset format.*notes.csv is " + why):
        detect_format(tmp_path / "a")  # a CSV that holds no boxes is no dataset: it says why
    (tmp_path / "a" / "x.csv").write_text("raccoon-1.jpg,1,2,3,4,raccoon\n")
    assert detect_format(tmp_path / "a") == "csv"
    assert read_dataset(tmp_path / "a").source == str(tmp_path / "a" / "x.csv")
    (tmp_path / "a" / "y.csv").write_text("raccoon-1.jpg,,,,,\n")
    with pytest.raises(DataError, match=r"holds 2 CSV files of boxes \(x.csv, y.csv\); give one"):
        detect_format(tmp_path / "a")
    # a folder with other annotations keeps its format (raccoon: VOC XML and CSV splits)
    assert detect_format(RACCOON) == "voc"


def test_a_folder_that_cannot_be_read_says_what_was_looked_for_and_found(tmp_path):
    for i in range(12):
        (tmp_path / f"img{i}.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError) as caught:
        read_dataset(tmp_path)
    assert str(caught.value).startswith(
        f"{tmp_path}: cannot tell the dataset format: looked for data.yaml, annotations/*.json, "
        "*.json, annotations/*.xml, Annotations/*.xml, *.xml, *.csv; found 12 .png, 1 .txt, "
        "1 folder(s) (sub)"
    )
    empty = tmp_path / "sub"
    with pytest.raises(DataError, match="found nothing"):
        detect_format(empty)


# ---------------------------------------------------------------- VOC wherever it is


def _xml(folder: Path, number: int, filename: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (RACCOON / "annotations" / f"raccoon-{number}.xml").read_text()
    if filename is not None:
        start, end = text.index("<filename>"), text.index("</filename>") + len("</filename>")
        text = text[:start] + (f"<filename>{filename}</filename>" if filename else "") + text[end:]
    path = folder / f"raccoon-{number}.xml"
    path.write_text(text)
    return path


def test_voc_xml_beside_its_images_and_in_any_folder(tmp_path):
    beside = tmp_path / "beside"
    _images(beside, 1, 2)
    _xml(beside, 1), _xml(beside, 2)
    assert detect_format(beside) == "voc"
    index = read_dataset(beside)
    assert [r.file_name for r in index.records] == ["raccoon-1.jpg", "raccoon-2.jpg"]
    expected = read_dataset(RACCOON, split_file=RACCOON / "train_labels.csv")
    boxes = {r.file_name: r.boxes.tolist() for r in expected.records}
    assert index.records[0].boxes.tolist() == boxes["raccoon-1.jpg"]
    # an annotation folder of any name given directly, the images in images/ beside it
    _images(tmp_path / "odd" / "images", 1)
    xml_dir = tmp_path / "odd" / "labels_xml"
    _xml(xml_dir, 1)
    assert read_dataset(xml_dir).records[0].path == tmp_path / "odd" / "images" / "raccoon-1.jpg"


def test_voc_images_option_and_the_stem_fallback(tmp_path):
    pictures = tmp_path / "somewhere" / "pictures"
    _images(pictures, 1, 2, 3)
    # raccoon-3 as a PNG: its XML still says raccoon-3.jpg
    from PIL import Image

    Image.open(pictures / "raccoon-3.jpg").save(pictures / "raccoon-3.png")
    (pictures / "raccoon-3.jpg").unlink()
    xml_dir = tmp_path / "xml"
    _xml(xml_dir, 1)
    _xml(xml_dir, 2, filename="")  # no <filename>: the XML's stem
    _xml(xml_dir, 3)
    with pytest.raises(DataError, match=r"cannot find its images .* give --images DIR"):
        read_dataset(xml_dir)
    index = read_dataset(xml_dir, images=pictures)
    found = [r.path.name for r in index.records]
    assert found == ["raccoon-1.jpg", "raccoon-2.jpg", "raccoon-3.png"] and not index.issues
    # DataConfig and the CLI take it too
    assert DataConfig(str(xml_dir), images=str(pictures)).read_train().records[2].width > 0
    # an image found nowhere is skipped, naming what was looked for
    _xml(xml_dir, 4)
    index = _quietly(read_dataset, xml_dir, images=pictures)
    assert len(index.records) == 3 and "raccoon-4.jpg: image file not found" in index.issues[0]
    assert "no raccoon-4.<image suffix> either" in index.issues[0]


# ---------------------------------------------------------------- splits


def test_the_split_is_deterministic_whatever_the_file_order():
    names = [f"img_{i:03d}.jpg" for i in range(40)]
    chosen = validation_names(names, 0.25, seed=3)
    assert chosen == validation_names(list(reversed(names)), 0.25, seed=3)
    assert chosen == validation_names(names[::2] + names[1::2], 0.25, seed=3)
    assert len(chosen) == 10 == validation_count(40, 0.25)
    # the documented rule: the lowest sha256 of "<seed>:<file name>"
    ranked = sorted(names, key=lambda n: hashlib.sha256(f"3:{n}".encode()).hexdigest())
    assert chosen == sorted(ranked[:10])
    assert validation_names(names, 0.25, seed=4) != chosen
    assert (validation_count(7, 0.5), validation_count(3, 0.01), validation_count(2, 0.9)) == (
        4,
        1,
        1,
    )
    assert validation_count(10, 0.0) == 0 and validation_count(1, 0.5) == 0


def test_a_split_of_an_index_and_its_checks(tmp_path):
    _images(tmp_path, *range(1, 9))
    rows = "".join(f"raccoon-{i}.jpg,1,2,30,40,raccoon\n" for i in range(1, 9))
    (tmp_path / "b.csv").write_text(rows)
    index = read_dataset(tmp_path)
    split = make_split(index, 0.25, seed=0)
    train, val = apply_split(index, split)
    assert len(val.records) == 2 and len(train.records) == 6
    assert {r.file_name for r in val.records} == set(split.validation)
    assert val.class_names == train.class_names == ["raccoon"]
    assert split == make_split(read_dataset(tmp_path), 0.25, seed=0)  # same on every call
    assert read_split(split.save(tmp_path / "run")) == split
    assert held_out(index, split).records == val.records
    with pytest.raises(ValueError, match="val_fraction must be a number in"):
        make_split(index, 1.0, seed=0)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"DataConfig.val_fraction must be None or a fraction"):
            DataConfig("d", val_fraction=bad)
    with pytest.raises(ValueError, match="val_fraction and val_data are mutually exclusive"):
        DataConfig("d", val_fraction=0.2, val_data="v")


# ---------------------------------------------------------------- through the command line


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny RPN trained for 20 steps at 96 px on 12 raccoon images (VOC XML beside them),
    a quarter held out with --val-fraction; and its top-1000 proposals for every image. (After
    2 steps its recall was zero or one box, depending on which images the batches drew.)"""
    root = tmp_path_factory.mktemp("formats")
    data = root / "ds"
    _images(data, *range(1, 13))
    for i in range(1, 13):
        _xml(data, i)
    out = root / "run"
    argv = ["train", "--data", str(data), "--val-fraction", "0.25", "--preset", "tiny"]
    argv += ["--steps", "20", "--batch-size", "2", "--workers", "0", "--out", str(out), *SMALL]
    assert main(argv) == 0
    proposals = root / "proposals.json"
    argv = ["propose", str(data), "--checkpoint", str(out / "checkpoint.safetensors")]
    assert main([*argv, "--top", "300", "--out", str(proposals), *SMALL]) == 0  # tiny: 300 an image
    return data, out, proposals


def test_train_val_fraction_writes_the_split_and_eval_reuses_it(run, tmp_path, capsys):
    data, out, proposals = run
    split = json.loads((out / "split.json").read_text())
    index = _quietly(read_dataset, data)
    assert split["validation"] == list(make_split(index, 0.25, seed=0).validation)
    assert len(split["validation"]) == 3 and split["seed"] == 0
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["split"] == "split.json" and record["data"]["val_fraction"] == 0.25
    assert "AR@100" in json.loads((out / "metrics.json").read_text())
    # eval on the held-out images only, through the checkpoint and from stored proposals
    capsys.readouterr()
    checkpoint = ["--checkpoint", str(out / "checkpoint.safetensors")]
    for what in (checkpoint, ["--proposals", str(proposals)]):
        argv = ["eval", *what, "--data", str(data), "--split-from", str(out), *SMALL]
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "3 of 12 images held out for validation" in text, text
        assert "evaluating 3 of them" in text
    assert "3600 results for 3 of 3 images; 2700 for the dataset's other images" in text
    assert main(["train", "--data", str(data), "--val-fraction", "0.2", "--val-data", "x"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_eval_of_stored_proposals_equals_eval_of_the_checkpoint(run, tmp_path):
    data, out, proposals = run
    metrics = {}
    for name, what in (
        ("checkpoint", ["--checkpoint", str(out / "checkpoint.safetensors")]),
        ("proposals", ["--proposals", str(proposals)]),
    ):
        path = tmp_path / f"{name}.json"
        assert main(["eval", *what, "--data", str(data), "--out", str(path), *SMALL]) == 0
        metrics[name] = json.loads(path.read_text())
    assert metrics["checkpoint"] == metrics["proposals"]
    assert len(metrics["proposals"]) == 48
    assert metrics["proposals"]["recall@1000@0.5"] > 0  # something matched: not all zeros
    # the library gives the same table
    report = evaluate_stored_proposals(proposals, _quietly(read_dataset, data))
    assert report.metrics == metrics["proposals"] and report.unknown_results == 0
    assert "AR 0.5:0.95" in report.format()


def _coco(tmp_path: Path) -> Path:
    """A COCO dataset of two raccoon images with ids 7 and 9."""
    _images(tmp_path / "images", 1, 2)
    data = {
        "images": [
            {"id": 7, "file_name": "raccoon-1.jpg", "width": 650, "height": 417},
            {"id": 9, "file_name": "raccoon-2.jpg", "width": 800, "height": 573},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [80, 20, 420, 380], "category_id": 1, "area": 1e4},
            {"id": 2, "image_id": 9, "bbox": [10, 10, 20, 20], "category_id": 1, "area": 400},
            {"id": 3, "image_id": 9, "bbox": [200, 100, 300, 300], "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "raccoon"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_stored_results_are_matched_by_file_name_or_coco_image_id(tmp_path):
    index = read_dataset(_coco(tmp_path))
    truth = {7: [[80, 20, 420, 380]], 9: [[10, 10, 20, 20], [200, 100, 300, 300]]}
    names = {7: "raccoon-1.jpg", 9: "raccoon-2.jpg"}
    decoy = [0, 0, 5, 5]  # scores lower: the GT boxes come first
    by_id = [
        {"image_id": i, "bbox": b, "score": 0.9, "category_id": 1}
        for i, bs in truth.items()
        for b in bs
    ] + [{"image_id": i, "bbox": decoy, "score": 0.1} for i in truth]
    by_name = [{"file_name": names[e["image_id"]], **e} for e in by_id]
    by_name = [{k: v for k, v in e.items() if k != "image_id"} for e in by_name]
    reports = []
    for entries in (by_id, by_name):
        path = tmp_path / "results.json"
        path.write_text(json.dumps(entries))
        report = evaluate_stored_proposals(path, index)
        assert report.metrics["AR@10"] == 1.0 and report.metrics["recall@10@0.7_small"] == 1.0
        reports.append(report.metrics)
    assert reports[0] == reports[1]
    # results for unknown images (by name or by id) and malformed ones are reported and counted
    extra = [
        {"file_name": "elsewhere.jpg", "bbox": [1, 1, 5, 5], "score": 0.5},
        {"image_id": 1234, "bbox": [1, 1, 5, 5], "score": 0.5},
        {"image_id": 1234, "bbox": [1, 1, 5, 5], "score": 0.4},
        {"image_id": 7, "bbox": [1, 1, 5], "score": 0.5},
    ]
    path.write_text(json.dumps(by_id + extra))
    with pytest.warns(UserWarning) as caught:
        stored = read_stored_proposals(path, index)
    lines = [str(w.message) for w in caught]
    assert any("entry 8: 'bbox' [1, 1, 5] is not 4 finite numbers" in line for line in lines)
    assert any("3 result(s) for 2 image(s) not in" in line for line in lines), lines
    assert (stored.unknown_results, stored.bad_results, stored.results) == (3, 1, 9)
    assert stored.describe() == (
        f"{path}: 9 results for 2 of 2 images; 3 for images not in the dataset; 1 malformed"
    )
    report = _quietly(evaluate_stored_proposals, stored, index)
    assert report.metrics == reports[0] and report.unknown_results == 3
    # nothing of the dataset at all is an error
    path.write_text(json.dumps(extra[:3]))
    with pytest.raises(ValueError, match="none of its 3 results is for an image of"):
        _quietly(read_stored_proposals, path, index)


def test_stored_results_of_images_sharing_a_file_name_are_matched_by_image_id(tmp_path):
    for folder in ("a", "b"):  # two different photographs, one name
        (tmp_path / folder).mkdir()
    shutil.copy(RACCOON / "images" / "raccoon-1.jpg", tmp_path / "a" / "x.jpg")
    shutil.copy(RACCOON / "images" / "raccoon-2.jpg", tmp_path / "b" / "x.jpg")
    csv = tmp_path / "boxes.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\n"
                   "a/x.jpg,80,20,420,380,r\nb/x.jpg,10,10,200,200,r\n")  # fmt: skip
    index = read_dataset(csv)
    assert [r.file_name for r in index.records] == ["x.jpg", "x.jpg"]
    entries = [  # as rpnkit writes them: both file names and the reader's ids
        {"file_name": "x.jpg", "image_id": "a/x.jpg", "bbox": [80, 20, 340, 360], "score": 0.9},
        {"file_name": "x.jpg", "image_id": "b/x.jpg", "bbox": [10, 10, 190, 190], "score": 0.9},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(entries))
    stored = read_stored_proposals(path, index)
    assert [len(b) for b in stored.boxes] == [1, 1]  # each its own, not both on the first
    assert stored.boxes[1].tolist() == [[10, 10, 200, 200]]


def test_eval_proposals_on_a_csv_dataset_from_the_command_line(tmp_path, capsys):
    _images(tmp_path / "pics", 1, 2)
    (tmp_path / "labels.csv").write_text(
        "raccoon-1.jpg,80,20,500,400,raccoon\nraccoon-2.jpg,200,100,500,400,raccoon\n"
    )
    results = [
        {"file_name": "raccoon-1.jpg", "bbox": [80, 20, 420, 380], "score": 0.9},
        {"file_name": "raccoon-2.jpg", "bbox": [0, 0, 100, 100], "score": 0.9},
        {"file_name": "other.jpg", "bbox": [0, 0, 100, 100], "score": 0.9},
    ]
    (tmp_path / "r.json").write_text(json.dumps(results))
    argv = ["eval", "--proposals", str(tmp_path / "r.json"), "--data", str(tmp_path / "labels.csv")]
    argv += ["--images", str(tmp_path / "pics"), "--out", str(tmp_path / "m.json"), *SMALL]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "1 for images not in the dataset" in captured.out
    assert "1 result(s) for 1 image(s) not in" in captured.err
    assert json.loads((tmp_path / "m.json").read_text())["recall@10@0.5"] == 0.5


def test_propose_and_detect_read_a_csv_dataset_whose_images_are_elsewhere(run, tmp_path, capsys):
    # --images and --class-map were train's and eval's only: propose and detect could not
    # read a CSV dataset whose image paths are relative to another folder
    _, out, _ = run
    _images(tmp_path / "pics", 1, 2)
    (tmp_path / "labels.csv").write_text(
        "raccoon-1.jpg,80,20,500,400,raccoon\nraccoon-2.jpg,200,100,500,400,raccoon\n"
    )
    (tmp_path / "classes.csv").write_text("raccoon,0\n")
    results = tmp_path / "p.json"
    argv = [
        "propose",
        str(tmp_path / "labels.csv"),
        "--checkpoint",
        str(out / "checkpoint.safetensors"),
    ]
    argv += ["--images", str(tmp_path / "pics"), "--class-map", str(tmp_path / "classes.csv")]
    assert main([*argv, "--top", "5", "--out", str(results), *SMALL]) == 0
    entries = json.loads(results.read_text())
    assert {e["file_name"] for e in entries} == {"raccoon-1.jpg", "raccoon-2.jpg"}
    assert len(entries) == 10
    capsys.readouterr()
    assert main([*argv[:-4], "--out", str(tmp_path / "q.json"), *SMALL]) != 0  # not beside it
    assert "raccoon-1.jpg" in capsys.readouterr().err
    parsed = build_parser().parse_args(["detect", "x", "--checkpoint", "c", "--images", "d",
                                        "--class-map", "m"])  # fmt: skip
    assert (parsed.images, parsed.class_map) == ("d", "m")


def test_alternating_training_with_given_proposal_files(run, tmp_path, capsys):
    data, _, _ = run
    index = _quietly(read_dataset, data)
    rng = np.random.default_rng(0)
    entries = []
    for record in index.records:
        for box in record.boxes:
            for _ in range(4):  # jittered GT boxes, the way an RPN's proposals cover them
                x1, y1, x2, y2 = (box + rng.normal(0, 5, 4)).tolist()
                bbox = [x1, y1, max(x2 - x1, 1), max(y2 - y1, 1)]
                entries.append({"file_name": record.file_name, "bbox": bbox, "score": 0.5})
    given = tmp_path / "given.json"
    given.write_text(json.dumps(entries))
    out = tmp_path / "alt"
    argv = ["train", "--data", str(data), "--val-fraction", "0.25", "--preset", "tiny"]
    argv += ["--model", "faster-rcnn", "--schedule", "alternating", "--steps", "1"]
    argv += ["--proposals-step1", str(given), "--proposals-step3", str(given)]
    argv += ["--batch-size", "2", "--workers", "0", "--out", str(out), *SMALL]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count(f"proposals given: {given}: ") == 2
    for step in ("step1_rpn", "step2_detector", "step3_rpn", "step4_detector"):
        assert (out / step / "checkpoint.safetensors").is_file(), step
    assert not (out / "step1_proposals.json").exists()
    assert not (out / "step3_proposals.json").exists()
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["proposals"] == {"step1": str(given), "step3": str(given)}
    assert "AP50" in json.loads((out / "metrics.json").read_text())


def test_a_csv_whose_images_are_elsewhere_says_where_they_were_looked_for(tmp_path):
    csv = tmp_path / "boxes.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\nraccoon-1.jpg,10,20,110,220,raccoon\n")
    with (
        pytest.raises(
            ValueError, match=r"no image could be read \(1 skipped; first: .*give --images DIR"
        ),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        DataConfig(str(csv)).read_train()
    _images(tmp_path / "photos", 1)
    assert len(DataConfig(str(csv), images=str(tmp_path / "photos")).read_train().records) == 1


def test_results_writers_name_themselves_for_what_is_not_results(tmp_path):
    import rpnkit

    with pytest.raises(TypeError, match=r"to_coco_results takes ProposalResult .*: result 0, got"):
        rpnkit.to_coco_results([{"image_id": 1}])
    with pytest.raises(TypeError, match=r"to_coco_results: expected results .*, got int"):
        rpnkit.to_coco_results(3)
    with pytest.raises(TypeError, match=r"path must be a file's path, got list \(the results"):
        rpnkit.write_coco_results([], tmp_path / "x.json")  # swapped
    assert not list(tmp_path.iterdir())
