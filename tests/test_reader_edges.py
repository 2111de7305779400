"""Edge cases of the dataset readers that used to read silently wrong: loose COCO flags and
areas, ids and names that cannot be told apart, split files that name nothing, YOLO layouts
that Ultralytics reads (sub-folders, lists, list files), and data.yaml or XML that is not what
it should be. Each gives one line naming the file and the entry, or a DataError."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
from PIL import Image

from rpnkit.data import DataConfig, DataError, detect_format, read_dataset
from rpnkit.data.coco import read_coco
from rpnkit.data.csv_dataset import read_csv
from rpnkit.data.records import SkippedSample
from rpnkit.data.voc import read_voc
from rpnkit.data.yolo import read_yolo

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"


def _read(reader, *args, **kwargs):
    """The index and the warnings the reader gave (category, message)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = reader(*args, **kwargs)
    return index, [(w.category, str(w.message)) for w in caught]


def _raccoon(folder: Path, *numbers: int, xml: bool = True) -> Path:
    """Raccoon images ``numbers`` (and their VOC XML) copied into ``folder``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(exist_ok=True)
    for n in numbers:
        shutil.copy(RACCOON / "images" / f"raccoon-{n}.jpg", folder / "images")
        if xml:
            shutil.copy(RACCOON / "annotations" / f"raccoon-{n}.xml", folder / "annotations")
    return folder


# ---------------------------------------------------------------- COCO


def _coco(tmp_path: Path, annotations, images=None, categories=None) -> Path:
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (50, 40)).save(tmp_path / name)
    data = {
        "images": images if images is not None else [_image(1, "a.jpg")],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def _image(i, name):
    return {"id": i, "file_name": name, "width": 50, "height": 40}


def _ann(i, image=1, category=1, **extra):
    return {
        "id": i,
        "image_id": image,
        "category_id": category,
        "bbox": [1, 1, 10 + i, 10],
        **extra,
    }  # boxes apart


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (_ann(2, iscrowd="0"), "'iscrowd' \"0\" is not 0 or 1"),
        (_ann(2, iscrowd=2), "'iscrowd' 2 is not 0 or 1"),
        (_ann(2, iscrowd=None), "'iscrowd' null is not 0 or 1"),
        (_ann(2, area=float("nan")), "'area' NaN is not a finite number >= 0"),
        (_ann(2, area=-5), "'area' -5 is not a finite number >= 0"),
        (
            _ann(2, category="1"),
            'unknown category "1" (a string vs integer mismatch: a string here, but an integer 1 '
            "in categories, 'cat')",
        ),
    ],
)
def test_a_loose_coco_flag_area_or_category_id_skips_its_annotation(tmp_path, bad, problem):
    good = [_ann(1, iscrowd=1, area=4.0), _ann(3, iscrowd=True), _ann(4, iscrowd=0.0)]
    path = _coco(tmp_path, [*good[:2], bad, good[2]])  # 0.0: as some converters write it
    index, caught = _read(read_coco, path, tmp_path)
    assert caught == [
        (SkippedSample, f"skipped {path}: annotations[2] (id 2, image a.jpg): {problem}")
    ]
    (record,) = index.records
    assert record.ignore.tolist() == [True, True, False]
    assert record.areas.tolist() == [4.0, 130.0, 140.0]
    assert index.skipped_annotations == 1
    with pytest.raises(DataError, match=r"annotations\[2\]"):
        read_coco(path, tmp_path, strict=True)


def test_a_string_category_id_names_the_integer_it_was_meant_as(tmp_path):
    path = _coco(tmp_path, [_ann(1, category="2")])
    _, caught = _read(read_coco, path, tmp_path)
    assert caught[0][1].endswith(
        'unknown category "2" (a string vs integer mismatch: a string here, but an integer 2 '
        "in categories, 'dog')"
    )


def test_images_sharing_an_id_are_left_out_with_their_annotations(tmp_path):
    images = [_image(1, "a.jpg"), _image(1, "b.jpg"), _image(2, "b.jpg")]
    path = _coco(tmp_path, [_ann(1), _ann(2), _ann(3, image=2)], images=images)
    index, caught = _read(read_coco, path, tmp_path)
    assert [m for _, m in caught] == [
        f'skipped {path}: images[0] "a.jpg": image id 1 is also images[1] "b.jpg": neither '
        "image is read, nor the annotations of that id",
        f'skipped {path}: images[1] "b.jpg": image id 1 is also images[0] "a.jpg": neither '
        "image is read, nor the annotations of that id",
        f"skipped {path}: 2 annotation(s) of image id 1 (first: annotations[0]) left out: "
        "images[0] and images[1] share that id",
    ]
    # b.jpg is read under its own id 2 only, with its one box: none of id 1's boxes on it
    assert [(r.image_id, r.file_name, len(r.boxes)) for r in index.records] == [(2, "b.jpg", 1)]
    assert (index.skipped_images, index.skipped_annotations) == (2, 2)
    # an entry repeated as it was (the same file) is read once, with the id's annotations
    path = _coco(tmp_path, [_ann(1), _ann(2)], images=[_image(1, "a.jpg"), _image(1, "a.jpg")])
    index, caught = _read(read_coco, path, tmp_path)
    assert "images[1]: image id 1 appears twice" in caught[0][1]
    assert [len(r.boxes) for r in index.records] == [2]


def test_coco_categories_of_one_name_are_an_error(tmp_path):
    cats = [{"id": 1, "name": "raccoon"}, {"id": 2, "name": "raccoon"}]
    path = _coco(tmp_path, [_ann(1)], categories=cats)
    with pytest.raises(DataError) as err:
        read_coco(path, tmp_path)
    assert str(err.value) == (
        f"{path}: categories[1] (id 2): the name 'raccoon' is also categories[0]'s (class names "
        "must differ)"
    )


def test_a_coco_json_without_images_says_so(tmp_path):
    path = _coco(tmp_path, [], images=[])
    with pytest.raises(DataError, match=r"instances\.json: lists no images \('images' is empty\)"):
        read_dataset(path)


# ---------------------------------------------------------------- split files


def test_split_ids_that_name_no_image_are_reported_in_one_line(tmp_path):
    root = _raccoon(tmp_path / "voc", 1, 10)
    split = tmp_path / "split.txt"
    split.write_text("raccoon-1\nraccoon-10\nraccoon-999\n")
    index, caught = _read(read_dataset, root, split_file=split)
    assert [r.file_name for r in index.records] == ["raccoon-1.jpg", "raccoon-10.jpg"]
    line = f"{split}: 1 of its 3 ids name no image of {root / 'annotations'} (first: 'raccoon-999')"
    assert caught == [(SkippedSample, f"skipped {line}")] and index.issues == [line]
    assert index.skipped_images == 1
    with pytest.raises(DataError, match="raccoon-999"):
        read_dataset(root, split_file=split, strict=True)


def test_split_ids_that_name_no_image_of_a_csv_dataset_are_reported(tmp_path):
    _raccoon(tmp_path, 1, 10, xml=False)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        "images/raccoon-1.jpg,10,20,110,220,raccoon\n"
        "images/raccoon-10.jpg,10,20,110,220,raccoon\n"
    )
    split = tmp_path / "split.csv"
    split.write_text("filename,class\nraccoon-1.jpg,raccoon\nraccoon-2.jpg,raccoon\nr-3.jpg,x\n")
    index, caught = _read(read_csv, boxes, split_file=split)
    assert [r.file_name for r in index.records] == ["raccoon-1.jpg"]
    assert caught == [
        (
            SkippedSample,
            f"skipped {split}: 2 of its 3 ids name no image of {boxes} (first: 'raccoon-2', 'r-3')",
        )
    ]


def test_a_text_split_may_name_files_and_one_naming_nothing_is_an_error(tmp_path):
    root = _raccoon(tmp_path / "voc", 1, 10)
    split = tmp_path / "split.txt"
    split.write_text("raccoon-1.jpg\nimages/raccoon-10.JPG\n")  # file names: their stems
    index, caught = _read(read_dataset, root, split_file=split)
    assert [r.file_name for r in index.records] == ["raccoon-1.jpg", "raccoon-10.jpg"]
    assert caught == []
    split.write_text("img_1\nimg_2\n")
    with pytest.raises(DataError) as err:
        read_dataset(root, split_file=split)
    assert str(err.value) == (
        f"{split}: none of its 2 ids names an image of {root / 'annotations'} (first: 'img_1', "
        "'img_2'; its images are named like 'raccoon-1')"
    )
    split.write_text("\n\n")
    with pytest.raises(DataError, match=r"split\.txt: lists no image ids"):
        read_dataset(root, split_file=split)


# ---------------------------------------------------------------- nothing listed at all


def test_a_dataset_listing_nothing_says_what_was_wrong(tmp_path):
    header_only = tmp_path / "boxes.csv"
    header_only.write_text("image_path,xmin,ymin,xmax,ymax,label\n")
    with pytest.raises(DataError, match=r"boxes\.csv: lists no images \(a header and no row\)"):
        DataConfig(str(header_only)).read_train()
    # every row malformed: nothing listed, and not "no image could be read"
    header_only.write_text("image_path,xmin,ymin,xmax,ymax,label\na.jpg,1,2\n")
    with pytest.raises(ValueError, match=r"boxes\.csv: lists no images$"):
        _read(DataConfig(str(header_only)).read_train)
    # --format voc on what holds no VOC XML
    coco = _coco(tmp_path, [_ann(1)])
    with pytest.raises(DataError) as err:
        read_dataset(coco, format="voc")
    assert str(err.value) == (
        f"--format voc: {coco} holds no VOC XML (.xml) file (a .json file, not a folder)"
    )
    yolo = _yolo(tmp_path / "yolo", {"a": ""})
    with pytest.raises(DataError, match=r"--format voc: .*data\.yaml holds no VOC XML"):
        read_dataset(yolo, format="voc")
    with pytest.raises(DataError, match=r"yolo holds no VOC XML \(.xml\) file \(looked in the"):
        read_dataset(tmp_path / "yolo", format="voc")


# ---------------------------------------------------------------- VOC XML


def test_voc_xml_files_named_in_upper_case_are_read(tmp_path):
    root = _raccoon(tmp_path, 1, 10)
    xml = root / "annotations" / "raccoon-10.xml"
    xml.rename(xml.with_suffix(".XML"))
    (root / "annotations" / "raccoon-1.xml").unlink()
    assert detect_format(root) == "voc"
    index, caught = _read(read_dataset, root)
    assert [r.file_name for r in index.records] == ["raccoon-10.jpg"] and caught == []


def test_an_xml_that_is_no_voc_annotation_is_skipped(tmp_path):
    root = _raccoon(tmp_path, 1, 10)
    odd = root / "annotations" / "raccoon-10.xml"
    odd.write_text("<foo><bar/></foo>")
    index, caught = _read(read_voc, root / "annotations")
    assert [r.file_name for r in index.records] == ["raccoon-1.jpg"]
    assert caught == [
        (
            SkippedSample,
            f"skipped {odd}: not a VOC annotation (the root is <foo>, not <annotation>)",
        )
    ]


# ---------------------------------------------------------------- YOLO


def _yolo(root: Path, labels: dict[str, str], yaml_text: str | None = None) -> Path:
    """A YOLO dataset: an image and a label file per ``labels`` key (a path under
    ``images/train``, sub-folders allowed)."""
    for stem, text in labels.items():
        image = root / "images" / "train" / f"{stem}.jpg"
        label = root / "labels" / "train" / f"{stem}.txt"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (100, 50)).save(image)
        label.write_text(text)
    (root / "data.yaml").write_text(yaml_text or "path: .\ntrain: images/train\nnames: [a, b]\n")
    return root / "data.yaml"


def test_yolo_images_in_sub_folders_are_read_with_their_mirrored_labels(tmp_path):
    box = "1 0.5 0.5 0.2 0.4\n"
    data_yaml = _yolo(
        tmp_path, {"z": box, "sub/x": box + "1 0.4 0.5 0.2 0.4\n", "sub/deeper/y": "", "c/z": box}
    )
    index, caught = _read(read_yolo, data_yaml)
    found = [(r.image_id, len(r.boxes)) for r in index.records]
    # sorted by path; a stem that repeats is told apart by its path
    assert found == [("images/train/c/z.jpg", 1), ("y", 0), ("x", 2), ("images/train/z.jpg", 1)]
    assert caught == []
    # x.jpg and x.png side by side: two images, two ids (the suffix kept)
    Image.new("RGB", (100, 50)).save(tmp_path / "images" / "train" / "sub" / "x.png")
    index, _ = _read(read_yolo, data_yaml)
    ids = [r.image_id for r in index.records]
    assert len(ids) == len(set(ids)) == 5
    assert {"images/train/sub/x.jpg", "images/train/sub/x.png"} <= set(ids)


def test_a_yolo_list_naming_an_image_twice_reads_it_once(tmp_path):
    data_yaml = _yolo(tmp_path, {"a1": "0 0.5 0.5 0.2 0.4\n"})
    data_yaml.write_text("train: list.txt\nnames: [a, b]\n")
    (tmp_path / "list.txt").write_text("images/train/a1.jpg\n./images/train/a1.jpg\n")
    index, caught = _read(read_yolo, data_yaml)
    assert [r.image_id for r in index.records] == ["a1"]
    assert [str(m) for _, m in caught] == [
        f"{data_yaml} [train]: 1 image(s) listed more than once: each read once"
    ]


def test_yolo_splits_as_lists_of_folders_and_list_files(tmp_path):
    data_yaml = _yolo(tmp_path, {"a1": "0 0.5 0.5 0.2 0.4\n", "b/b1": ""})
    (tmp_path / "images" / "extra").mkdir()
    Image.new("RGB", (100, 50)).save(tmp_path / "images" / "extra" / "e1.jpg")
    data_yaml.write_text("train: [images/train/b, images/extra]\nval: val.txt\nnames: [a, b]\n")
    (tmp_path / "val.txt").write_text("./images/train/a1.jpg\nimages/extra/e1.jpg\n")
    train = read_yolo(data_yaml)
    assert [r.file_name for r in train.records] == ["b1.jpg", "e1.jpg"]
    val = read_yolo(data_yaml, "val")
    assert [(r.file_name, len(r.boxes)) for r in val.records] == [("a1.jpg", 1), ("e1.jpg", 0)]


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        ("train:\nnames: [a, b]\n", "the 'train' key is empty (give an image folder)"),
        ("train: []\nnames: [a, b]\n", "the 'train' key is empty (give an image folder)"),
        ("train: [7]\nnames: [a, b]\n", "'train' gives 7, not an image folder or a list file"),
        ("train: images/train\nnames: [a, null, b]\n", "'names'[1] is null, not a class name"),
        ("train: images/train\nnames: [a, yes]\n", "'names'[1] is true, not a class name"),
        ("train: images/train\nnames: {0: [a]}\n", "'names'[0] is [\"a\"], not a class name"),
        ("path: .\ntrain: images/train\nnames: [a, b\n", "malformed YAML: expected ',' or"),
    ],
)
def test_a_data_yaml_that_cannot_be_read_says_why_in_one_line(tmp_path, yaml_text, problem):
    data_yaml = _yolo(tmp_path, {"a": ""}, yaml_text)
    for path in (data_yaml, tmp_path):  # the file, or the folder holding it
        with pytest.raises(DataError) as err:
            read_dataset(path)
        assert str(err.value).startswith(f"{data_yaml}: {problem}") and "\n" not in str(err.value)


def test_malformed_and_non_utf8_data_yaml_name_the_file_and_the_line(tmp_path):
    data_yaml = _yolo(tmp_path, {"a": ""}, "path: .\ntrain: images/train\nnames: [a, b\n")
    with pytest.raises(DataError) as err:
        read_dataset(tmp_path)
    assert str(err.value) == (
        f"{data_yaml}: malformed YAML: expected ',' or ']', but got '<stream end>', line 4"
    )
    data_yaml.write_bytes(b"train: images/train\nnames: [caf\xe9]\n")
    with pytest.raises(DataError, match=r"data\.yaml: not UTF-8 text \(byte 0xe9 at offset 31\)"):
        read_dataset(tmp_path)


def test_numbers_as_yolo_names_are_read_as_their_text(tmp_path):
    data_yaml = _yolo(
        tmp_path, {"a": "1 0.5 0.5 0.2 0.4\n"}, "train: images/train\nnames: [0, 1]\n"
    )
    assert read_yolo(data_yaml).class_names == ["0", "1"]


def test_a_training_set_of_crowd_regions_only_is_refused(tmp_path):
    # every box an ignore region: nothing positive to learn (it trained, on nothing)
    path = _coco(tmp_path, [_ann(1, iscrowd=1), _ann(2, iscrowd=1)])
    with pytest.raises(ValueError, match=r"no box in its 1 image\(s\) \(crowd regions not"):
        DataConfig(str(path), images=str(tmp_path)).read_train()
    path = _coco(tmp_path, [_ann(1, iscrowd=1), _ann(2)])  # one box to learn from
    assert len(DataConfig(str(path), images=str(tmp_path)).read_train().records) == 1


def test_format_csv_on_a_file_that_is_no_csv_of_boxes_is_one_line(tmp_path):
    # a COCO JSON read with --format csv once warned of each of its lines
    path = _coco(tmp_path, [_ann(1)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=r"^--format csv: .*instances\.json is not a CSV of"):
            read_dataset(path, format="csv")
    assert caught == []
