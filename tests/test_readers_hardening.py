"""Bad datasets give one clear line per skipped sample (or a DataError with ``strict``), never a
traceback; class ids follow the training set's names when given; boxes are clipped or skipped
one by one, not with their image; too large images are reported with the way to allow them."""

import json
import shutil
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from rpnkit.data import DataConfig, DataError, images, load_rgb, read_dataset
from rpnkit.data.coco import read_coco
from rpnkit.data.images import allow_large_images
from rpnkit.data.records import DataNote, DatasetIndex, SkippedSample, image_size
from rpnkit.data.voc import read_voc
from rpnkit.data.yolo import read_yolo, yolo_label_path

RACCOON_IMAGES = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon" / "images"
)


def _read_quietly(reader, *args, **kwargs):
    """The index and the warnings the reader gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = reader(*args, **kwargs)
    return index, caught


def _assert_one_line(tmp_path, reader, args, kwargs, *fragments):
    """The reader skips exactly one thing, in one issue line and one SkippedSample warning
    holding every fragment; with strict it raises a DataError holding them."""
    index, caught = _read_quietly(reader, *args, **kwargs)
    assert len(index.issues) == 1, index.issues
    assert [w.category for w in caught] == [SkippedSample]
    assert str(caught[0].message) == f"skipped {index.issues[0]}"
    for fragment in fragments:
        assert fragment in index.issues[0], (fragment, index.issues[0])
    with pytest.raises(DataError) as err:
        reader(*args, **kwargs, strict=True)
    for fragment in fragments:
        assert fragment in str(err.value)
    return index


# ---------------------------------------------------------------- COCO


def _coco(tmp_path: Path, annotations, images=None, categories=None, size=(50, 40)) -> Path:
    Image.new("RGB", size).save(tmp_path / "a.jpg")
    data = {
        "images": images or [{"id": 1, "file_name": "a.jpg", "width": size[0], "height": size[1]}],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def _ann(i, bbox=(1, 1, 10, 10), category=1, image=1, **extra):
    return {"id": i, "image_id": image, "category_id": category, "bbox": bbox, **extra}


GOOD = _ann(1, [2, 3, 10, 10])


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ({**_ann(2), "bbox": None}, "bbox is null"),
        ({k: v for k, v in _ann(2).items() if k != "bbox"}, "no 'bbox'"),
        (_ann(2, bbox="1,1,10,10"), 'bbox "1,1,10,10" is not a list'),
        (_ann(2, bbox=[1, 1, 10]), "bbox [1, 1, 10] has 3 values, not 4"),
        (_ann(2, bbox=[1, 1, "ten", 10]), "has a non-numeric value"),
        (_ann(2, bbox=[1, 1, None, 10]), "has a non-numeric value"),
        (_ann(2, category=99), "unknown category 99"),
        (_ann(2, area="big"), "'area' \"big\" is not a number"),
        (_ann(2, bbox=[float("nan"), 1, 10, 10]), "NaN or infinite"),
        (_ann(2, bbox=[1, 1, float("inf"), 10]), "NaN or infinite"),
        (_ann(2, bbox=[5, 5, -3, 10]), "empty or inverted"),
        (_ann(2, bbox=[5, 5, 0, 10]), "empty or inverted"),
        (_ann(2, bbox=[60, 5, 10, 10]), "out of bounds of the 50x40 image"),
    ],
)
def test_a_bad_coco_annotation_is_skipped_alone(tmp_path, bad, problem):
    json_path = _coco(tmp_path, [GOOD, bad])
    index = _assert_one_line(
        tmp_path, read_coco, (json_path, tmp_path), {}, str(json_path), "annotations[1]", problem
    )
    assert "(id 2, image a.jpg)" in index.issues[0]
    # the image keeps its good box
    assert [r.boxes.tolist() for r in index.records] == [[[2, 3, 12, 13]]]
    assert index.skipped_annotations == 1 and index.skipped_images == 0
    assert "1 annotation(s) skipped" in index.summary()


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ({"file_name": "a.jpg", "width": 50, "height": 40}, "no 'id'"),
        ({"id": 1, "width": 50, "height": 40}, "no 'file_name'"),
        ({"id": 1, "file_name": "a.jpg", "height": 40}, "no 'width' (a.jpg)"),
        ({"id": 1, "file_name": "a.jpg", "width": 50}, "no 'height' (a.jpg)"),
        ({"id": 1, "file_name": "a.jpg", "width": "wide", "height": 40}, "'width' \"wide\""),
        ({"id": [1], "file_name": "a.jpg", "width": 50, "height": 40}, "'id' [1]"),
        ("a.jpg", 'expected an object, got "a.jpg"'),
    ],
)
def test_a_malformed_coco_image_entry_is_skipped_with_its_index(tmp_path, image, problem):
    has_id = isinstance(image, dict) and image.get("id") == 1
    json_path = _coco(tmp_path, [GOOD] if has_id else [], images=[image])
    index = _assert_one_line(
        tmp_path, read_coco, (json_path, tmp_path), {}, f"{json_path}: images[0]", problem
    )
    assert index.records == [] and index.skipped_images == 1
    # its annotations go with it: not reported again as refering to an unknown image
    assert "unknown image ids" not in "\n".join(index.issues)


@pytest.mark.parametrize(
    ("categories", "problem"),
    [
        ([{"id": 1}], "categories[0] (id 1): no 'name'"),
        ([{"id": 1, "name": ""}], "categories[0] (id 1): 'name' \"\""),
        ([{"name": "cat"}], "categories[0]: no 'id'"),
        ([{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}], "category id 1 appears twice"),
        (["cat"], 'categories[0]: expected an object, got "cat"'),
    ],
)
def test_malformed_coco_categories_are_an_error_naming_the_entry(tmp_path, categories, problem):
    json_path = _coco(tmp_path, [GOOD], categories=categories)
    with pytest.raises(DataError) as err:
        read_coco(json_path, tmp_path)  # the class ids depend on them: even without strict
    assert str(err.value).startswith(str(json_path)) and problem in str(err.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"images": [], "annotations": {}, "categories": []}, "'annotations' must be a list"),
        ({"images": [], "annotations": None, "categories": []}, "'annotations' must be a list"),
        ({"images": [], "categories": []}, "no 'annotations' list"),
        ([1, 2], "not COCO instances JSON"),
    ],
)
def test_a_json_that_is_not_coco_is_an_error(tmp_path, content, problem):
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=problem) as err:
        read_coco(json_path, tmp_path)
    assert str(err.value).startswith(str(json_path))


def test_annotations_that_are_not_objects_or_lack_an_image_id_are_skipped(tmp_path):
    json_path = _coco(tmp_path, [GOOD, [1, 2], {"id": 5, "bbox": [1, 1, 2, 2]}])
    index, _ = _read_quietly(read_coco, json_path, tmp_path)
    assert index.issues == [
        f"{json_path}: annotations[1]: expected an object, got [1, 2]",
        f"{json_path}: annotations[2]: no 'image_id'",
    ]
    assert len(index.records[0].boxes) == 1


def test_annotations_of_unknown_images_are_counted_in_one_line(tmp_path):
    anns = [GOOD, _ann(2, image=999), _ann(3, image=1000), _ann(4, image=999)]
    json_path = _coco(tmp_path, anns)
    index = _assert_one_line(
        tmp_path,
        read_coco,
        (json_path, tmp_path),
        {},
        f"{json_path}: 3 annotation(s) refer to unknown image ids (first: 999)",
    )
    assert len(index.records[0].boxes) == 1
    assert index.summary().endswith("1 image, 2 classes, 3 annotation(s) skipped")


def test_coco_boxes_partly_outside_are_clipped_and_counted(tmp_path):
    anns = [
        GOOD,
        _ann(2, [40, 30, 30, 30]),  # overshoots right and bottom by 20: clipped
        _ann(3, [-0.5, 0, 10, 10.8]),  # within the 1-pixel tolerance: clipped silently
        _ann(4, [-20, 5, 25, 10], area=99.0),  # the annotation's area is kept
        _ann(5, [55, 5, 10, 10]),  # wholly outside: skipped
    ]
    json_path = _coco(tmp_path, anns)
    index, caught = _read_quietly(read_coco, json_path, tmp_path)
    r = index.records[0]
    expected = [[2, 3, 12, 13], [40, 30, 50, 40], [0, 0, 9.5, 10.8], [0, 5, 5, 15]]
    np.testing.assert_allclose(r.boxes, expected, rtol=1e-6)
    assert r.areas.tolist() == pytest.approx([100, 100, 10 * 10.8, 99])  # box area when unknown
    assert len(index.clipped) == 2 and "annotations[1] (id 2, image a.jpg)" in index.clipped[0]
    assert "overshoots the 50x40 image; clipped to (40.0, 30.0, 50.0, 40.0)" in index.clipped[0]
    assert len(index.issues) == 1 and "annotations[4]" in index.issues[0]
    assert len(caught) == 1  # clipping warns nothing; it is counted
    assert index.summary().endswith("1 annotation(s) skipped, 2 box(es) clipped")
    # strict stops at skips, not at clipping
    only_clipped = _coco(tmp_path, anns[:4])
    assert len(read_coco(only_clipped, tmp_path, strict=True).clipped) == 2


def test_an_unknown_category_keeps_the_other_boxes(tmp_path):
    json_path = _coco(tmp_path, [_ann(1, category=99), GOOD])
    index, _ = _read_quietly(read_coco, json_path, tmp_path)
    assert index.records[0].labels.tolist() == [1]
    assert index.issues == [f"{json_path}: annotations[0] (id 1, image a.jpg): unknown category 99"]


# ---------------------------------------------------------------- class names by name


def test_coco_class_names_map_labels_by_name(tmp_path):
    categories = [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}, {"id": 7, "name": "bird"}]
    anns = [_ann(1, category=1), _ann(2, category=3), _ann(3, category=7)]
    json_path = _coco(tmp_path, anns, categories=categories)
    default = read_coco(json_path, tmp_path)  # as before: categories sorted by id
    assert default.class_names == ["cat", "dog", "bird"]
    assert default.records[0].labels.tolist() == [1, 2, 3]
    index = _assert_one_line(
        tmp_path,
        read_coco,
        (json_path, tmp_path),
        {"class_names": ["dog", "cat"]},
        "annotations[2] (id 3, image a.jpg)",
        "unknown class 'bird' (category 7; known: 'dog', 'cat')",
    )
    assert index.class_names == ["dog", "cat"]
    assert index.records[0].labels.tolist() == [2, 1]


def _voc(root: Path, stem: str, objects: str, size=(100, 80)) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    Image.new("RGB", size).save(root / "images" / f"{stem}.jpg")
    (root / "annotations" / f"{stem}.xml").write_text(
        f"<annotation><filename>{stem}.jpg</filename>{objects}</annotation>"
    )


def _obj(name="cat", box=(11, 11, 50, 40)):
    x1, y1, x2, y2 = box
    name_tag = "" if name is None else f"<name>{name}</name>"
    return (
        f"<object>{name_tag}<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
        f"<ymax>{y2}</ymax></bndbox></object>"
    )


def test_a_validation_split_without_a_class_keeps_the_training_ids(tmp_path):
    # the raccoon images, with a second class: the validation split holds only "raccoon"
    train, val = tmp_path / "train", tmp_path / "val"
    _voc(train, "a", _obj("raccoon") + _obj("dog"))
    _voc(val, "b", _obj("raccoon"))
    shutil.copy(sorted(RACCOON_IMAGES.glob("*.jpg"))[0], val / "images" / "b.jpg")
    train_index = read_dataset(train)
    assert train_index.class_names == ["dog", "raccoon"]
    assert read_dataset(val).records[0].labels.tolist() == [1]  # the split's own ids: wrong
    fixed = read_dataset(val, class_names=train_index.class_names)
    assert fixed.class_names == ["dog", "raccoon"]
    assert fixed.records[0].labels.tolist() == [2]  # "raccoon" as in training
    index = _assert_one_line(
        tmp_path,
        read_voc,
        (val / "annotations",),
        {"class_names": ["dog"]},
        f"{val / 'annotations' / 'b.xml'} object 0: unknown class 'raccoon' (known: 'dog')",
    )
    assert [len(r.boxes) for r in index.records] == [0]


def test_yolo_class_names_map_labels_by_name(tmp_path):
    data_yaml = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.4\n1 0.5 0.5 0.2 0.4\n2 0.5 0.5 0.2 0.4\n"})
    default = read_yolo(data_yaml)
    assert default.class_names == ["dog", "cat", "bird"]
    assert default.records[0].labels.tolist() == [1, 2, 3]
    label_file = tmp_path / "labels" / "train" / "a.txt"
    index = _assert_one_line(
        tmp_path,
        read_yolo,
        (data_yaml,),
        {"class_names": ["cat", "dog"]},
        f"{label_file} line 3",
        "unknown class 'bird' (index 2; known: 'cat', 'dog')",
    )
    assert index.class_names == ["cat", "dog"]
    assert index.records[0].labels.tolist() == [2, 1]
    by_path = read_dataset(data_yaml, class_names=["bird", "cat", "dog"])
    assert by_path.records[0].labels.tolist() == [3, 2, 1]


@pytest.mark.parametrize(
    ("class_names", "problem"),
    [("cat", "the string 'cat'"), ([], "non-empty list"), (["cat", "cat"], "more than once")],
)
def test_bad_class_names_are_an_error(tmp_path, class_names, problem):
    json_path = _coco(tmp_path, [GOOD])
    with pytest.raises(DataError, match=problem):
        read_coco(json_path, tmp_path, class_names=class_names)


# ---------------------------------------------------------------- VOC


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (_obj(name=None), "object 1: no <name>"),
        (_obj(name="  "), "object 1: no <name>"),
        ("<object><name>cat</name></object>", "object 1 (cat): missing or non-numeric bndbox"),
        (_obj(box=(1, 2, "", 4)), "object 1 (cat): missing or non-numeric bndbox (no <xmax>)"),
        (
            _obj(box=(1, "two", 3, 4)),
            "object 1 (cat): missing or non-numeric bndbox (<ymin> 'two')",
        ),
        (_obj(box=(1, 2, 3, "nan")), "object 1 (cat): box (0.0, 1.0, 3.0, nan) has a NaN"),
        (_obj(box=(200, 2, 300, 40)), "object 1 (cat): box (199.0, 1.0, 300.0, 40.0) is out of"),
    ],
)
def test_a_bad_voc_object_is_skipped_alone(tmp_path, bad, problem):
    _voc(tmp_path, "a", _obj() + bad + _obj("dog"))
    xml = tmp_path / "annotations" / "a.xml"
    index = _assert_one_line(tmp_path, read_voc, (tmp_path / "annotations",), {}, str(xml), problem)
    assert index.class_names == ["cat", "dog"]  # no class named ''
    assert index.records[0].labels.tolist() == [1, 2]
    assert index.records[0].boxes.tolist() == [[10, 10, 50, 40], [10, 10, 50, 40]]


def test_voc_boxes_partly_outside_are_clipped_and_counted(tmp_path):
    _voc(tmp_path, "a", _obj(box=(50, 40, 300, 200)) + _obj(box=(1, 1, 101, 80)))
    index = read_voc(tmp_path / "annotations", strict=True)
    assert index.records[0].boxes.tolist() == [[49, 39, 100, 80], [0, 0, 100, 80]]
    assert index.records[0].areas.tolist() == [51 * 41, 100 * 80]
    assert len(index.clipped) == 1 and "a.xml: object 0 (cat): box" in index.clipped[0]
    assert index.summary().endswith("1 image, 1 class, 1 box(es) clipped")


# ---------------------------------------------------------------- YOLO


def _yolo(root: Path, labels: dict[str, str], names="[dog, cat, bird]") -> Path:
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        Image.new("RGB", (100, 50)).save(root / "images" / "train" / f"{stem}.jpg")
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nnames: {names}\n")
    return root / "data.yaml"


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("0 0.5 0.5 0.2", "got 4 fields"),
        ("0 0.5 0.5 0.2 0.4 0.1 0.1", "got 7 fields"),
        ("0 0.5 0.5 wide 0.4", "got a non-numeric value"),
        ("cat 0.5 0.5 0.2 0.4", "got the class 'cat'"),
        ("3 0.5 0.5 0.2 0.4", "unknown class 3 (data.yaml names 3: 0..2)"),
        ("-1 0.5 0.5 0.2 0.4", "unknown class -1"),
        ("0 nan 0.5 0.2 0.4", "NaN or infinite"),
        ("0 0.5 0.5 0 0.4", "empty or inverted"),
        ("0 1.5 0.5 0.2 0.4", "out of bounds of the 100x50 image"),
    ],
)
def test_a_bad_yolo_line_is_skipped_with_its_line_number(tmp_path, bad, problem):
    data_yaml = _yolo(tmp_path, {"a": f"0 0.5 0.5 0.2 0.4\n\n{bad}\n1 0.5 0.5 0.2 0.4\n"})
    label_file = tmp_path / "labels" / "train" / "a.txt"
    index = _assert_one_line(tmp_path, read_yolo, (data_yaml,), {}, f"{label_file} line 3", problem)
    assert index.records[0].labels.tolist() == [1, 2]  # the other lines are kept


def test_yolo_boxes_partly_outside_are_clipped_and_an_unreadable_label_file_skipped(tmp_path):
    data_yaml = _yolo(tmp_path, {"a": "0 0.9 0.5 0.4 0.4\n", "b": ""})
    (tmp_path / "labels" / "train" / "b.txt").write_bytes(b"\xff\xfe\x00bad")
    index, _ = _read_quietly(read_yolo, data_yaml)
    assert index.records[0].boxes.tolist() == [[70, 15, 100, 35]]
    assert len(index.clipped) == 1 and "a.txt line 1" in index.clipped[0]
    assert len(index.issues) == 1 and "b.txt: unreadable label file" in index.issues[0]
    assert index.summary().endswith("1 image(s) skipped, 1 box(es) clipped")


# ---------------------------------------------------------------- large images


def test_too_large_images_are_a_clear_error_and_can_be_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 60)).save(path)  # 6000 pixels, over twice a limit of 2000
    allow_large_images(2000)
    assert Image.MAX_IMAGE_PIXELS == 2000
    for read in (load_rgb, image_size):
        with pytest.raises(DataError) as err:
            read(path)
        message = str(err.value)
        assert message.startswith(f"{path}: image of 6,000 pixels is over Pillow's limit")
        assert "rpnkit.data.images.allow_large_images(None)" in message
        assert "--max-image-pixels 0" in message
    # a reader skips it with that line
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    shutil.copy(path, tmp_path / "images" / "big.png")
    (tmp_path / "annotations" / "big.xml").write_text(
        "<annotation><filename>big.png</filename>" + _obj() + "</annotation>"
    )
    index = _assert_one_line(
        tmp_path, read_voc, (tmp_path / "annotations",), {}, "big.png: image of 6,000 pixels"
    )
    assert index.records == [] and "1 image(s) skipped" in index.summary()
    allow_large_images(None)
    assert Image.MAX_IMAGE_PIXELS is None
    assert load_rgb(path).shape == (60, 100, 3) and image_size(path) == (100, 60)
    assert len(read_voc(tmp_path / "annotations").records) == 1
    allow_large_images(0)  # 0 is "no limit" too, as --max-image-pixels 0
    assert Image.MAX_IMAGE_PIXELS is None
    with pytest.raises(ValueError, match="max_pixels"):
        allow_large_images(-1)


# ---------------------------------------------------------------- warnings and summary


def test_skip_warnings_are_skipped_samples_pointing_at_the_caller(tmp_path):
    assert issubclass(SkippedSample, UserWarning)
    json_path = _coco(tmp_path, [GOOD, _ann(2, bbox=None)])
    (tmp_path / "images").mkdir()
    shutil.copy(tmp_path / "a.jpg", tmp_path / "images" / "a.jpg")
    with pytest.warns(SkippedSample) as caught:
        read_dataset(json_path)  # through read_dataset: still this file's line
    assert [Path(w.filename).name for w in caught] == ["test_readers_hardening.py"]


def test_summary_tells_skipped_images_from_skipped_annotations():
    index = DatasetIndex([], ["a"], ["x"] * 3, "d", 1, 5, ["c"] * 2)
    assert index.summary() == (
        "d: 0 images, 1 class, 1 image(s) and 5 annotation(s) skipped, 2 box(es) clipped"
    )
    # an index built without the counts (plain images): every issue is an image
    assert (
        DatasetIndex([], [], ["x", "y"], "d").summary()
        == "d: 0 images, 0 classes, 2 image(s) skipped"
    )
    assert DatasetIndex([], [], [], "d").summary() == "d: 0 images, 0 classes"


def test_good_data_gives_no_issue_and_no_clipping(tmp_path):
    json_path = _coco(tmp_path, [GOOD, _ann(2, [0, 0, 50, 40], category=2)])
    index = read_coco(json_path, tmp_path, strict=True)
    assert not index.issues and not index.clipped
    assert index.summary() == f"{json_path}: 1 image, 2 classes"
    np.testing.assert_array_equal(index.records[0].labels, [1, 2])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data).to_bytes(4, "big")
    return len(data).to_bytes(4, "big") + kind + data + crc


def _turned_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn: displayed 20 x 30 for 30 x 20 pixels
    return exif.tobytes()


def _png_with_exif_after_the_pixels(path: Path) -> None:
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    data = path.read_bytes()
    end = data.rindex(b"IEND") - 4  # the IEND chunk's length field
    path.write_bytes(data[:end] + _png_chunk(b"eXIf", _turned_exif()) + data[end:])


def _png_with_xmp(path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    xmp = '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    info.add_itxt("XML:com.adobe.xmp", xmp)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path, pnginfo=info)


@pytest.mark.parametrize(
    "write",
    [
        lambda p: Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(p, exif=_turned_exif()),
        _png_with_exif_after_the_pixels,
        _png_with_xmp,
    ],
    ids=["exif-chunk", "exif-after-the-pixels", "xmp"],
)
def test_a_png_turned_by_its_metadata_is_sized_as_displayed(tmp_path, write):
    path = tmp_path / "turned.png"
    write(path)
    assert load_rgb(path).shape == (30, 20, 3)  # as Pillow's exif_transpose turns it
    assert image_size(path) == (20, 30)


def test_a_png_without_metadata_is_sized_without_decoding_its_pixels(tmp_path, monkeypatch):
    # Pillow decodes a whole PNG to look for EXIF that may follow the pixels; a folder of
    # photographs as PNG was read twice over before the run began

    path = tmp_path / "plain.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    assert image_size(path) == (30, 20)


def test_a_png_cut_short_is_still_reported_when_sized(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"cut\.png: unreadable image"):
        image_size(path)


def test_coco_sizes_that_differ_from_the_files_are_said_once(tmp_path):
    # annotations made for a resized copy: the boxes are read as the file's pixels, and a line
    # says that the sizes disagree (clipping alone would hide it)
    images = [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}]  # the file: 50x40
    json_path = _coco(tmp_path, [GOOD], images=images)
    with pytest.warns(DataNote) as caught:
        index = read_coco(json_path, tmp_path)
    assert [str(w.message) for w in caught] == [
        f"{json_path}: 1 image(s) of another size in the annotations than in the file (first: "
        "a.jpg: "
        "100x80, file 50x40); the boxes are read as the file's pixels"
    ]
    assert (index.records[0].width, index.records[0].height) == (50, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_coco(_coco(tmp_path, [GOOD]), tmp_path)  # sizes that agree: nothing said


def test_images_whose_every_box_was_skipped_are_counted_in_the_summary(tmp_path):
    # kept as images of background (the documented policy), and said so: an object the data
    # holds but whose box was bad would otherwise be learnt as background unnoticed
    bad = _ann(2, bbox=[10, 10, -5, 5])  # an inverted box, the image's only one
    (tmp_path / "coco").mkdir()
    json_path = _coco(tmp_path / "coco", [bad])
    yolo = _yolo(tmp_path / "yolo", {"a": "0 0.5 0.5 0.2 0.4\n", "b": "0 0.5 0.5 nan 0.4\n"})
    csv = tmp_path / "boxes.csv"
    Image.new("RGB", (50, 40)).save(tmp_path / "c.jpg")
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\nc.jpg,30,5,10,20,cat\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        indexes = [read_coco(json_path, tmp_path / "coco"), read_yolo(yolo), read_dataset(csv)]
    for index in indexes:
        assert index.bare == 1 and index.summary().endswith(
            "1 annotation(s) skipped (1 image(s) left without a box, kept as background)"
        )
        assert sum(len(r.boxes) == 0 for r in index.records) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_yolo(_yolo(tmp_path / "good", {"a": ""})).bare == 0  # no box to lose


# ---------------------------------------------------------------- data audit (session 14)


def test_yolo_labels_sit_under_the_last_images_folder_of_the_path(tmp_path):
    # a parent named images_here (or images itself) must not be taken for the images folder
    data_yaml = _yolo(tmp_path / "images" / "images_here", {"a": "0 0.5 0.5 0.2 0.4\n"})
    index, caught = _read_quietly(read_yolo, data_yaml)
    assert caught == [] and index.records[0].labels.tolist() == [1]
    image = Path("/d/images/x/images/train/a.jpg")
    assert yolo_label_path(image) == Path("/d/images/x/labels/train/a.txt")
    assert yolo_label_path(Path("/d/photos/a.png")) == Path("/d/photos/a.txt")  # beside it


def test_yolo_without_any_label_file_says_so_and_training_on_it_is_refused(tmp_path):
    data_yaml = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.4\n", "b": ""})
    shutil.rmtree(tmp_path / "labels")
    index, caught = _read_quietly(read_yolo, data_yaml)
    assert [w.category for w in caught] == [DataNote]
    assert str(caught[0].message) == (
        f"{data_yaml} [train]: no label file for any of its 2 images (the first looked for: "
        f"{tmp_path / 'labels' / 'train' / 'a.txt'}): every image is background"
    )
    assert len(index.records) == 2  # images to detect on, without boxes
    refused = r"no box in its 2 image\(s\) \(crowd regions not counted\): nothing to train on"
    with pytest.raises(ValueError, match=refused), pytest.warns(DataNote, match="no label file"):
        DataConfig(str(data_yaml)).read_train()


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ("{0: dog, 2: bird}", {"0 0.5 0.5 0.2 0.4": "dog", "2 0.5 0.5 0.2 0.4": "bird"}),
        ("{'0': a, '1': b, '2': c, '10': k, '9': j}", {"9 0.5 0.5 0.2 0.4": "j"}),
    ],
)
def test_yolo_names_as_a_mapping_take_their_ids_from_the_keys(tmp_path, names, expected):
    lines = {f"i{n}": line + "\n" for n, line in enumerate(expected)}
    lines["gap"] = "1 0.5 0.5 0.2 0.4\n"  # id 1: a class the first mapping skips
    index, caught = _read_quietly(read_yolo, _yolo(tmp_path, lines, names=names))
    by_stem = {r.path.stem: r for r in index.records}
    for n, name in enumerate(expected.values()):
        (label,) = by_stem[f"i{n}"].labels.tolist()
        assert index.class_names[label - 1] == name
    if names.startswith("{0"):
        assert index.class_names == ["dog", "bird"]
        assert [str(w.message) for w in caught] == [
            f"skipped {tmp_path / 'labels' / 'train' / 'gap.txt'} line 1: unknown class 1 "
            "(data.yaml names 2: 0, 2)"
        ]
    else:
        assert index.class_names == ["a", "b", "c", "j", "k"]  # 9 before 10


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ("[red, red, blue]", r"'names' names \['red'\] more than once"),
        ("{0: a, '0': b}", r"'names' gives class 0 twice"),
        ("{a: x}", r"'names' keys must be class numbers, got 'a'"),
    ],
)
def test_yolo_names_that_cannot_name_classes_stop_naming_data_yaml(tmp_path, names, problem):
    data_yaml = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.4\n"}, names=names)
    with pytest.raises(DataError, match=f"{data_yaml}: {problem}"):
        read_yolo(data_yaml)


def test_an_image_listed_twice_is_read_once_with_every_listings_boxes(tmp_path):
    images = [
        {"id": 14, "file_name": "a.jpg", "width": 50, "height": 40},
        {"id": 15, "file_name": "a.jpg", "width": 50, "height": 40},
    ]
    json_path = _coco(
        tmp_path,
        [_ann(1, [2, 3, 10, 10], image=14), _ann(2, [20, 20, 5, 5], image=15)],
        images=images,
    )
    index, caught = _read_quietly(read_coco, json_path, tmp_path)
    assert [str(w.message) for w in caught] == [
        f"{json_path}: 1 listing(s) of an image listed before (first: a.jpg as 14 and 15): "
        "each image is read once, under its first id, with the boxes of every listing"
    ]
    (record,) = index.records
    assert record.image_id == 14 and record.boxes.tolist() == [[2, 3, 12, 13], [20, 20, 25, 25]]
    # listings that repeat their annotations too (concatenated files): each box once
    same = [_ann(1, [2, 3, 10, 10], image=14), _ann(2, [2, 3, 10, 10], image=15)]
    index, _ = _read_quietly(read_coco, _coco(tmp_path, same, images=images), tmp_path)
    assert index.records[0].boxes.tolist() == [[2, 3, 12, 13]]
    # VOC: two XML files naming one image
    _voc(tmp_path / "voc", "b", _obj("cat"))
    (tmp_path / "voc" / "annotations" / "b_again.xml").write_text(
        f"<annotation><filename>b.jpg</filename>{_obj('dog', (1, 1, 9, 9))}</annotation>"
    )
    index, caught = _read_quietly(read_voc, tmp_path / "voc" / "annotations")
    (record,) = index.records
    assert len(record.boxes) == 2 and sorted(record.labels.tolist()) == [1, 2]
    assert "as 'b' and 'b_again'" in str(caught[0].message)


def test_a_voc_size_that_differs_from_the_file_is_said_once(tmp_path):
    size = "<size><width>200</width><height>160</height><depth>3</depth></size>"
    _voc(tmp_path, "a", size + _obj("cat"))  # the file is 100x80
    _voc(tmp_path, "b", "<size><width>0</width><height>0</height></size>" + _obj("cat"))
    _, caught = _read_quietly(read_voc, tmp_path / "annotations")
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 'annotations'}: 1 image(s) of another size in the annotations than in "
        "the file (first: a.jpg: 200x160, file 100x80); the boxes are read as the file's pixels"
    ]  # a size of 0, as some tools write, says nothing


def test_byte_order_marks_and_a_true_difficult_flag_are_read(tmp_path):
    data_yaml = _yolo(tmp_path / "yolo", {"a": "\ufeff0 0.5 0.5 0.2 0.4\r\n"})
    index, caught = _read_quietly(read_yolo, data_yaml)
    assert caught == [] and index.records[0].labels.tolist() == [1]
    json_path = _coco(tmp_path, [GOOD])
    json_path.write_text("\ufeff" + json_path.read_text())
    assert len(read_coco(json_path, tmp_path).records[0].boxes) == 1
    difficult = _obj("cat").replace("</object>", "<difficult>true</difficult></object>")
    _voc(tmp_path / "voc", "a", difficult)
    assert read_voc(tmp_path / "voc" / "annotations").records[0].ignore.tolist() == [True]


# ---------------------------------------------------------------- shrinking huge images
#
# Overlays draw a 14000 x 13000 image 1600 pixels across: load_rgb(path, max_side) used to
# decode it whole, copy it upright and convert it to RGB (16-bit images through float64) before
# shrinking, 2.9 GB at the peak. It now converts and reduces it a strip of rows at a time (a PNG
# is even decoded so), and must give the pixels that shrinking the full-size image gives.


def _thumbnail_of_full_size(path: Path, max_side: int) -> np.ndarray:
    """What load_rgb(path, max_side) stands for: the full-size displayed RGB image, shrunk by
    Pillow's thumbnail."""
    shown = Image.fromarray(load_rgb(path))
    shown.thumbnail((max_side, max_side))
    return np.array(shown)


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


