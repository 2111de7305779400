"""A COCO or VOC dataset none of whose images is found is one line, as a CSV's is: how many
images the annotations name, the first, where they were looked for and what to give; a few
missing among images found keep one line each, and ``strict`` stops at the first."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
from PIL import Image

from rpnkit.data import DataError, read_dataset

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
COCO_JSON = DATA / "coco128" / "annotations" / "instances_train2017.json"
RACCOON_XML = DATA / "raccoon" / "annotations"


def _read(*args, **kwargs):
    """``read_dataset``'s index and the lines it warned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = read_dataset(*args, **kwargs)
    return index, [str(w.message) for w in caught]


def _instances(path: Path, *files: str, extra_annotations=()) -> Path:
    """A COCO instances JSON at ``path``: one 40x30 image per file name, each with one box."""
    images = [{"id": i + 1, "file_name": f, "width": 40, "height": 30} for i, f in enumerate(files)]
    anns = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 3, 10, 10], "iscrowd": 0}
        for i in range(len(files))
    ]
    anns += list(extra_annotations)
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _voc(folder: Path, *stems: str) -> Path:
    """A folder of raccoon's VOC XML files for ``stems`` (the annotations, not the images)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy(RACCOON_XML / f"{stem}.xml", folder)
    return folder


# ---------------------------------------------------------------- COCO


def test_a_coco_json_none_of_whose_images_is_found_is_one_line(tmp_path):
    index, warned = _read(COCO_JSON, images=tmp_path)  # the 128 images are not there
    first = tmp_path / "000000000009.jpg"
    assert warned == [
        f"skipped {COCO_JSON}: none of the 128 images it names is found (first: {first}); "
        f"they were looked for in --images {tmp_path} (images=)"
    ]
    assert index.records == [] and index.skipped_images == 128 and len(index.issues) == 1
    assert len(index.image_issues) == 128  # each image keeps its own line, unsaid
    assert index.image_issues[0] == f"{first}: image file not found"
    # --strict stops at the first, all missing or not
    with pytest.raises(DataError, match=r"000000000009\.jpg: image file not found$"):
        read_dataset(COCO_JSON, images=tmp_path, strict=True)


def test_a_coco_json_s_own_image_folder_is_named_when_none_is_found(tmp_path):
    ann = _instances(tmp_path / "annotations" / "instances_x.json", "a.jpg", "b.jpg", "c.jpg")
    folder = tmp_path / "images" / "x"
    folder.mkdir(parents=True)  # found beside the JSON, but empty
    unknown = {"id": 9, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]}
    _instances(ann, "a.jpg", "b.jpg", "c.jpg", extra_annotations=[unknown])
    index, warned = _read(ann)
    assert warned == [  # the other lines are said as before, in order
        f"skipped {ann}: 1 annotation(s) refer to unknown image ids (first: 99)",
        f"skipped {ann}: none of the 3 images it names is found (first: {folder / 'a.jpg'}); "
        f"they were looked for in {folder}: give --images DIR (images=)",
    ]
    assert index.skipped_images == 3 and index.skipped_annotations == 1


def test_a_few_coco_images_missing_among_those_found_are_one_line_each(tmp_path):
    ann = _instances(tmp_path / "annotations" / "instances_x.json", "a.jpg", "b.jpg", "c.jpg")
    folder = tmp_path / "images" / "x"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(folder / "c.jpg")  # after the two missing
    index, warned = _read(ann)
    assert [r.file_name for r in index.records] == ["c.jpg"]
    assert warned == [f"skipped {folder / n}: image file not found" for n in ("a.jpg", "b.jpg")]
    # an image there but unreadable: the folder is right, each missing one is said
    (folder / "c.jpg").write_text("not an image")
    index, warned = _read(ann)
    assert len(warned) == 3 and warned[2].startswith(f"skipped {folder / 'c.jpg'}: unreadable")
    assert warned[0] == f"skipped {folder / 'a.jpg'}: image file not found"


# ---------------------------------------------------------------- VOC


def test_a_voc_folder_none_of_whose_images_is_found_is_one_line(tmp_path):
    index, warned = _read(RACCOON_XML, images=tmp_path)  # raccoon's 200 XML files
    first = tmp_path / "raccoon-1.jpg"
    assert warned == [
        f"skipped {RACCOON_XML}: none of the 200 images it names is found (first: {first}); "
        f"they were looked for in --images {tmp_path} (images=)"
    ]
    assert index.records == [] and index.skipped_images == 200 and len(index.issues) == 1
    assert index.image_issues[0].startswith(
        f"{RACCOON_XML / 'raccoon-1.xml'}: {first}: image file not found (no raccoon-1."
    )
    with pytest.raises(DataError, match=r"raccoon-1\.xml: .*raccoon-1\.jpg: image file not found"):
        read_dataset(RACCOON_XML, images=tmp_path, strict=True)


def test_a_voc_folder_names_the_folders_it_tried(tmp_path):
    ann = _voc(tmp_path / "annotations", "raccoon-1", "raccoon-2")
    (tmp_path / "images").mkdir()  # the usual folder, without these images
    (tmp_path / "JPEGImages").mkdir()
    _, warned = _read(tmp_path)
    tried = f"{tmp_path / 'images'}, {tmp_path / 'JPEGImages'}"
    assert warned == [
        f"skipped {ann}: none of the 2 images it names is found (first: "
        f"{tmp_path / 'images' / 'raccoon-1.jpg'}); they were looked for in {tried}: give "
        "--images DIR (images=)"
    ]


def test_a_few_voc_images_missing_among_those_found_are_one_line_each(tmp_path):
    ann = _voc(tmp_path / "annotations", "raccoon-1", "raccoon-2", "raccoon-3")
    images = tmp_path / "images"
    images.mkdir()
    (images / "raccoon-3.jpg").symlink_to(DATA / "raccoon" / "images" / "raccoon-3.jpg")
    index, warned = _read(tmp_path)
    assert [r.file_name for r in index.records] == ["raccoon-3.jpg"]
    assert warned == [
        f"skipped {ann / f'raccoon-{n}.xml'}: {images / f'raccoon-{n}.jpg'}: image file not "
        f"found (no raccoon-{n}.<image suffix> either in {images})"
        for n in (1, 2)
    ]
    assert index.skipped_images == 2 and len(index.issues) == 2
