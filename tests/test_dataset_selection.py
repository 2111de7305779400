"""Which part of a dataset is read, and how a dataset's faults are told (audit 19): the COCO JSON
that ``--split`` picks in an ``annotations/`` folder (``instances_<split>.json`` first, COCO's
captions and keypoints files never), ``--split-file`` for every format and ``--split`` refused
where a format has no splits, one line for a YOLO data.yaml with too few names and for a CSV
none of whose images exists, and COCO box faults quoted as the JSON's ``bbox``."""

import json
import warnings
from pathlib import Path

import pytest
from conftest import read_warned
from PIL import Image

from rpnkit.data import DataConfig, DataError, read_dataset

COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"


_read = read_warned


def _images(folder: Path, *names: str, size=(40, 30)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", size, (90, 90, 90)).save(folder / name)
    return folder


def _instances(path: Path, *files: str, bbox=(2, 3, 10, 10)) -> Path:
    """A COCO instances JSON at ``path``: one image per file name, each with one box."""
    images = [{"id": i + 1, "file_name": f, "width": 40, "height": 30} for i, f in enumerate(files)]
    anns = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": list(bbox), "iscrowd": 0}
        for i in range(len(files))
    ]
    cats = [{"id": 1, "name": "thing"}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


# ---------------------------------------------------------------- the COCO JSON of a split


def test_a_coco_2017_download_reads_its_instances_json_not_its_captions(tmp_path):
    # the official annotations/ folder: captions and keypoints beside the instances
    ann = tmp_path / "annotations"
    _images(tmp_path / "images" / "train2017", "a.jpg", "b.jpg")
    _instances(ann / "instances_train2017.json", "a.jpg", "b.jpg")
    captions = {"images": [], "annotations": [{"image_id": 1, "caption": "a thing"}]}
    (ann / "captions_train2017.json").write_text(json.dumps(captions))  # sorts first
    _instances(ann / "person_keypoints_train2017.json", "a.jpg")
    for split in ("train2017", "train"):
        index, _ = _read(tmp_path, split=split)
        assert index.source == str(ann / "instances_train2017.json"), split
        assert [r.file_name for r in index.records] == ["a.jpg", "b.jpg"]
    # only a file without boxes names the split: said, not read
    (ann / "captions_val2017.json").write_text(json.dumps(captions))
    with pytest.raises(DataError) as err:
        read_dataset(tmp_path, split="val2017")
    assert str(err.value).endswith(
        "among ['captions_train2017.json', 'captions_val2017.json', "
        "'instances_train2017.json', 'person_keypoints_train2017.json'] "
        "(captions_val2017.json: no boxes, not read)"
    )


def test_the_2014_layout_reads_val2014_not_minival2014_and_refuses_a_split_naming_several(
    tmp_path,
):
    ann = tmp_path / "annotations"
    _images(tmp_path / "images", "val.jpg", "mini.jpg", "rest.jpg", "train.jpg")
    _instances(ann / "instances_minival2014.json", "mini.jpg")  # sorts before val2014
    _instances(ann / "instances_train2014.json", "train.jpg")
    _instances(ann / "instances_val2014.json", "val.jpg")
    _instances(ann / "instances_valminusminival2014.json", "rest.jpg")
    index, _ = _read(tmp_path, split="val2014")
    assert [r.file_name for r in index.records] == ["val.jpg"]
    assert [r.file_name for r in _read(tmp_path, split="minival2014")[0].records] == ["mini.jpg"]
    # "val" names three files, none exactly: one line listing them, no guess
    with pytest.raises(DataError) as err:
        read_dataset(tmp_path, split="val")
    assert str(err.value) == (
        f"{tmp_path}: 3 COCO JSON files name the split 'val' (instances_minival2014.json, "
        "instances_val2014.json, instances_valminusminival2014.json) and none is "
        "instances_val.json: give the JSON file itself"
    )
    # DataConfig's default split ("train") names one
    assert [r.file_name for r in DataConfig(str(tmp_path)).read_train().records] == ["train.jpg"]


def test_a_json_named_as_the_split_is_read_before_those_that_contain_it(tmp_path):
    ann = tmp_path / "annotations"
    _images(tmp_path / "images", "val.jpg", "mini.jpg")
    _instances(ann / "minival.json", "mini.jpg")
    _instances(ann / "val.json", "val.jpg")
    assert [r.file_name for r in _read(tmp_path, split="val")[0].records] == ["val.jpg"]


# ---------------------------------------------------------------- --split-file and --split


def test_a_split_file_selects_coco_and_yolo_images_as_it_does_voc_and_csv(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("000000000009\n000000000025.jpg\nnot-an-image\n")
    for split in ("train2017", "train"):  # COCO128's COCO JSON, then its YOLO labels
        index, warned = _read(COCO128, split=split, split_file=ids)
        assert [r.file_name for r in index.records] == ["000000000009.jpg", "000000000025.jpg"]
        unmatched = [w for w in warned if "ids name no image" in w]
        assert (
            len(unmatched) == 1 and f"skipped {ids}: 1 of its 3 ids name no image" in (unmatched[0])
        ), warned
        assert "'not-an-image'" in unmatched[0]
    # a CSV's filename column, as raccoon's train_labels.csv selects VOC images
    listed = tmp_path / "listed.csv"
    listed.write_text("filename,width\n000000000030.jpg,640\n000000000030.jpg,640\n")
    index, _ = _read(COCO128, split="train2017", split_file=listed)
    assert [r.file_name for r in index.records] == ["000000000030.jpg"]
    assert len(index.records[0].boxes) == 2  # its boxes, as without the split file
    # the selection keeps the ids of the whole split, and the boxes
    whole = {r.file_name: r for r in _read(COCO128, split="train")[0].records}
    for record in _read(COCO128, split="train", split_file=ids)[0].records:
        assert record.image_id == whole[record.file_name].image_id
        assert record.boxes.tolist() == whole[record.file_name].boxes.tolist()
    # one naming nothing stops, as for VOC
    ids.write_text("nope\n")
    with pytest.raises(DataError, match=r"none of its 1 ids names an image of .*'000000000009'"):
        read_dataset(COCO128, split="train2017", split_file=ids)


def test_the_cli_reads_a_coco_split_file(tmp_path, capsys):
    from rpnkit.cli import main

    ids = tmp_path / "ids.txt"
    ids.write_text("000000000009\n")
    argv = ["anchors", "--data", str(COCO128), "--split-file", str(ids), "--preset", "tiny"]
    assert main([*argv, "--split", "train2017", "--short-side", "128", "--max-size", "192"]) == 0
    out = capsys.readouterr().out
    assert f"{COCO128 / 'annotations' / 'instances_train2017.json'}: 1 image, 80 classes" in out


def _voc_and_csv(tmp_path):
    """A one-image VOC folder and a CSV of the same box."""
    voc = tmp_path / "voc"
    _images(voc / "JPEGImages", "a.jpg", "b.jpg")
    (voc / "Annotations").mkdir()
    obj = "<object><name>x</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax>"
    obj += "<ymax>9</ymax></bndbox></object>"
    for stem in ("a", "b"):
        (voc / "Annotations" / f"{stem}.xml").write_text(f"<annotation>{obj}</annotation>")
    csv = tmp_path / "boxes.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\nvoc/JPEGImages/a.jpg,2,2,9,9,x\n")
    return voc, csv


def test_a_named_split_of_a_voc_or_csv_dataset_is_refused_not_ignored(tmp_path, capsys):
    from rpnkit.cli import main

    voc, csv = _voc_and_csv(tmp_path)
    # any split asked, the default names included, is refused: read whole, it would pass
    # for the split (an explicit --split val read a VOC set whole without a word)
    for split in ("test", "train", "val"):
        with pytest.raises(DataError) as err:
            read_dataset(voc, split=split)
        assert str(err.value) == (
            f"{voc}: --split {split!r} (split=): a VOC dataset's split is its "
            f"ImageSets/Main/{split}.txt, and there is none in {voc} or {tmp_path}: select "
            "its images with --split-file (split_file=), or leave --split out to read it whole"
        )
        with pytest.raises(DataError) as err:
            read_dataset(csv, split=split)
        assert str(err.value) == (
            f"{csv}: --split {split!r} (split=) names a COCO JSON, a YOLO data.yaml key or a "
            "VOC ImageSets/Main file; a CSV dataset has no named splits: select its images "
            "with --split-file (split_file=), give the split's own CSV, or leave --split out "
            "to read it whole"
        )
    # not asked: read whole, by every reader and command
    assert len(_read(voc)[0].records) == 2 and len(_read(csv)[0].records) == 1
    assert len(DataConfig(str(voc), val_data=str(csv)).read_train().records) == 2
    assert len(DataConfig(str(voc), val_data=str(csv)).read_val().records) == 1
    with pytest.raises(ValueError, match=r"--split 'test2007'"):
        DataConfig(str(voc), split="test2007").read_train()
    with pytest.raises(ValueError, match=r"--split 'val'"):
        DataConfig(str(csv), val_data=str(voc), val_split="val").read_val()
    # the command line stops with the one line
    assert main(["anchors", "--data", str(csv), "--split", "val", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rpnkit anchors: error: {csv}: --split 'val' (split=) names a COCO JSON, " +
                   "a YOLO data.yaml key or a VOC ImageSets/Main file; a CSV dataset has no " +
                   "named splits: select its images with --split-file (split_file=), give the " +
                   "split's own CSV, or leave --split out to read it whole"]  # fmt: skip


def test_a_voc_split_reads_its_image_sets_file(tmp_path, capsys):
    from rpnkit.cli import main

    voc, _ = _voc_and_csv(tmp_path)
    sets = voc / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("b\n")
    (sets / "train.txt").write_text("a\nb\n")
    assert [r.image_id for r in _read(voc, split="val")[0].records] == ["b"]
    assert len(_read(voc / "Annotations", split="train")[0].records) == 2  # VOCdevkit's parent
    assert len(DataConfig(str(voc), split="val").read_train().records) == 1
    with pytest.raises(DataError) as err:
        read_dataset(voc, split="val", split_file=sets / "train.txt")
    assert str(err.value) == (
        f"{voc}: --split 'val' (split=, {sets / 'val.txt'}) and --split-file "
        f"{sets / 'train.txt'} (split_file=) both select the images: give one"
    )
    argv = ["anchors", "--data", str(voc), "--preset", "tiny", "--short-side", "64"]
    assert main([*argv, "--max-size", "96", "--split", "val"]) == 0
    assert f"{voc / 'Annotations'}: 1 image, 1 class" in capsys.readouterr().out
    assert main([*argv, "--max-size", "96"]) == 0  # no --split: the whole set
    assert f"{voc / 'Annotations'}: 2 images, 1 class" in capsys.readouterr().out


def test_eval_split_from_reads_the_training_split_it_was_held_out_of(tmp_path, capsys):
    from rpnkit.cli import main
    from rpnkit.data.splits import make_split

    # a COCO folder whose train and val JSONs name other images: --val-fraction held images
    # out of train; eval --split-from without --split must look there, not in val
    ann = tmp_path / "annotations"
    _images(tmp_path / "images" / "train", "a.jpg", "b.jpg", "c.jpg", "d.jpg")
    _images(tmp_path / "images" / "val", "v.jpg")
    _instances(ann / "instances_train.json", "a.jpg", "b.jpg", "c.jpg", "d.jpg")
    _instances(ann / "instances_val.json", "v.jpg")
    split = make_split(read_dataset(tmp_path), 0.5, seed=0)
    split.save(tmp_path / "run")
    proposals = tmp_path / "proposals.json"
    results = [{"image_id": i, "bbox": [2, 3, 8, 7], "score": 0.9} for i in (1, 2, 3, 4)]
    proposals.write_text(json.dumps(results))
    argv = ["eval", "--proposals", str(proposals), "--data", str(tmp_path)]
    assert main([*argv, "--split-from", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"{ann / 'instances_train.json'}: 4 images" in out and "evaluating 2 of them" in out
    # --split given wins: the val JSON has none of the held-out images
    assert main([*argv, "--split-from", str(tmp_path / "run"), "--split", "val"]) == 2


def test_settings_stored_before_splits_were_optional_mean_what_they_meant(tmp_path):
    from rpnkit.data.config import stored_data_fields
    from rpnkit.engine.resume import upgraded_settings

    # earlier versions stored an unasked split as its name, which read VOC and CSV whole
    old = {"data": "voc", "split": "train", "val_data": "csv", "val_split": "val"}
    assert stored_data_fields(old, None) == {**old, "split": None, "val_split": None}
    assert stored_data_fields({**old, "split": "trainval"}, None)["split"] == "trainval"
    assert stored_data_fields(old, 2) == old  # asked, in this version's settings
    upgraded = upgraded_settings({"data": old, "train": {"lr": 0.1}})
    assert upgraded == {"version": 2, "data": {**old, "split": None, "val_split": None},
                        "train": {"lr": 0.1}}  # fmt: skip
    assert upgraded_settings({**upgraded, "data": old}) == {**upgraded, "data": old}


# ---------------------------------------------------------------- one line, not one per sample

RACCOON = COCO128.parent / "raccoon"


def test_a_data_yaml_with_too_few_names_is_one_line_not_one_per_label_line(tmp_path):
    # COCO128's images and labels, with a data.yaml naming 3 of its 80 classes
    (tmp_path / "images").symlink_to(COCO128 / "images")
    (tmp_path / "labels").symlink_to(COCO128 / "labels")
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("path: .\ntrain: images/train2017\nnames: [person, bicycle, car]\n")
    index, warned = _read(data_yaml)
    first = tmp_path / "labels" / "train2017" / "000000000009.txt"
    line = (
        f"{data_yaml} [train]: 623 label line(s) in 126 file(s) have class ids 3..79 (68 "
        f"distinct) beyond its 3 names (0..2) (first: {first} line 1); those boxes are left out"
    )
    assert warned == [f"skipped {line}"] and index.issues == [line]
    assert len(index.records) == 128 and index.skipped_annotations == 623
    assert index.summary().endswith(
        "128 images, 3 classes, 623 annotation(s) skipped (57 image(s) left without a box, kept "
        "as background)"
    )
    # --strict stops at the first, with its own line
    with pytest.raises(DataError) as err:
        read_dataset(data_yaml, strict=True)
    assert str(err.value) == f"{first} line 1: unknown class 45 (data.yaml names 3: 0..2)"
    # ids not after the names (a mapping that skips some) are "not among" them
    data_yaml.write_text("path: .\ntrain: images/train2017\nnames: {0: person, 45: bowl}\n")
    _, warned = _read(data_yaml)
    assert (
        len(warned) == 1
        and "have class ids 1..79 (69 distinct) not among its 2 names " in (warned[0])
    ), warned


def test_a_csv_none_of_whose_images_exists_is_one_line_with_the_hint(tmp_path):
    csv = RACCOON / "train_labels.csv"  # its images are in images/, not beside it
    index, warned = _read(csv)
    assert warned == [
        f"skipped {csv}: none of the 160 images it names is found (first: "
        f"{RACCOON / 'raccoon-17.jpg'}); a CSV's relative image paths are read from its folder: "
        "give --images DIR (images=)"
    ]
    assert index.skipped_images == 160 and len(index.issues) == 1
    assert (
        index.image_issues[0] == f"{csv} line 2: {RACCOON / 'raccoon-17.jpg'}: image file not found"
    )
    # the run stops with the count and the first image, as before
    with (
        pytest.raises(ValueError, match=r"no image could be read \(160 skipped; first: "),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        DataConfig(str(csv)).read_train()
    # an --images folder that is wrong: said where
    index, warned = _read(csv, images=tmp_path)
    assert len(warned) == 1 and warned[0].endswith(
        f"they were looked for in --images {tmp_path} (images=)"
    )
    # a few missing among images found: each its own line
    _images(tmp_path, "here.jpg")
    boxes = tmp_path / "boxes.csv"
    rows = [f"{name},2,2,9,9,x" for name in ("gone1.jpg", "here.jpg", "gone2.jpg")]
    boxes.write_text("image_path,xmin,ymin,xmax,ymax,label\n" + "\n".join(rows) + "\n")
    index, warned = _read(boxes)
    assert [r.file_name for r in index.records] == ["here.jpg"]
    assert warned == [
        f"skipped {boxes} line {n}: {tmp_path / name}: image file not found"
        for n, name in ((2, "gone1.jpg"), (4, "gone2.jpg"))
    ]
    # --strict stops at the first missing image, all missing or not
    with pytest.raises(DataError, match=r"line 2: .*raccoon-17\.jpg: image file not found$"):
        read_dataset(csv, strict=True)


@pytest.mark.parametrize(
    ("bbox", "problem"),
    [
        ([10, 10, 0, 20], "is empty or inverted: zero width"),
        ([10, 10, -5, 0], "is empty or inverted: negative width and zero height"),
        ([10.5, 10, 2, -0.25], "is empty or inverted: negative height"),
        ([float("nan"), 1, 2, 3], "has a NaN or infinite coordinate"),
        ([60, 5, 10, 10], "is out of bounds of the 40x30 image (wholly outside)"),
    ],
)
def test_a_bad_coco_box_is_named_by_the_jsons_bbox(tmp_path, bbox, problem):
    _images(tmp_path / "images", "a.jpg")
    json_path = _instances(tmp_path / "instances.json", "a.jpg", bbox=bbox)
    index, warned = _read(json_path)
    shown = json.dumps(bbox)  # what a user finds in the file: [NaN, 1, 2, 3]
    assert warned == [
        f"skipped {json_path}: annotations[0] (id 1, image a.jpg): bbox {shown} (x, y, w, h) "
        f"{problem}"
    ]
    assert index.skipped_annotations == 1


def test_a_clipped_coco_box_is_named_by_the_jsons_bbox(tmp_path):
    _images(tmp_path / "images", "a.jpg")
    index, _ = _read(_instances(tmp_path / "instances.json", "a.jpg", bbox=(30, 5, 30, 10)))
    assert index.clipped[0].endswith(
        "bbox [30, 5, 30, 10] (x, y, w, h) overshoots the 40x30 image; clipped to "
        "(30.0, 5.0, 40.0, 15.0)"
    )
    assert index.records[0].boxes.tolist() == [[30, 5, 40, 15]]


def test_a_run_of_an_earlier_version_resumes_with_or_without_split_train(tmp_path):
    from rpnkit.config import config_to_dict
    from rpnkit.engine.checkpoint import RunState, save_checkpoint
    from rpnkit.engine.resume import check_own_run, check_resumed_settings, run_settings
    from rpnkit.engine.trainer import TrainConfig
    from rpnkit.modeling.presets import build_model, preset_config

    voc, _ = _voc_and_csv(tmp_path)
    model, config = build_model(preset_config("tiny")), config_to_dict(preset_config("tiny"))

    def checkpoint(name: str, data: DataConfig, version) -> Path:
        settings = run_settings(data, TrainConfig())
        if version is None:  # as earlier versions wrote them: the default names, no version
            del settings["version"]
            settings["data"] = {**settings["data"], "split": "train", "val_split": "val"}
        run = RunState(settings=settings)
        return save_checkpoint(tmp_path / "run" / name, model, config=config, run=run)

    for data in (str(COCO128), str(voc)):
        old = checkpoint("best.safetensors", DataConfig(data), None)
        check_resumed_settings(old, run_settings(DataConfig(data), TrainConfig()))
        # this version's checkpoint of the same run (resumed in place) is that run
        checkpoint("checkpoint.safetensors", DataConfig(data), 2)
        check_own_run(old, tmp_path / "run")
    # --split train names what a COCO or YOLO run read without one; a VOC one read it whole
    check_resumed_settings(old, run_settings(DataConfig(str(voc)), TrainConfig()))
    with pytest.raises(ValueError, match=r"data\.split None -> 'train'"):
        check_resumed_settings(
            old, run_settings(DataConfig(str(voc), split="train"), TrainConfig())
        )
    coco = checkpoint("coco.safetensors", DataConfig(str(COCO128)), None)
    check_resumed_settings(
        coco, run_settings(DataConfig(str(COCO128), split="train"), TrainConfig())
    )


def test_a_training_set_none_of_whose_images_is_found_says_what_to_give(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    _instances(tmp_path / "annotations" / "instances_train.json", "a.jpg", "b.jpg")
    elsewhere = _images(tmp_path / "elsewhere", "c.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"none was found: give --images DIR \(images=\)"):
            DataConfig(str(tmp_path)).read_train()
        with pytest.raises(ValueError, match=rf"none was found in --images {elsewhere}$"):
            DataConfig(str(tmp_path), images=str(elsewhere)).read_train()