def _in_mode(mode: str, rgb: np.ndarray) -> Image.Image:
    """A (H, W) image of ``mode`` with every pixel value in use, from (H, W, 3) uint8 noise."""
    if mode == "P-transparency":
        img = Image.fromarray(rgb).quantize(30)
        img.info["transparency"] = 3
        return img
    made = {
        "RGB": lambda: Image.fromarray(rgb),
        "L": lambda: Image.fromarray(rgb[..., 0]),
        "LA": lambda: Image.fromarray(np.ascontiguousarray(rgb[..., :2])),
        "RGBA": lambda: Image.fromarray(np.dstack([rgb, rgb[..., 0]])),
        "P": lambda: Image.fromarray(rgb).quantize(200),
        "1": lambda: Image.fromarray(rgb[..., 0] > 127),
        "I;16": lambda: Image.fromarray((rgb[..., 0].astype(np.uint16) << 8) | rgb[..., 1]),
        "I": lambda: Image.fromarray(rgb[..., 0].astype(np.int32) * 3),
        "F": lambda: Image.fromarray(rgb[..., 0].astype(np.float32) / 7 - 3),
        "CMYK": lambda: Image.fromarray(rgb).convert("CMYK"),
    }
    return made[mode]()


@pytest.mark.parametrize(
    "mode, suffix",
    [(m, ".png") for m in ("RGB", "L", "LA", "RGBA", "P", "P-transparency", "1", "I;16")]
    + [(m, ".tif") for m in ("RGB", "LA", "RGBA", "P", "1", "I;16", "I", "F", "CMYK")],
)
@pytest.mark.parametrize("max_side", [5, 9, 16])
def test_a_shrunk_image_is_the_full_size_image_shrunk(
    tmp_path, monkeypatch, mode, suffix, max_side
):
    # palette and 1-bit images were shrunk by nearest neighbour, RGBA and LA by their colours
    # weighted by alpha (which the full-size image drops), CMYK before it became RGB, "I" and
    # "F" scaled to 8 bits by the range of the shrunk values: the full-size picture, shrunk, is
    # the reference for every mode now
    monkeypatch.setattr(images, "_STRIP_PIXELS", 64)  # strips of a few rows
    path = tmp_path / f"a{suffix}"
    _in_mode(mode, _noise((53, 37, 3))).save(path)  # 37 x 53: reduced blocks overhang both
    shrunk = load_rgb(path, max_side=max_side)
    np.testing.assert_array_equal(shrunk, _thumbnail_of_full_size(path, max_side))
    assert max(shrunk.shape[:2]) == max_side


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    "mode, suffix", [("RGB", ".png"), ("I;16", ".png"), ("P", ".png"), ("RGB", ".tif")]
)
def test_a_shrunk_image_is_turned_by_its_exif_as_the_full_size_one(
    tmp_path, monkeypatch, orientation, mode, suffix
):
    # 37 x 53, turned: strips of stored columns, taken from the far side for 3, 4, 7 and 8;
    # a TIFF is turned by Pillow as it is decoded
    monkeypatch.setattr(images, "_STRIP_PIXELS", 64)
    path = tmp_path / f"turned{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    _in_mode(mode, _noise((53, 37, 3), seed=orientation)).save(path, exif=exif.tobytes())
    for max_side in (5, 9, 16):
        expected = _thumbnail_of_full_size(path, max_side)
        np.testing.assert_array_equal(load_rgb(path, max_side=max_side), expected)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_shrunk_jpeg_is_drafted_then_shrunk_as_before(tmp_path, orientation):
    # a JPEG decodes at 1/2, 1/4 or 1/8 scale (here 1/4: 100 x 75 still covers 90 x 68)
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    smooth = np.linspace(0, 255, 300 * 400 * 3).reshape(300, 400, 3).astype(np.uint8)
    Image.fromarray(smooth).save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as img:
        img.draft(None, (90, 68))
        expected = ImageOps.exif_transpose(img)
    expected.thumbnail((90, 90))
    np.testing.assert_array_equal(load_rgb(path, max_side=90), np.array(expected))


