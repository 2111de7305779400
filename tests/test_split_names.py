"""The names a ``--val-fraction`` split keys on (``data.splits``): unique in the dataset, so
that images sharing a file name in different folders (``a/img.jpg``, ``b/img.jpg``) are split
one by one, counted right and named apart in split.json; split.json files of earlier versions
(file names only) still read."""

import hashlib
import json
import warnings

import pytest
from conftest import shared_name_csv
from PIL import Image

from rpnkit.cli import main
from rpnkit.data import read_dataset
from rpnkit.data.splits import (
    ImageNames,
    Split,
    apply_split,
    held_out,
    image_names,
    make_split,
    read_split,
    validation_names,
)

SMALL = ["--short-side", "64", "--max-size", "96", "--no-progress", "--workers", "0"]


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dataset(path)


def test_each_image_is_named_by_its_file_name_or_the_shortest_path_that_is_its_own(tmp_path):
    index = _read(shared_name_csv(tmp_path))
    assert [r.path.relative_to(tmp_path).as_posix() for r in index.records] == [
        "a/img.jpg",
        "b/img.jpg",
        "a/x.jpg",
        "b/y.jpg",
    ]
    assert image_names(index.records) == ["a/img.jpg", "b/img.jpg", "x.jpg", "y.jpg"]
    names = ImageNames(index.records)
    # a path (relative, whole, ./ or \ written) finds its image; a shared file name both
    assert names.find("a/img.jpg") == [0] and names.find("./b/img.jpg") == [1]
    assert names.find(str(tmp_path / "b" / "img.jpg")) == [1] and names.find("b\\img.jpg") == [1]
    assert names.find("img.jpg") == [0, 1] and names.find("elsewhere/x.jpg") == [2]
    assert names.find("z.jpg") == []


def test_the_held_out_count_is_the_images_held_out_whatever_the_seed(tmp_path):
    index = _read(shared_name_csv(tmp_path))
    for seed in range(12):
        split = make_split(index, 0.5, seed)
        train, val = apply_split(index, split)
        assert len(split.validation) == len(val.records) == 2, (seed, split.validation)
        assert len(train.records) == 2
        assert held_out(index, split).records == val.records
        assert read_split(split.save(tmp_path / f"run{seed}")) == split


def test_names_unique_by_file_name_split_as_before(tmp_path):
    # a flat dataset's names are its file names: the split of earlier versions, unchanged
    for i in range(10):
        Image.new("RGB", (32, 32)).save(tmp_path / f"im{i}.png")
    (tmp_path / "b.csv").write_text("".join(f"im{i}.png,1,2,20,20,cat\n" for i in range(10)))
    index = _read(tmp_path / "b.csv")
    ranked = sorted(f"im{i}.png" for i in range(10))
    ranked.sort(key=lambda n: hashlib.sha256(f"5:{n}".encode()).hexdigest())
    assert list(make_split(index, 0.3, 5).validation) == sorted(ranked[:3])
    assert validation_names(image_names(index.records), 0.3, 5) == sorted(ranked[:3])


def test_an_earlier_split_json_of_file_names_still_reads(tmp_path):
    index = _read(shared_name_csv(tmp_path / "ds"))
    old = {"seed": 0, "fraction": 0.5, "total_images": 4, "validation": ["img.jpg", "x.jpg"]}
    (tmp_path / "split.json").write_text(json.dumps(old))
    split = read_split(tmp_path)
    val = held_out(index, split, where="runs/old")
    # as that version held them out: both img.jpg and x.jpg, said in one line
    assert [image_names(index.records)[index.records.index(r)] for r in val.records] == [
        "a/img.jpg",
        "b/img.jpg",
        "x.jpg",
    ]
    assert val.issues == [
        f"runs/old: file name 'img.jpg' names 2 images of {index.source} (a/img.jpg, "
        "b/img.jpg): all of them evaluated (an earlier rpnkit wrote this split.json, and held "
        "out every image of a shared file name)"
    ]
    # a unique file name of an earlier file matches its image, with no word
    unique = held_out(index, Split(("y.jpg",), 0, 0.5, 4), where="runs/old")
    assert [r.file_name for r in unique.records] == ["y.jpg"] and unique.issues == []


def test_train_val_fraction_and_eval_split_from_agree_on_shared_file_names(tmp_path, capsys):
    data = shared_name_csv(tmp_path / "ds")
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--val-fraction", "0.5", "--preset", "tiny"]
    assert main([*argv, "--steps", "1", "--batch-size", "2", "--out", str(out), *SMALL]) == 0
    assert "2 of 4 images held out for validation (fraction 0.5, seed 0)" in capsys.readouterr().out
    split = json.loads((out / "split.json").read_text())
    assert split["validation"] == ["a/img.jpg", "x.jpg"] and split["validation_images"] == 2
    checkpoint = str(out / "checkpoint.safetensors")
    argv_eval = ["eval", "--checkpoint", checkpoint, "--data", str(data), "--split-from"]
    assert main([*argv_eval, str(out), *SMALL]) == 0
    text = capsys.readouterr().out
    assert "2 of 4 images held out (fraction 0.5, seed 0); evaluating 2 of them" in text.replace(
        " for validation", ""
    )
    # resumed, the run splits its data as it did: the same split, no "data changed" note
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*argv, "--steps", "2", "--resume", checkpoint, "--out", str(out), *SMALL]) == 0
    assert not [w for w in caught if "training data changed" in str(w.message)]
    assert json.loads((out / "split.json").read_text()) == split


def test_a_resumed_run_keeps_the_split_it_made(tmp_path, capsys):
    # its split.json as an earlier version (other names) or other images made it: kept, not
    # made anew, so that no held-out image moves into training
    data = shared_name_csv(tmp_path / "ds")
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--val-fraction", "0.5", "--preset", "tiny", *SMALL]
    assert main([*argv, "--steps", "1", "--batch-size", "2", "--out", str(out)]) == 0
    saved = json.loads((out / "split.json").read_text())
    assert saved["validation"] == ["a/img.jpg", "x.jpg"]
    saved["validation"] = ["b/img.jpg", "y.jpg"]
    (out / "split.json").write_text(json.dumps(saved))
    checkpoint = str(out / "checkpoint.safetensors")
    assert main([*argv, "--steps", "2", "--resume", checkpoint, "--out", str(out)]) == 0
    assert json.loads((out / "split.json").read_text())["validation"] == ["b/img.jpg", "y.jpg"]
    # eval --split-from the run evaluates those
    argv_eval = ["eval", "--checkpoint", checkpoint, "--data", str(data), "--split-from"]
    capsys.readouterr()
    assert main([*argv_eval, str(out), *SMALL]) == 0
    assert "evaluating 2 of them" in capsys.readouterr().out


@pytest.mark.parametrize("fraction", [0.25, 0.75])
def test_every_image_lands_on_one_side(tmp_path, fraction):
    index = _read(shared_name_csv(tmp_path))
    train, val = apply_split(index, make_split(index, fraction, 3))
    assert sorted(str(r.path) for r in train.records + val.records) == sorted(
        str(r.path) for r in index.records
    )
    assert len(val.records) == round(fraction * 4)


def test_paths_written_on_any_system_are_read_alike():
    from rpnkit.data.splits import _path_parts

    # a results file or split.json written on Windows: "\\" is a separator, "." dropped
    assert _path_parts(r"C:\data\a\img.jpg")[-2:] == ("a", "img.jpg")
    assert _path_parts("a/./img.jpg") == _path_parts(r"a\img.jpg") == ("a", "img.jpg")
