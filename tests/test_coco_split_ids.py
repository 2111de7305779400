"""A split file of a COCO dataset may list the JSON's integer image ids (``139``) as well as
file stems (``000000000139``): an id written bare as an integer names the image of that id; one
naming an image by stem and another by id is an error, not a guess."""

import json
from pathlib import Path

import pytest
from conftest import read_warned
from PIL import Image

from rpnkit.data import DataError, read_dataset

COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"


_read = read_warned


def _split(tmp_path: Path, text: str, name: str = "ids.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_coco128_s_images_are_selected_by_their_integer_ids(tmp_path):
    # COCO128's train JSON: 000000000009.jpg is id 9, 000000000025.jpg id 25
    ids = _split(tmp_path, "9\n25\n")
    index, warned = _read(COCO128, split="train2017", split_file=ids)
    assert [(r.file_name, r.image_id) for r in index.records] == [
        ("000000000009.jpg", 9),
        ("000000000025.jpg", 25),
    ]
    assert warned == []
    # the boxes are those read without the split file
    whole = {r.image_id: r for r in _read(COCO128, split="train2017")[0].records}
    assert index.records[0].boxes.tolist() == whole[9].boxes.tolist()


def test_stems_and_ids_mix_and_ids_naming_nothing_are_one_line(tmp_path):
    # by id, by stem, by file name; '09' and '30.jpg' are no integer id: they name nothing
    ids = _split(tmp_path, "9\n000000000025\n000000000030.jpg\n09\n30.jpg\n999999\n")
    index, warned = _read(COCO128, split="train2017", split_file=ids)
    assert [r.image_id for r in index.records] == [9, 25, 30]
    json_path = COCO128 / "annotations" / "instances_train2017.json"
    assert warned == [
        f"skipped {ids}: 3 of its 6 ids name no image of {json_path} (first: '09', '30', '999999')"
    ]
    # a CSV's filename column alike
    listed = _split(tmp_path, "filename,width\n34,640\n000000000036.jpg,640\n", "ids.csv")
    index, _ = _read(COCO128, split="train2017", split_file=listed)
    assert [r.image_id for r in index.records] == [34, 36]
    # none named: the error shows both ways of naming an image
    nothing = _split(tmp_path, "8\n")
    with pytest.raises(DataError) as err:
        read_dataset(COCO128, split="train2017", split_file=nothing)
    assert str(err.value) == (
        f"{nothing}: none of its 1 ids names an image of {json_path} (first: '8'; its images "
        "are named like '000000000009' (image id 9))"
    )


def test_an_id_naming_one_image_by_stem_and_another_by_id_is_an_error(tmp_path):
    folder = tmp_path / "images" / "x"
    folder.mkdir(parents=True)
    files = {2: "1.jpg", 3: "2.jpg", 7: "7.jpg"}  # ids off by one, but 7.jpg is id 7
    for name in files.values():
        Image.new("RGB", (40, 30)).save(folder / name)
    images = [{"id": k, "file_name": f, "width": 40, "height": 30} for k, f in files.items()]
    data = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    ann = tmp_path / "annotations" / "instances_x.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(data))
    # '2' is the stem of 2.jpg (id 3) and the id of 1.jpg
    with pytest.raises(DataError) as err:
        read_dataset(ann, split_file=_split(tmp_path, "3\n2\n"))
    assert str(err.value) == (
        f"{tmp_path / 'ids.txt'}: '2' names two images of {ann}: '2.jpg' by its file name and "
        "'1.jpg' by its image id; write the file name of the one meant, with its suffix"
    )
    # a file name is a file name only; '3' names 2.jpg by id alone, '7' 7.jpg both ways
    index, warned = _read(ann, split_file=_split(tmp_path, "2.jpg\n3\n7\n"))
    assert [(r.file_name, r.image_id) for r in index.records] == [("2.jpg", 3), ("7.jpg", 7)]
    assert warned == []
    # '1': the stem of 1.jpg (id 2), and no image's id
    index, _ = _read(ann, split_file=_split(tmp_path, "1\n"))
    assert [r.file_name for r in index.records] == ["1.jpg"]


def test_integer_ids_are_coco_s_only(tmp_path):
    # a YOLO split's images are named by stem alone: '9' is not 000000000009.jpg
    ids = _split(tmp_path, "9\n000000000025\n")
    index, warned = _read(COCO128, split="train", split_file=ids)
    assert index.source.startswith(str(COCO128 / "data.yaml"))  # COCO128's YOLO labels
    assert [r.file_name for r in index.records] == ["000000000025.jpg"]
    assert len(warned) == 1 and "1 of its 2 ids name no image" in warned[0], warned
