import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpnkit.data import (
    DataError,
    DetectionDataset,
    EmptyBatch,
    HorizontalFlip,
    ResizeFixed,
    ResizeShortest,
    Unreadable,
    collate,
    detect_format,
    load_rgb,
    read_dataset,
)
from rpnkit.data.coco import read_coco
from rpnkit.data.records import image_size
from rpnkit.data.transforms import Compose
from rpnkit.data.voc import read_voc
from rpnkit.data.yolo import read_yolo

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
COCO128, RACCOON = DATA / "coco128", DATA / "raccoon"


def test_real_datasets_read_with_the_documented_counts():
    # ../shared/data/README.md: 939 COCO annotations of which 10 crowd; 929 YOLO train boxes,
    # 898 val; raccoon 217 boxes over its csv split (173 train + 44 test)
    coco = read_dataset(COCO128, split="train2017")
    assert len(coco.records) == 128 and len(coco.class_names) == 80
    assert sum(len(r.boxes) for r in coco.records) == 939
    assert sum(int(r.ignore.sum()) for r in coco.records) == 10  # iscrowd -> ignore
    yolo_train = read_dataset(COCO128, split="train")
    yolo_val = read_dataset(COCO128, split="val")
    assert sum(len(r.boxes) for r in yolo_train.records) == 929
    assert sum(len(r.boxes) for r in yolo_val.records) == 898
    train = read_dataset(RACCOON, split_file=RACCOON / "train_labels.csv")
    test = read_dataset(RACCOON, split_file=RACCOON / "test_labels.csv")
    assert len(train.records) + len(test.records) == 200 and train.class_names == ["raccoon"]
    assert sum(len(r.boxes) for r in train.records) + sum(len(r.boxes) for r in test.records) == 217
    assert not coco.issues and not yolo_val.issues and not train.issues


def test_yolo_and_coco_json_give_the_same_boxes():
    coco = {r.file_name: r for r in read_dataset(COCO128, split="train2017").records}
    yolo = {r.file_name: r for r in read_dataset(COCO128, split="train").records}
    for name in list(yolo)[:20]:
        c, y = coco[name], yolo[name]
        real = c.boxes[~c.ignore]
        assert len(real) == len(y.boxes)
        # YOLO stores 6 decimals of normalised coordinates: within 0.01 of an image side
        order_c, order_y = np.lexsort(real.T[::-1]), np.lexsort(y.boxes.T[::-1])
        assert np.abs(real[order_c] - y.boxes[order_y]).max() < 0.01 * max(c.width, c.height)


def test_format_detection(tmp_path):
    assert detect_format(COCO128 / "annotations" / "instances_train2017.json") == "coco"
    assert detect_format(COCO128 / "data.yaml") == "yolo"
    assert detect_format(RACCOON) == "voc"
    (tmp_path / "notes.txt").write_text("nothing")
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        detect_format(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "missing")