def test_the_shrunk_size_is_pillows_thumbnail_size():
    for width in range(1, 60):
        for height in range(1, 60):
            img = Image.new("1", (width, height))
            img.thumbnail((16, 16))
            assert images._thumbnail_size(width, height, 16) == img.size, (width, height)


def test_a_large_image_is_never_turned_or_converted_whole(tmp_path, monkeypatch):
    # the full-size image was copied upright, then converted (a 16-bit one through float64);
    # each Pillow copy of it is caught here by its size
    path = tmp_path / "scan.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn
    _in_mode("I;16", _noise((53, 37, 3))).save(path, exif=exif.tobytes())
    expected = _thumbnail_of_full_size(path, 9)
    monkeypatch.setattr(images, "_STRIP_PIXELS", 64)
    sizes = []

    def spy_on(name):
        original = getattr(Image.Image, name)

        def spy(self, *args, **kwargs):
            sizes.append((self.width * self.height, name))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Image.Image, name, spy)

    for name in ("convert", "copy", "transpose", "tobytes", "resize", "reduce"):
        spy_on(name)
    np.testing.assert_array_equal(load_rgb(path, max_side=9), expected)
    assert {name for _, name in sizes} >= {"reduce", "resize"}
    assert max(sizes)[0] <= 53 * 37 // 4, max(sizes)


