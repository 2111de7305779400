"""YOLO labels come with their images (``engine.label_files``): ``images/<stem><suffix>``, a
relative symbolic link to each image's file, named as its label file (``-2`` for a name met
again), so that the folder is a dataset that ``read_dataset(DIR)`` reads as it is; where links
cannot be made, one warning says so and the labels are written as before."""

import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RACCOON
from PIL import Image

import rpnkit
from rpnkit.cli import main
from rpnkit.data import read_dataset
from rpnkit.engine.label_files import write_labels
from rpnkit.engine.results import DetectionResult

IMAGES = RACCOON / "images"
FEW = ["raccoon-1.jpg", "raccoon-10.jpg", "raccoon-100.jpg"]


def _quietly(read, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing clipped, nothing skipped: a note fails
        return read(*args, **kwargs)


def _by_hand(source: Path, box, label=1) -> DetectionResult:
    """One detection of a 64x48 picture (``size`` (height, width) as the runtime's)."""
    return DetectionResult(
        1,
        source.name,
        torch.tensor([box], dtype=torch.float32),
        torch.tensor([0.9]),
        torch.tensor([label]),
        ("cat", "dog"),
        (48, 64),
        source,
    )


def _pictures(*paths: Path) -> list[Path]:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (90, 120, 150)).save(path)
    return list(paths)


def test_raccoon_detections_as_yolo_read_back_as_they_are(detector_checkpoint, tmp_path):
    model = rpnkit.load(detector_checkpoint)
    results = model.detect([IMAGES / name for name in FEW], score_threshold=0.05, max_detections=6)
    out = tmp_path / "labels"
    write_labels(results, out, format="yolo")
    for name in FEW:  # relative links, to the image itself
        link = out / "images" / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == (IMAGES / name).resolve()
    index = _quietly(read_dataset, out)  # nothing linked or copied by hand
    records = {record.file_name: record for record in index.records}
    assert sorted(records) == sorted(FEW)
    for result in results:
        record = records[result.file_name]
        assert (record.height, record.width) == result.image_size
        assert len(record.boxes) == len(result.scores) > 0
        np.testing.assert_allclose(record.boxes, result.boxes.double().numpy(), atol=1e-3)


def test_a_name_met_again_links_its_own_image_as_its_labels_are_named(tmp_path):
    first, second = _pictures(tmp_path / "a" / "x.png", tmp_path / "b" / "x.png")
    results = [_by_hand(first, [1, 2, 30, 40], 1), _by_hand(second, [20, 10, 60, 44], 2)]
    out = tmp_path / "labels"
    write_labels(results, out, format="yolo")
    assert sorted(p.name for p in (out / "images").iterdir()) == ["x-2.png", "x.png"]
    assert (out / "images" / "x.png").resolve() == first.resolve()
    assert (out / "images" / "x-2.png").resolve() == second.resolve()
    index = _quietly(read_dataset, out)
    found = {r.path.name: (r.labels.tolist(), r.boxes.round().tolist()) for r in index.records}
    assert found == {"x.png": ([1], [[1, 2, 30, 40]]), "x-2.png": ([2], [[20, 10, 60, 44]])}


def test_without_links_one_warning_and_the_labels_as_before(tmp_path, monkeypatch):
    images = _pictures(tmp_path / "p" / "a.png", tmp_path / "p" / "b.png")

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_links)  # a filesystem without symbolic links
    out = tmp_path / "labels"
    with pytest.warns(UserWarning) as caught:
        write_labels([_by_hand(p, [1, 2, 30, 40]) for p in images], out, format="yolo")
    assert [str(w.message) for w in caught] == [
        f"{out / 'images'}: cannot link the images there (Operation not permitted); the "
        "labels are written: put the images, or links to them, there for YOLO to read them"
    ]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.txt", "b.txt"]
    assert list((out / "images").iterdir()) == []  # no temporary file left


def test_images_already_there_are_left_as_they_are(tmp_path):
    # labels written beside their images: images/ holds them, nothing to link
    own = _pictures(tmp_path / "set" / "images" / "a.png", tmp_path / "set" / "images" / "b.png")
    write_labels([_by_hand(p, [1, 2, 30, 40]) for p in own], tmp_path / "set", format="yolo")
    assert not any(p.is_symlink() for p in own)
    assert len(_quietly(read_dataset, tmp_path / "set").records) == 2
    # another file of the image's name there: never replaced, said once; the other images
    # are linked all the same (one name taken stopped every link)
    (theirs,) = _pictures(tmp_path / "set2" / "images" / "a.png")
    others = _pictures(*(tmp_path / "elsewhere" / f"{n}.png" for n in ("a", "b", "c")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_labels(
            [_by_hand(p, [1, 2, 30, 40]) for p in others], tmp_path / "set2", format="yolo"
        )
    assert [str(w.message) for w in caught] == [
        f"{theirs}: another file has this name, kept: this image is not linked there (nor any "
        "other whose name is taken), and its labels would read with that file: write the "
        "labels to an empty folder"
    ]
    assert not theirs.is_symlink() and (tmp_path / "set2" / "labels" / "a.txt").is_file()
    assert all((tmp_path / "set2" / "images" / f"{n}.png").is_symlink() for n in "bc")


def test_detect_yolo_labels_are_a_dataset_as_they_are(detector_checkpoint, tmp_path):
    labels = tmp_path / "labels"
    argv = ["detect", *(str(IMAGES / name) for name in FEW), "--no-progress"]
    argv += ["--checkpoint", str(detector_checkpoint), "--score", "0.05", "--max-detections", "4"]
    argv += ["--out", str(tmp_path / "d.json"), "--labels", str(labels), "--labels-format", "yolo"]
    assert main(argv) == 0
    index = _quietly(read_dataset, labels)
    assert sorted(record.file_name for record in index.records) == sorted(FEW)
    assert all(0 < len(record.boxes) <= 4 for record in index.records)