def _save(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    base = Image.new("RGB", (40, 30), (200, 100, 50))
    if mode == "I;16":
        img = Image.fromarray((np.full((30, 40), 40000)).astype(np.uint16))
        path = _save(tmp_path / "x.png", img)
    else:
        path = _save(tmp_path / ("x.png" if mode != "CMYK" else "x.jpg"), base.convert(mode))
    rgb = load_rgb(path)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    if mode == "I;16":
        assert rgb[0, 0, 0] == round(40000 / 65535 * 255)


def test_exif_rotated_image_comes_upright_with_its_boxes(tmp_path):
    # Stored as 60 wide x 40 high with a white block at the stored top-left; EXIF orientation 6
    # means "rotate 90 degrees clockwise to display": displayed 40 wide x 60 high, the block at
    # the top-right. The annotation refers to the displayed image.
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[0:10, 0:20] = 255
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    path = _save(tmp_path / "rot.jpg", img, exif=exif, quality=95)
    assert image_size(path) == (40, 60)
    shown = load_rgb(path)
    assert shown.shape == (60, 40, 3)
    block = np.argwhere(shown[..., 0] > 128)
    assert block[:, 0].max() < 22 and block[:, 1].min() > 25  # top-right in the display


def _voc(tmp_path: Path, objects: str, *, image=True, filename="a.jpg") -> Path:
    ann, imgs = tmp_path / "annotations", tmp_path / "images"
    ann.mkdir(exist_ok=True)
    imgs.mkdir(exist_ok=True)
    if image:
        Image.new("RGB", (100, 80)).save(imgs / filename)
    (ann / f"{Path(filename).stem}.xml").write_text(
        f"<annotation><filename>{filename}</filename>{objects}</annotation>"
    )
    return ann


def _obj(name="cat", box=(11, 11, 50, 40), difficult=0):
    x1, y1, x2, y2 = box
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
        f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def test_voc_box_convention_and_difficult_as_ignore(tmp_path):
    ann = _voc(tmp_path, _obj() + _obj("dog", (1, 1, 100, 80), difficult=1))
    index = read_voc(ann)
    r = index.records[0]
    assert index.class_names == ["cat", "dog"]
    assert r.boxes.tolist() == [[10, 10, 50, 40], [0, 0, 100, 80]]  # 1-based inclusive -> xyxy
    assert r.ignore.tolist() == [False, True]


@pytest.mark.parametrize(
    ("objects", "problem"),
    [
        (_obj(box=(50, 10, 20, 40)), "empty or inverted"),
        (_obj(box=(12, 11, 11, 40)), "empty or inverted"),  # xmin = xmax + 1: zero width
        (_obj(box=(150, 11, 300, 40)), "out of bounds of the 100x80 image"),  # wholly outside
        (_obj(box=("nan", 11, 50, 40)), "NaN or infinite"),
        ("<object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object>", "non-numeric"),
        (_obj(name="horse"), "unknown class 'horse'"),
    ],
)
def test_bad_voc_samples_are_skipped_with_one_line_or_raise_when_strict(tmp_path, objects, problem):
    ann = _voc(tmp_path, objects)
    with pytest.warns(UserWarning, match=problem):
        index = read_voc(ann, class_names=["cat", "dog"])
    # the bad object is skipped, its image kept (without it)
    assert [len(r.boxes) for r in index.records] == [0] and len(index.issues) == 1
    assert str(ann / "a.xml") in index.issues[0] and problem in index.issues[0]
    with pytest.raises(DataError, match=problem):
        read_voc(ann, class_names=["cat", "dog"], strict=True)


def test_malformed_xml_missing_and_corrupt_images(tmp_path):
    ann = _voc(tmp_path, _obj())
    (ann / "b.xml").write_text("<annotation><filename>b.jpg</filename><object>")  # truncated
    (ann / "c.xml").write_text("<annotation><filename>c.jpg</filename></annotation>")  # no image
    (tmp_path / "images" / "d.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (ann / "d.xml").write_text("<annotation><filename>d.jpg</filename></annotation>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = read_voc(ann)
    assert [r.file_name for r in index.records] == ["a.jpg"]
    text = "\n".join(index.issues)
    assert "b.xml: malformed XML" in text
    assert "c.jpg: image file not found" in text
    assert "d.jpg: unreadable image" in text


def test_truncated_image_is_skipped_at_load_time_and_dropped_by_collate(tmp_path):
    ann = _voc(tmp_path, _obj())
    Image.new("RGB", (100, 80), (9, 9, 9)).save(tmp_path / "images" / "b.jpg")
    (ann / "b.xml").write_text("<annotation><filename>b.jpg</filename>" + _obj() + "</annotation>")
    index = read_voc(ann)
    data = (tmp_path / "images" / "b.jpg").read_bytes()
    (tmp_path / "images" / "b.jpg").write_bytes(data[: len(data) // 2])  # truncated after indexing
    dataset = DetectionDataset(index)
    with warnings.catch_warnings():  # a marker only: the batches' collector warns of it
        warnings.simplefilter("error")
        items = [dataset[0], dataset[1]]
    assert isinstance(items[1], Unreadable) and "b.jpg: unreadable" in str(items[1])
    batch = collate(items)
    assert batch.images.shape[0] == 1 and batch.file_names == ["a.jpg"]
    assert len(batch.skipped) == 1 and "b.jpg" in batch.skipped[0]  # counted, not lost
    empty = collate([items[1]])
    assert isinstance(empty, EmptyBatch) and empty.skipped == batch.skipped
    with pytest.raises(DataError, match="truncated"):
        DetectionDataset(index, strict=True)[1]


def test_malformed_coco_json_and_unknown_category(tmp_path):
    bad = tmp_path / "instances_x.json"
    bad.write_text('{"images": [}')
    with pytest.raises(DataError, match=r"instances_x.json: malformed JSON at line 1"):
        read_coco(bad, tmp_path)
    Image.new("RGB", (50, 40)).save(tmp_path / "a.jpg")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 40}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 99, "bbox": [1, 1, 10, 10]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    good = tmp_path / "instances_y.json"
    good.write_text(json.dumps(data))
    with pytest.warns(
        UserWarning, match=r"annotations\[0\] \(id 7, image a.jpg\): unknown category 99"
    ):
        # the bad annotation is skipped, its image kept (without it)
        assert [len(r.boxes) for r in read_coco(good, tmp_path).records] == [0]


def test_malformed_yolo_lines_and_unknown_class(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (100, 50)).save(tmp_path / "images" / "train" / f"{name}.jpg")
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (tmp_path / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 oops 0.4\n")
    (tmp_path / "labels" / "train" / "c.txt").write_text("3 0.5 0.5 0.2 0.4\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [thing, other]\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = read_yolo(tmp_path / "data.yaml")
    # the bad lines are skipped, their images kept (without them)
    assert [(r.file_name, len(r.boxes)) for r in index.records] == [
        ("a.jpg", 1),
        ("b.jpg", 0),
        ("c.jpg", 0),
    ]
    assert index.records[0].boxes.tolist() == [[40.0, 15.0, 60.0, 35.0]]
    assert any("b.txt line 1: expected 'class cx cy w h'" in i for i in index.issues)
    assert any("c.txt line 1: unknown class 3" in i for i in index.issues)


def _white_box_image(box, size=(80, 120)):
    img = np.zeros((*size, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


@pytest.mark.parametrize(
    "transform",
    [
        ResizeShortest(160, 1000),
        ResizeShortest(40, 60),
        ResizeFixed((100, 100)),
        HorizontalFlip(1.0),
        Compose((ResizeShortest(200, 400), HorizontalFlip(1.0))),
    ],
)
def test_boxes_follow_every_transform(transform):
    box = (30, 20, 70, 50)
    image = _white_box_image(box)
    boxes = np.array([box], np.float32)
    if not isinstance(transform, Compose):
        transform = Compose((transform,))
    (out, out_boxes), _ = transform(image, boxes, np.random.default_rng(0))
    ys, xs = np.nonzero(out[..., 0] > 127)
    drawn = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert np.abs(np.array(drawn) - out_boxes[0]).max() <= 1.5


def test_resize_reports_its_scale():
    (out, _), scale = ResizeShortest(400, 2000)(
        np.zeros((100, 300, 3), np.uint8), np.zeros((0, 4), np.float32), np.random.default_rng(0)
    )
    assert out.shape[:2] == (400, 1200) and scale == 4.0