# A PNG is decoded strip by strip: each strip is unfiltered against the last row of the one
# above. Pillow's own encoder favours few filter types, so these PNGs are written here with all
# five in turn, and their pixel data over many IDAT chunks.

_ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def _png_filter(kind: int, row: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """The PNG filter type ``kind`` (0 none, 1 sub, 2 up, 3 average, 4 Paeth) applied to one
    scanline ``row`` (int bytes) below the scanline ``above``; ``bpp``: bytes per pixel."""
    left = np.concatenate([np.zeros(bpp, int), row[:-bpp]])
    upper_left = np.concatenate([np.zeros(bpp, int), above[:-bpp]])
    if kind == 4:
        guess = left + above - upper_left
        near_a, near_b, near_c = abs(guess - left), abs(guess - above), abs(guess - upper_left)
        nearest_bc = np.where(near_b <= near_c, above, upper_left)
        predicted = np.where((near_a <= near_b) & (near_a <= near_c), left, nearest_bc)
    else:
        predicted = [0 * row, left, above, (left + above) // 2][kind]
    return (row - predicted) % 256


def _write_png(path: Path, passes: list[np.ndarray], size, depth: int, color: int, **chunks):
    """A PNG of the raw scanlines ``passes`` (one (rows, bytes) array, or Adam7's seven when
    interlaced), filtered by each filter type in turn; ``chunks``: PLTE, tRNS data."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    bpp = max(1, depth * channels // 8)
    lines = []
    for scanlines in passes:
        above = np.zeros(scanlines.shape[1], int)
        for y, row in enumerate(scanlines.astype(int)):
            lines.append(
                bytes([y % 5]) + _png_filter(y % 5, row, above, bpp).astype(np.uint8).tobytes()
            )
            above = row
    data = zlib.compress(b"".join(lines))
    header = size[0].to_bytes(4, "big") + size[1].to_bytes(4, "big")
    header += bytes([depth, color, 0, 0, len(passes) > 1])
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
    png += b"".join(_png_chunk(kind.encode(), value) for kind, value in chunks.items())
    png += b"".join(_png_chunk(b"IDAT", data[i : i + 100]) for i in range(0, len(data), 100))
    path.write_bytes(png + _png_chunk(b"IEND", b""))


def test_an_interlaced_png_is_decoded_whole_then_shrunk(tmp_path, monkeypatch):
    pixels = _noise((53, 37, 3))
    passes = [pixels[y::dy, x::dx].reshape(len(range(y, 53, dy)), -1) for x, y, dx, dy in _ADAM7]
    path = tmp_path / "interlaced.png"
    _write_png(path, passes, (37, 53), 8, 2)
    np.testing.assert_array_equal(load_rgb(path), pixels)  # the file is as meant
    monkeypatch.setattr(images, "_STRIP_PIXELS", 64)
    np.testing.assert_array_equal(load_rgb(path, max_side=9), _thumbnail_of_full_size(path, 9))


@pytest.mark.parametrize("damage", ["cut short", "corrupt"])
def test_a_damaged_png_is_a_data_error_when_shrunk_too(tmp_path, damage):
    path = tmp_path / "damaged.png"
    _write_png(path, [_noise((53, 37 * 3))], (37, 53), 8, 2)
    data = path.read_bytes()
    middle = len(data) // 2
    if damage == "cut short":
        path.write_bytes(data[:middle])
    else:
        path.write_bytes(
            data[:middle]
            + bytes(b ^ 0x5A for b in data[middle : middle + 40])
            + data[middle + 40 :]
        )
    for max_side in (None, 9):
        with pytest.raises(DataError, match=r"damaged\.png: unreadable or truncated image"):
            load_rgb(path, max_side=max_side)


def test_a_float_image_with_nan_pixels_is_unreadable_not_garbage(tmp_path):
    # once: numpy's "invalid value encountered in cast", naming no file, and the garbage
    # pixels trained on, even with --strict
    pixels = np.full((20, 30), 0.5, np.float32)
    pixels[3, 4] = np.nan
    path = tmp_path / "nan.tiff"
    Image.fromarray(pixels).save(path)
    for max_side in (None, 10):  # whole, and shrunk a strip at a time
        with pytest.raises(DataError, match=r"nan\.tiff: a float image with NaN or infinite"):
            load_rgb(path, max_side=max_side)
    pixels[3, 4] = 0.25
    Image.fromarray(pixels).save(path)
    assert load_rgb(path).shape == (20, 30, 3)
