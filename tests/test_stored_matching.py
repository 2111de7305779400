"""Stored results (``engine.stored_results``, ``rpnkit eval --proposals/--detections``) matched
to a dataset's images and classes: by the path a file name gives before its last part, a file
name several images have said so in one line; a proposals file given as detections, category
ids without names, ``--top`` of stored proposals, and a file of one split scored against the
whole dataset."""

import json
import warnings
from pathlib import Path

import pytest
from conftest import SHARED_NAMES, shared_name_csv
from PIL import Image

from rpnkit.cli import main
from rpnkit.data import read_dataset
from rpnkit.engine.stored_results import read_stored_detections, read_stored_proposals


def _read(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dataset(path, **kwargs)


def _entries(names, **extra) -> list[dict]:
    return [{"file_name": n, "bbox": [8, 8, 32, 32], "score": 0.9, **extra} for n in names]


def _write(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps(entries))
    return path


# ---------------------------------------------------------------- images by path, then name


def test_a_path_unique_in_the_dataset_matches_its_image(tmp_path):
    index = _read(shared_name_csv(tmp_path / "ds"))
    results = _write(tmp_path / "r.json", _entries(["a/img.jpg", "b/img.jpg"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no word: every result found its image
        stored = read_stored_proposals(results, index)
    assert [len(b) for b in stored.boxes] == [1, 1, 0, 0]
    assert stored.describe() == f"{results}: 2 results for 2 of 4 images (2 without any)"
    # a whole path, and a path under another folder, by the longest part an image has
    whole = str(tmp_path / "ds" / "b" / "img.jpg")
    stored = read_stored_proposals(_entries([whole, "elsewhere/b/img.jpg", "x.jpg"]), index)
    assert [len(b) for b in stored.boxes] == [0, 2, 1, 0]


def test_a_file_name_several_images_have_is_said_in_one_line(tmp_path):
    index = _read(shared_name_csv(tmp_path / "ds"))
    results = _write(tmp_path / "r.json", _entries(["img.jpg", "img.jpg", "x.jpg"]))
    with pytest.warns(UserWarning) as caught:
        stored = read_stored_proposals(results, index)
    lines = [str(w.message) for w in caught]
    assert lines == [
        f"skipped {results}: 2 result(s) matched to no image: file_name 'img.jpg' names 2 "
        "images (a/img.jpg, b/img.jpg): give image_id or the path"
    ]
    assert [len(b) for b in stored.boxes] == [0, 0, 1, 0] and stored.unknown_results == 0
    assert stored.describe().endswith("; 2 of a file name several images have")
    # none matched: that line is the error, never "(first: None)"
    only = _write(tmp_path / "only.json", _entries(["img.jpg", "img.jpg"]))
    with pytest.raises(ValueError) as raised:
        read_stored_proposals(only, index)
    assert str(raised.value) == (
        f"{only}: 2 result(s) matched to no image: file_name 'img.jpg' names 2 images "
        "(a/img.jpg, b/img.jpg): give image_id or the path"
    )
    # with an image id, the id tells them apart
    ids = [{**e, "image_id": r.image_id} for e, r in zip(_entries(["img.jpg"] * 2), index.records)]
    assert [len(b) for b in read_stored_proposals(ids, index).boxes] == [1, 1, 0, 0]
    # ... when it is the id of one of them: x.jpg's id with img.jpg matches nothing (a list
    # of files numbered by position: detect a/*.jpg b/*.jpg)
    wrong = [{**_entries(["img.jpg"])[0], "image_id": index.records[2].image_id}]
    with pytest.warns(
        UserWarning, match=r"img.jpg \(image_id a/x.jpg is an image of another name\)"
    ):
        stored = read_stored_proposals(wrong + _entries(["y.jpg"]), index)
    assert [len(b) for b in stored.boxes] == [0, 0, 0, 1]


def test_unknown_images_are_counted_by_the_names_given(tmp_path):
    index = _read(shared_name_csv(tmp_path / "ds"))
    entries = _entries(["x.jpg", "c/img2.jpg", "d/img2.jpg", "d/img2.jpg"])
    with pytest.warns(UserWarning) as caught:
        stored = read_stored_proposals(entries, index)
    assert [str(w.message) for w in caught] == [
        f"skipped the results given: 3 result(s) for 2 image(s) not in {index.source} (first: "
        "'c/img2.jpg')"
    ]
    assert stored.unknown_results == 3


def test_eval_detections_of_paths_from_the_command_line(tmp_path, capsys):
    data = shared_name_csv(tmp_path / "ds")
    results = _write(tmp_path / "d.json", _entries(["a/img.jpg", "b/img.jpg"], category_id=1))
    argv = ["eval", "--detections", str(results), "--data", str(data), "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the category ids' note (below)
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{results}: 2 results for 2 of 4 images (2 without any)" in out
    assert "None" not in out


# ---------------------------------------------------------------- proposals as detections


def test_proposals_given_as_detections_are_said_to_be_proposals_in_one_line(tmp_path, capsys):
    data = shared_name_csv(tmp_path / "ds")
    proposals = _write(tmp_path / "p.json", _entries(["x.jpg", "y.jpg"] * 20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing warned one entry at a time first
        with pytest.raises(ValueError) as raised:
            read_stored_detections(proposals, _read(data))
    assert str(raised.value) == (
        f"{proposals}: none of its 40 entries has a category_id or category_name: proposals? "
        "score them with --proposals"
    )
    argv = ["eval", "--detections", str(proposals), "--data", str(data), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of its 40 entries has a category_id" in err, err
    # one entry with a class: the others are malformed detections, reported as before
    mixed = _entries(["x.jpg"], category_name="raccoon") + _entries(["y.jpg"])
    with pytest.warns(UserWarning, match="entry 1: neither a 'category_id' nor a 'category_name'"):
        stored = read_stored_detections(mixed, _read(data))
    assert stored.bad_results == 1


# ---------------------------------------------------------------- category ids without names


def _two_classes(root: Path) -> Path:
    """A CSV of two images, a raccoon in a.png and a dog in b.png (classes read sorted: dog
    1, raccoon 2), 100x100 boxes in 200x200 images."""
    root.mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (200, 200), (90, 120, 150)).save(root / name)
    path = root / "boxes.csv"
    path.write_text("a.png,10,10,110,110,raccoon\nb.png,50,50,150,150,dog\n")
    return path


def test_category_ids_alone_are_the_datasets_order_and_said_so_once(tmp_path):
    index = _read(_two_classes(tmp_path / "ds"))
    assert index.class_names == ["dog", "raccoon"] and index.categories is None
    # the GT as detections: ids 1..K in the dataset's order, as the code reads them
    truth = [
        {"file_name": "a.png", "bbox": [10, 10, 100, 100], "score": 0.9, "category_id": 2},
        {"file_name": "b.png", "bbox": [50, 50, 100, 100], "score": 0.9, "category_id": 1},
    ]
    with pytest.warns(UserWarning) as caught:
        stored = read_stored_detections(truth, index)
    assert [k.tolist() for k in stored.labels] == [[2], [1]]
    assert [str(w.message) for w in caught] == [
        "the results given: 2 result(s) with a category_id and no category_name: ids taken as "
        "1..K in the dataset's class order (1 'dog', 2 'raccoon'), which the model that wrote "
        "them may not share (rpnkit detect numbers its checkpoint's classes); category_name "
        "avoids the ambiguity"
    ]
    assert stored.notes == [str(caught[0].message)]
    # with names (what rpnkit detect writes), or on a COCO dataset: no word
    named = [{**e, "category_name": ["raccoon", "dog"][i]} for i, e in enumerate(truth)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [k.tolist() for k in read_stored_detections(named, index).labels] == [[2], [1]]
    coco = {
        "images": [{"id": 5, "file_name": "a.png", "width": 200, "height": 200}],
        "annotations": [{"id": 1, "image_id": 5, "bbox": [10, 10, 100, 100], "category_id": 7}],
        "categories": [{"id": 7, "name": "raccoon"}],
    }
    (tmp_path / "ds" / "images").mkdir()
    Image.new("RGB", (200, 200)).save(tmp_path / "ds" / "images" / "a.png")
    (tmp_path / "ds" / "instances.json").write_text(json.dumps(coco))
    coco_index = _read(tmp_path / "ds" / "instances.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stored = read_stored_detections([{**truth[0], "category_id": 7}], coco_index)
    assert [k.tolist() for k in stored.labels] == [[1]]


# ---------------------------------------------------------------- --top of stored proposals


def test_eval_proposals_top_scores_each_images_best_n_as_eval_checkpoint_does(tmp_path, capsys):
    data = shared_name_csv(tmp_path / "ds")
    # per image: a far box scored best, then the GT box: the best 1 misses, the best 2 hit
    entries = []
    for name in SHARED_NAMES:
        entries.append({"file_name": name, "bbox": [44, 44, 16, 16], "score": 0.9})
        entries.append({"file_name": name, "bbox": [8, 8, 32, 32], "score": 0.5})
    results = _write(tmp_path / "p.json", entries)
    argv = ["eval", "--proposals", str(results), "--data", str(data), "--no-progress"]
    metrics = {}
    for top in (None, 1, 2):
        out = tmp_path / f"m{top}.json"
        given = [] if top is None else ["--top", str(top)]
        assert main([*argv, *given, "--out", str(out)]) == 0
        metrics[top] = json.loads(out.read_text())
        text = capsys.readouterr()
        assert "warning" not in text.err, text.err
        if top is not None:
            assert f"8 results for 4 of 4 images; each image's best {top} scored" in text.out
    assert metrics[None]["recall@1000@0.5"] == metrics[2]["recall@1000@0.5"] == 1.0
    assert metrics[1]["recall@1000@0.5"] == 0.0  # --top 1: the far box alone, at every k
    assert main([*argv, "--max-detections", "1"]) == 2
    assert "for stored --proposals it is --top" in capsys.readouterr().err


# ---------------------------------------------------------------- a file of one split


def test_most_images_without_results_hint_at_a_split_on_the_count_line(tmp_path, capsys):
    data = shared_name_csv(tmp_path / "ds")
    index = _read(data)
    one = read_stored_proposals(_entries(["x.jpg"]), index)  # 1 of 4: most have none
    assert one.describe() == (
        "the results given: 1 results for 1 of 4 images (3 without any: a file of one split? "
        "give its --split or --split-file)"
    )
    half = read_stored_proposals(_entries(["x.jpg", "y.jpg"]), index)  # half: no hint
    assert half.describe() == "the results given: 2 results for 2 of 4 images (2 without any)"
    results = _write(tmp_path / "p.json", _entries(["x.jpg"]))
    assert main(["eval", "--proposals", str(results), "--data", str(data), "--no-progress"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(results))]
    assert lines == [
        f"{results}: 1 results for 1 of 4 images (3 without any: a file of one split? give its "
        "--split or --split-file)"
    ]
    # detections: a score threshold leaves many images without any, no hint
    results = _write(tmp_path / "d.json", _entries(["x.jpg"], category_name="raccoon"))
    assert main(["eval", "--detections", str(results), "--data", str(data), "--no-progress"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(results))]
    assert lines == [f"{results}: 1 results for 1 of 4 images (3 without any)"]
