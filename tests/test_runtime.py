"""The inference runtime's Python API: ``rpnkit.load`` and ``Predictor`` on every input kind
(files, folders, datasets, indexes, PIL images, arrays, tensors, lists of them), on small
untrained checkpoints of the tiny preset and real raccoon photos at 128 px."""

import dataclasses
import json
import math
import pickle
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rpnkit
from rpnkit.data import DataError, load_rgb, read_dataset
from rpnkit.engine.checkpoint import ModelSpec, save_model
from rpnkit.engine.evaluate import DetectionReport, RecallReport
from rpnkit.modeling.presets import build_detector, build_model, detector_config, preset_config
from rpnkit.modeling.sizes import padded_size

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
IMAGES = RACCOON / "images"
TEST_SPLIT = RACCOON / "test_labels.csv"
SMALL = {"short_side": 128, "max_size": 192}
THREE = ("cat", "dog", "raccoon")


def _spread_objectness(model) -> None:
    """An untrained RPN scores every anchor about 0.5, so proposals whose scores differ in the
    last bits swap places under the float noise of batched convolutions: spread the scores."""
    with torch.no_grad():
        torch.nn.init.normal_(model.rpn.head.conv.weight, std=0.3)
        for layer in model.rpn.head.cls_logits:
            torch.nn.init.normal_(layer.weight, std=3.0)


def _detector(num_classes: int, seed: int):
    """A tiny Faster R-CNN whose class layer is scaled so that detections pass 0.05."""
    config = detector_config(preset_config("tiny"), num_classes)
    torch.manual_seed(seed)
    model = build_detector(config)
    with torch.no_grad():
        torch.nn.init.normal_(model.roi_heads.box_head.cls_score.weight, std=0.3)
    return model, config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    tiny = preset_config("tiny")
    torch.manual_seed(0)
    rpn = build_model(tiny)
    _spread_objectness(rpn)
    det, det_config = _detector(1, seed=1)
    three, three_config = _detector(len(THREE), seed=2)
    return {
        "rpn": save_model(folder / "rpn.safetensors", rpn, ModelSpec("rpn", tiny, ("raccoon",))),
        "detector": save_model(
            folder / "detector.safetensors",
            det,
            ModelSpec("faster-rcnn", det_config, ("raccoon",)),
        ),
        # the detector's first stage saved alone, as an RPN checkpoint
        "first_stage": save_model(
            folder / "first_stage.safetensors",
            det.first_stage,
            ModelSpec("rpn", det_config.model, ("raccoon",)),
        ),
        "three_classes": save_model(
            folder / "three.safetensors", three, ModelSpec("faster-rcnn", three_config, THREE)
        ),
    }


@pytest.fixture(scope="module")
def rpn(checkpoints):
    return rpnkit.load(checkpoints["rpn"], "cpu", **SMALL)


@pytest.fixture(scope="module")
def detector(checkpoints):
    return rpnkit.load(checkpoints["detector"], "cpu", **SMALL)


@pytest.fixture(scope="module")
def three_classes(checkpoints):
    return rpnkit.load(checkpoints["three_classes"], "cpu", **SMALL)


def _same(a, b) -> None:
    """The same proposals, bit for bit (the same image through the same computation)."""
    assert torch.equal(a.boxes, b.boxes)
    assert torch.equal(a.scores, b.scores)


def _close(a, b) -> None:
    """The same proposals up to the float noise of batched convolutions."""
    torch.testing.assert_close(a.boxes, b.boxes, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-5)


def test_load_reads_the_kind_and_class_names_from_the_file(rpn, detector, three_classes):
    assert rpn.kind == "rpn" and not rpn.spec.is_detector
    assert rpn.class_names == ("raccoon",)
    assert isinstance(rpn.network, rpnkit.ProposalModel)
    assert detector.kind == "faster-rcnn" and detector.spec.is_detector
    assert detector.class_names == ("raccoon",)
    assert isinstance(detector.network, rpnkit.FasterRCNN)
    assert three_classes.class_names == THREE
    assert three_classes.spec.config.roi.num_classes == 4  # and background
    assert (rpn.short_side, rpn.max_size) == (128, 192)
    assert not rpn.network.training


def test_every_input_kind_of_one_image_gives_the_proposals_of_its_file(rpn):
    path = IMAGES / "raccoon-1.jpg"
    rgb = load_rgb(path)
    with Image.open(path) as img:
        pil = img.copy()
    (expected,) = rpn.propose(path, top=50)
    assert len(expected.boxes) == 50
    inputs = {
        "str path": str(path),
        "PIL image": pil,
        "uint8 array": rgb,
        "uint8 tensor": torch.from_numpy(rgb).permute(2, 0, 1),
        # floats that are exactly k/255 come back as the same 8-bit image
        "float32 array": rgb.astype(np.float32) / 255,
        "float64 array": rgb / 255.0,
        "float tensor": torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,
    }
    for kind, image in inputs.items():
        (found,) = rpn.propose(image, top=50)
        assert torch.equal(found.boxes, expected.boxes), kind
        assert torch.equal(found.scores, expected.scores), kind
        assert found.image_size == (417, 650), kind
    for wrong in (rgb.astype(np.float32), torch.from_numpy(rgb).permute(2, 0, 1).float()):
        with pytest.raises(ValueError, match=r"image 0: floating-point values from 0 to 255;"):
            rpn.propose(wrong, top=50)  # 0-255 floats: all white if clipped, so refused


def test_an_exif_rotated_photo_as_a_pil_image_gives_the_proposals_of_its_file(rpn, tmp_path):
    # raccoon-1 stored 650 wide x 417 high with EXIF orientation 6 (displayed 417 x 650);
    # images.py: "any image as 8-bit RGB in its displayed orientation: files, PIL images..."
    with Image.open(IMAGES / "raccoon-1.jpg") as img:
        exif = img.getexif()
        exif[0x0112] = 6
        img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    (from_file,) = rpn.propose(tmp_path / "rotated.jpg", top=10)
    assert from_file.image_size == (650, 417)
    with Image.open(tmp_path / "rotated.jpg") as img:
        (from_pil,) = rpn.propose(img, top=10)
    assert from_pil.image_size == from_file.image_size
    _same(from_pil, from_file)


def test_a_list_mixing_input_kinds_gives_each_image_its_result_in_order(rpn):
    path = IMAGES / "raccoon-1.jpg"
    rgb = load_rgb(path)
    (expected,) = rpn.propose(path, top=10)
    mixed = [str(path), path, Image.fromarray(rgb), rgb, torch.from_numpy(rgb).permute(2, 0, 1)]
    results = rpn.propose(mixed, top=10)
    assert [r.file_name for r in results] == [
        "raccoon-1.jpg",
        "raccoon-1.jpg",
        "image-2",
        "image-3",
        "image-4",
    ]
    assert [r.image_id for r in results] == [0, 1, 2, 3, 4]
    assert [r.source for r in results] == [path, path, None, None, None]
    assert all(isinstance(r.source, Path) for r in results[:2])
    for r in results:  # batched four and one
        _close(r, expected)
    named = rpn.propose(mixed, top=10, names=["a", "b", "c", "d", "e"])
    # files keep their own names; in-memory images take the given ones
    assert [r.file_name for r in named] == ["raccoon-1.jpg", "raccoon-1.jpg", "c", "d", "e"]


def test_a_grayscale_array_is_read_as_three_equal_channels(rpn):
    gray = load_rgb(IMAGES / "raccoon-1.jpg").mean(axis=2).astype(np.uint8)  # (H, W)
    item = rpn.dataset(gray)[0]
    assert item["image"].shape[0] == 3
    assert torch.equal(item["image"][0], item["image"][1])
    assert torch.equal(item["image"][0], item["image"][2])
    (found,) = rpn.propose(gray, top=20)
    (as_rgb,) = rpn.propose(np.repeat(gray[..., None], 3, axis=2), top=20)
    (one_channel,) = rpn.propose(torch.from_numpy(gray)[None], top=20)  # (1, H, W)
    (plain,) = rpn.propose(torch.from_numpy(gray), top=20)  # (H, W): one image, not H rows
    _same(found, as_rgb)
    _same(one_channel, as_rgb)
    _same(plain, as_rgb)
    assert found.image_size == gray.shape


def test_a_batch_in_memory_is_images_in_either_layout_and_bfloat16_is_read(rpn):
    rgb = load_rgb(IMAGES / "raccoon-1.jpg")  # (H, W, 3) uint8
    (alone,) = rpn.propose(rgb, top=20)
    both = rpn.propose(np.stack([rgb, rgb]), top=20)  # (N, H, W, C)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert len(both) == 2 and all(_close(r, alone) is None for r in both)  # batched: float noise
    (as_bf16,) = rpn.propose((chw.float() / 255).to(torch.bfloat16)[None], top=20)
    assert as_bf16.boxes.shape == alone.boxes.shape  # bf16 rounds the pixels: near, not equal


def test_a_csv_whose_images_are_elsewhere_is_read_with_images(rpn, tmp_path):
    csv = tmp_path / "boxes.csv"
    csv.write_text("filename,xmin,ymin,xmax,ymax,class\nraccoon-1.jpg,81,88,522,408,raccoon\n")
    report = rpn.evaluate(csv, images=IMAGES)
    assert report.metrics["AR@100"] >= 0  # read, scored
    (found,) = rpn.propose(csv, images=IMAGES, top=5)
    assert found.file_name == "raccoon-1.jpg"
    (item,) = rpn.dataset(csv, images=IMAGES)  # the dataset propose reads, as it reads it
    assert item["file_name"] == "raccoon-1.jpg" and len(item["boxes"]) == 1


def test_a_folder_gives_one_result_per_image_in_name_order(rpn, tmp_path):
    for name in ("raccoon-2.jpg", "raccoon-1.jpg"):
        shutil.copy(IMAGES / name, tmp_path / name)
    results = rpn.propose(tmp_path, top=10, batch_size=1)
    assert [r.file_name for r in results] == ["raccoon-1.jpg", "raccoon-2.jpg"]
    assert [r.image_id for r in results] == [0, 1]
    assert [r.source for r in results] == [tmp_path / "raccoon-1.jpg", tmp_path / "raccoon-2.jpg"]
    assert [r.image_size for r in results] == [(417, 650), (573, 800)]
    for r in results:
        (alone,) = rpn.propose(IMAGES / r.file_name, top=10)
        _same(r, alone)
    assert [r.file_name for r in rpn.propose(str(tmp_path), top=1)] == [
        "raccoon-1.jpg",
        "raccoon-2.jpg",
    ]


def test_a_dataset_path_and_its_index_give_the_proposals_of_its_files(rpn):
    by_path = rpn.propose(str(RACCOON), split_file=str(TEST_SPLIT), top=10, batch_size=1)
    index = read_dataset(RACCOON, split_file=TEST_SPLIT)
    by_index = rpn.propose(index, top=10, batch_size=1)
    listed = {line.split(",")[0] for line in TEST_SPLIT.read_text().splitlines()[1:]}
    assert len(by_path) == len(index.records) == len(listed) == 40
    assert {r.file_name for r in by_path} == listed
    for a, b in zip(by_path, by_index):
        assert (a.file_name, a.image_id, a.source) == (b.file_name, b.image_id, b.source)
        _same(a, b)
    for r in by_path[:3]:
        assert r.image_id == Path(r.file_name).stem  # VOC ids: the annotation's name
        assert r.source.resolve() == (IMAGES / r.file_name).resolve()
        (alone,) = rpn.propose(r.source, top=10)
        _same(r, alone)


def test_results_are_in_original_pixels_best_first(rpn):
    for name, size in (("raccoon-1.jpg", (417, 650)), ("raccoon-105.jpg", (960, 720))):
        (r,) = rpn.propose(IMAGES / name, top=1000)
        h, w = size
        assert r.image_size == size == load_rgb(IMAGES / name).shape[:2]
        # the tiny preset keeps 300 after NMS: a top above that raises the limit for the call
        assert 300 < len(r.boxes) <= 1000
        assert r.boxes.shape == (len(r.scores), 4)
        assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 1] >= 0).all()
        assert (r.boxes[:, 2] <= w + 1e-3).all() and (r.boxes[:, 3] <= h + 1e-3).all()
        assert (r.boxes[:, 2:] > r.boxes[:, :2]).all()
        # the network sees at most 192 px: boxes beyond that are in the original's pixels
        assert r.boxes[:, 2].max() > 192 and r.boxes[:, 3].max() > 192
        assert (r.scores[:-1] >= r.scores[1:]).all()
        (best,) = rpn.propose(IMAGES / name, top=7)
        assert len(best.boxes) == 7
        assert torch.equal(best.boxes, r.boxes[:7])


def test_batched_proposals_equal_one_image_at_a_time(rpn):
    paths = [IMAGES / f"raccoon-{i}.jpg" for i in (1, 2, 3)]
    # 123x192, 128x179 and 128x192 at 128 px: one padded size, so every image sees the same
    # zero border in the batch as alone (a CNN's features near the border depend on it)
    sizes = {padded_size(*rpn.dataset(paths)[i]["image"].shape[1:]) for i in range(3)}
    assert sizes == {(128, 192)}
    one = rpn.propose(paths, top=20, batch_size=1)
    three = rpn.propose(paths, top=20, batch_size=3)
    assert [r.file_name for r in three] == [p.name for p in paths]
    for a, b in zip(one, three):
        assert a.image_size == b.image_size
        _close(b, a)


def test_detections_have_labels_names_and_coco_entries(three_classes):
    paths = [IMAGES / "raccoon-1.jpg", IMAGES / "raccoon-2.jpg"]
    results = three_classes.detect(paths)
    assert [r.file_name for r in results] == ["raccoon-1.jpg", "raccoon-2.jpg"]
    for r in results:
        h, w = r.image_size
        assert len(r.labels) > 0
        assert ((r.labels >= 1) & (r.labels <= 3)).all()
        assert r.names == [THREE[int(k) - 1] for k in r.labels]
        assert (r.scores >= 0.05).all()  # the model's own threshold
        assert (r.boxes[:, 2] <= w + 1e-3).all() and (r.boxes[:, 3] <= h + 1e-3).all()
        assert r.class_names == THREE
    first = results[0]
    entries = first.to_coco_results()
    assert len(entries) == len(first.boxes)
    entry = entries[0]
    assert set(entry) == {
        "file_name",
        "image_id",
        "bbox",
        "score",
        "category_id",
        "category_name",
    }
    x1, y1, x2, y2 = (float(v) for v in first.boxes[0])
    assert entry["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
    assert entry["score"] == pytest.approx(float(first.scores[0]), abs=1e-5)
    assert entry["category_id"] == int(first.labels[0])
    assert entry["category_name"] == first.names[0]
    assert (entry["file_name"], entry["image_id"]) == ("raccoon-1.jpg", 0)
    everything = rpnkit.to_coco_results(results)
    assert everything == entries + results[1].to_coco_results()


def test_coco_results_entries_by_hand():
    from rpnkit.engine.results import DetectionResult, ProposalResult

    boxes = torch.tensor([[10.0, 20.0, 40.0, 60.125], [0.0, 0.0, 1.0, 1.0]])
    scores, labels = torch.tensor([0.123456, 0.5]), torch.tensor([2, 1])
    found = DetectionResult(4, "a.jpg", boxes, scores, labels, ("cat", "dog"), (80, 90))
    assert found.to_coco_results() == [
        {"file_name": "a.jpg", "image_id": 4, "bbox": [10.0, 20.0, 30.0, 40.12],
         "score": 0.12346, "category_id": 2, "category_name": "dog"},
        {"file_name": "a.jpg", "image_id": 4, "bbox": [0.0, 0.0, 1.0, 1.0],
         "score": 0.5, "category_id": 1, "category_name": "cat"},
    ]  # fmt: skip
    proposed = ProposalResult("b", "b.jpg", boxes[:1], scores[:1], (80, 90))
    assert proposed.to_coco_results() == [
        {"file_name": "b.jpg", "image_id": "b", "bbox": [10.0, 20.0, 30.0, 40.12], "score": 0.12346}
    ]
    nothing = DetectionResult(
        5, "c.jpg", torch.zeros(0, 4), torch.zeros(0), labels[:0], ("cat",), (8, 9)
    )
    assert nothing.to_coco_results() == []


def test_coco_results_entries_take_arrays_integers_and_one_box_and_check_their_fields():
    from rpnkit.engine.results import coco_entries

    as_floats = coco_entries(1, "a.jpg", torch.tensor([[1, 2, 4, 6]]), torch.tensor([1]))
    assert as_floats == [{"file_name": "a.jpg", "image_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0],
                          "score": 1.0}]  # fmt: skip
    assert all(isinstance(v, float) for v in as_floats[0]["bbox"] + [as_floats[0]["score"]])
    from_numpy = coco_entries(1, "a.jpg", np.array([1.0, 2.0, 4.0, 6.0]), np.array([1.0]))
    assert from_numpy == as_floats
    with pytest.raises(ValueError, match="1 values of 'category_id' for 2 boxes"):
        coco_entries(1, "a.jpg", torch.zeros(2, 4), torch.zeros(2), category_id=[3])
    with pytest.raises(ValueError, match="3 values of 'score' for 2 boxes"):
        coco_entries(1, "a.jpg", torch.zeros(2, 4), torch.zeros(3))


def test_coco_json_text_is_json_dumps_of_the_entries_for_awkward_names_and_values():
    import json

    from rpnkit.engine.results import DetectionResult, ProposalResult, encode_entries

    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(50, 4, generator=g) * 900
    boxes[:, 2:] += boxes[:, :2]
    boxes[0] = torch.tensor([1e-7, -0.0, 123456.789, 2.5])  # tiny, negative zero, large
    scores, labels = torch.rand(50, generator=g), torch.randint(1, 4, (50,), generator=g)
    names = ('say "cheese" 100%', "caf\u00e9 \\ tab\t %s", "plain")
    results = [
        DetectionResult(7, 'q"uote\\ %d.jpg', boxes, scores, labels, names, (900, 900)),
        DetectionResult("id-2", "b.jpg", boxes[:0], scores[:0], labels[:0], names, (9, 9)),
        ProposalResult("x%", "\u00e9t\u00e9.jpg", boxes.double(), scores.double(), (9, 9)),
    ]
    for result in results:
        text = result.encoded().text()
        assert "[" + text + "]" == json.dumps(result.to_coco_results())
    not_finite = encode_entries(1, "a.jpg", torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
                                torch.tensor([float("nan")])).text()  # fmt: skip
    assert not_finite == ('{"file_name": "a.jpg", "image_id": 1, "bbox": [0.0, 0.0, 1.0, 1.0], '
                          '"score": NaN}')  # fmt: skip
    with pytest.raises(ValueError, match="1 values of 'category_id' for 2 boxes"):
        encode_entries(1, "a.jpg", torch.zeros(2, 4), torch.zeros(2), category_id=[3])


@pytest.mark.parametrize("background", [False, True])
def test_results_are_written_as_they_come_and_only_whole(tmp_path, background):
    import json

    from rpnkit.engine.results import ProposalResult, to_coco_results
    from rpnkit.engine.writing import CocoResultsWriter, write_coco_results

    boxes = torch.tensor([[10.0, 20.0, 40.0, 60.125], [0.0, 0.0, 1.0, 1.0]])
    results = [
        ProposalResult(k, f"{k}.jpg", boxes[:k], torch.tensor([0.9, 0.1])[:k], (80, 90))
        for k in (0, 2, 0, 1)
    ]
    out = write_coco_results(tmp_path / "sub" / "p.json", results, background=background)
    assert out.read_text() == json.dumps(to_coco_results(results))
    assert len(json.loads(out.read_text())) == 3
    empty = write_coco_results(tmp_path / "empty.json", [], background=background)
    assert json.loads(empty.read_text()) == []
    writer = CocoResultsWriter(out, background=background)
    with pytest.raises(RuntimeError, match="stopped"), writer:
        writer.add(results[1])
        raise RuntimeError("stopped")
    assert out.read_text() == json.dumps(to_coco_results(results))  # the old file, whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["p.json"]  # no temporary left
    assert writer.entries == 2


def test_a_results_writer_reports_what_it_cannot_pickle_and_counts_per_use(tmp_path):
    from rpnkit.engine.results import ProposalResult
    from rpnkit.engine.writing import CocoResultsWriter

    good = ProposalResult(1, "a.jpg", torch.ones(2, 4), torch.ones(2), (8, 8))
    bad = ProposalResult(lambda: 0, "b.jpg", torch.ones(1, 4), torch.ones(1), (8, 8))
    writer = CocoResultsWriter(tmp_path / "p.json", background=True)
    with pytest.raises(RuntimeError, match="inside its with block"):
        writer.add(good)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)), writer:
        writer.add(good)
        writer.add(bad)
    assert list(tmp_path.iterdir()) == []
    for _ in range(2):
        with writer:
            writer.add(good)
        assert writer.entries == 2


def test_results_that_cannot_be_written_say_where_before_any_inference(tmp_path):
    from rpnkit.engine.writing import CocoResultsWriter

    (tmp_path / "a_file").write_text("")
    for background in (False, True):
        with pytest.raises(ValueError, match=r"a_file/p\.json: .*a_file is a file, not a folder"):
            CocoResultsWriter(tmp_path / "a_file" / "p.json", background=background).__enter__()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_results_writer_in_a_daemonic_process_writes_in_its_own_thread(tmp_path):
    import json
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_write_one, args=(str(tmp_path / "p.json"),), daemon=True)
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert len(json.loads((tmp_path / "p.json").read_text())) == 2


def _write_one(path: str) -> None:
    from rpnkit.engine.results import ProposalResult
    from rpnkit.engine.writing import write_coco_results

    write_coco_results(path, [ProposalResult(1, "a.jpg", torch.ones(2, 4), torch.ones(2), (8, 8))])


@pytest.mark.skipif(sys.platform != "linux", reason="the writing process is Linux's")
def test_the_writing_process_ends_with_its_parent_and_removes_the_temporary_file(tmp_path):
    import signal
    import subprocess
    import time

    script = f"""
import os, signal, sys, torch
from rpnkit.engine.results import ProposalResult
from rpnkit.engine.writing import CocoResultsWriter
writer = CocoResultsWriter({str(tmp_path / "p.json")!r}, background=True).__enter__()
writer.add(ProposalResult(1, "a.jpg", torch.ones(2, 4), torch.ones(2), (8, 8)))
print(writer._process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid = int(done.stdout.split()[0])
    for _ in range(100):
        if not list(tmp_path.iterdir()) and not _alive(pid):
            break
        time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_results_writer_whose_process_dies_says_so_and_leaves_no_file(tmp_path):
    from rpnkit.engine.results import ProposalResult
    from rpnkit.engine.writing import CocoResultsWriter

    result = ProposalResult(1, "a.jpg", torch.ones(3, 4), torch.ones(3), (8, 8))
    writer = CocoResultsWriter(tmp_path / "p.json", background=True)
    ended = r"p\.json: the process writing the results ended with code -9"
    with pytest.raises(RuntimeError, match=ended), writer:
        writer.add(result)
        writer._process.kill()
        writer._process.join()
        for _ in range(200):  # more than the queue holds: the writer notices
            writer.add(result)
    assert list(tmp_path.iterdir()) == []


def test_coco_json_text_spells_every_hundredth_and_score_as_json_dumps():
    import json

    from rpnkit.engine.results import EncodedEntries, _decimals

    k = np.arange(100_001)
    xywh = np.stack([k % 100_000 / 100, k * 7919 % 10**11 / 100, k / 100 + 999_000_000,
                     (k % 1000) * 100 / 100], axis=1)  # fmt: skip
    scores = k / 1e5

    def encoded(xywh, scores, fields=()):
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return EncodedEntries(3, "a.jpg", xyxy, scores, fields)

    labels = [int(v) for v in k % 3 + 1]
    for fields in ((), (("category_id", labels),)):
        every = encoded(xywh, scores, fields)
        assert np.array_equal(every.rows[:, 0], xywh[:, 0]) and np.array_equal(
            every.rows[:, 4], scores
        )
        assert _decimals(every.rows) is not None  # the tables, not repr, spell these
        assert every.text() == ", ".join(json.dumps(e) for e in every.entries())
    for odd in (-0.0, -0.5, 1e9, 1.5):  # repr's own spelling: negatives, large, a score > 1
        boxes, changed = xywh[:50].copy(), scores[:50].copy()
        if odd == 1.5:
            changed[7] = odd
        else:
            boxes[7, 0] = odd
        some = encoded(boxes, changed)
        assert some.text() == ", ".join(json.dumps(e) for e in some.entries())
        entry = json.loads(f"[{some.text()}]")[7]
        written = entry["score"] if odd == 1.5 else entry["bbox"][0]
        assert written == odd and math.copysign(1, written) == math.copysign(1, odd)


def test_entries_round_float32_values_as_pythons_round_and_take_any_tensor():
    from rpnkit.engine.results import coco_entries

    g = torch.Generator().manual_seed(1)
    boxes = torch.rand(4000, 4, generator=g) * 1000
    boxes[:, 2:] += boxes[:, :2]
    boxes[:3] = torch.tensor([[1.115, 2.675, 3.125, 4.005]] * 3)  # decimal ties, nearly
    scores = torch.rand(4000, generator=g)
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    expected = [([round(v, 2) for v in b], round(s, 5)) for b, s in zip(xywh, scores.tolist())]
    entries = coco_entries(1, "a.jpg", boxes, scores)
    assert [(e["bbox"], e["score"]) for e in entries] == expected
    tracked = coco_entries(1, "a.jpg", boxes[:5] * torch.ones(1, requires_grad=True), scores[:5])
    assert tracked == entries[:5]  # tensors that require grad (or sit on a GPU) are fine too


def test_detection_results_keep_the_valid_leading_rows_at_the_threshold():
    from types import SimpleNamespace

    from rpnkit.engine.runtime import Predictor
    from rpnkit.modeling.roi_heads import Detections

    boxes = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    scores = torch.tensor([[0.9, 0.6, 0.4, 0.0], [0.8, float("nan"), 0.7, 0.0]])
    labels = torch.tensor([[1, 2, 1, 0], [2, 2, 1, 0]])
    found = Detections(boxes, scores, labels, num=torch.tensor([3, 3]))
    metas = [{"image_id": i, "file_name": f"{i}.jpg", "orig_size": (10, 10), "size": (20, 20),
              "position": i} for i in range(2)]  # fmt: skip
    owner = SimpleNamespace(class_names=("a", "b"))

    def kept(threshold):
        pairs = Predictor._detection_results(owner, [(metas, found)], threshold, {})
        return [(p, r.scores.tolist(), r.boxes.tolist()) for p, r in pairs]

    everything = kept(0.0)  # padding scores 0 too, but is not valid
    assert [len(s) for _, s, _ in everything] == [3, 1]  # a NaN score ends the kept rows
    assert everything[0][2][1] == (boxes[0, 1] / 2).tolist()  # in original pixels
    assert [s for _, s, _ in kept(0.5)] == [pytest.approx([0.9, 0.6]), pytest.approx([0.8])]
    assert [p for p, _, _ in kept(0.95)] == [0, 1]  # every image, even with nothing kept


def test_per_image_takes_each_rows_prefix_in_original_pixels():
    from rpnkit.engine.runner import per_image

    metas = [
        {"orig_size": (50, 200), "size": (100, 400)},
        {"orig_size": (30, 30), "size": (60, 90)},
    ]
    boxes = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    scores = torch.tensor([[0.9, 0.8, 0.0], [0.7, 0.0, 0.0]])
    got = list(per_image(metas, torch.tensor([2, 0]), boxes, scores))
    assert [m is n for (m, *_), n in zip(got, metas)] == [True, True]
    assert torch.equal(got[0][1], boxes[0, :2] * torch.tensor([0.5, 0.5, 0.5, 0.5]))
    assert torch.equal(got[0][2], torch.tensor([0.9, 0.8]))
    assert got[1][1].shape == (0, 4) and got[1][2].shape == (0,)
    scores[0, 0] = -1.0  # the results do not share the batch's buffers
    assert got[0][2][0] == 0.9


def test_a_folder_takes_images_by_suffix_in_any_case_and_warns_about_the_rest(tmp_path):
    from rpnkit.data import index_for_input

    for name, fmt in (("B.JPG", "JPEG"), ("a.jpeg", "JPEG"), ("c.Png", "PNG")):
        Image.new("RGB", (20, 10)).save(tmp_path / name, format=fmt)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="notes.txt: not an image"):
        index = index_for_input(tmp_path)
    assert [r.file_name for r in index.records] == ["B.JPG", "a.jpeg", "c.Png"]
    assert len(index.issues) == 1 and index.issues[0].startswith(f"{tmp_path / 'notes.txt'}: ")


def test_score_threshold_keeps_the_detections_scoring_at_least_it(detector):
    path = IMAGES / "raccoon-1.jpg"
    (every,) = detector.detect(path)
    threshold = float(every.scores.median())
    (high,) = detector.detect(path, score_threshold=threshold)
    keep = every.scores >= threshold
    assert 0 < len(high.scores) < len(every.scores)
    assert torch.equal(high.boxes, every.boxes[keep])
    assert torch.equal(high.labels, every.labels[keep])
    assert (high.scores >= threshold).all()


def test_a_detector_proposes_with_its_first_stage(detector, checkpoints):
    alone = rpnkit.load(checkpoints["first_stage"], "cpu", **SMALL)
    assert alone.kind == "rpn"
    paths = [IMAGES / "raccoon-1.jpg", IMAGES / "raccoon-105.jpg"]
    for a, b in zip(detector.propose(paths, top=50), alone.propose(paths, top=50)):
        assert a.file_name == b.file_name
        _same(a, b)


def test_misuse_is_a_clear_value_error(rpn, checkpoints):
    path = IMAGES / "raccoon-1.jpg"
    with pytest.raises(ValueError, match="not a Faster R-CNN checkpoint"):
        rpn.detect(path)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        rpnkit.load(checkpoints["rpn"], "cpu", amp="fp16")
    with pytest.raises(ValueError, match="top must be an integer >= 1, got 0"):
        rpn.propose(path, top=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        rpn.propose(path, batch_size=0)
    for images in (path, IMAGES, [load_rgb(path)]):  # no boxes to score against
        with pytest.raises(ValueError, match="evaluation needs a labelled dataset"):
            rpn.evaluate(images)


def test_evaluate_measures_recall_of_an_rpn_and_map_of_a_detector(rpn, detector):
    options = {"split_file": str(TEST_SPLIT), "batch_size": 8}
    recall = rpn.evaluate(str(RACCOON), **options)
    assert isinstance(recall, RecallReport)
    assert 0 <= recall.metrics["AR@100"] <= 1
    assert "AR 0.5:0.95" in recall.format()
    most = max(len(boxes) for boxes, _ in recall.kept)  # the tiny preset keeps 300 at most
    assert most <= 300 and f"(at most {most} proposals per image: " in recall.format()
    assert recall.format().endswith(f"k=1000 count those {most})")
    five = rpn.evaluate(str(RACCOON), top=5, **options)  # fewer than the model keeps: its best 5
    assert max(len(boxes) for boxes, _ in five.kept) <= 5
    assert five.metrics["AR@10"] == five.metrics["AR@100"] == five.metrics["AR@1000"]
    assert five.metrics["AR@1000"] <= recall.metrics["AR@1000"]
    found = detector.evaluate(str(RACCOON), **options)
    assert isinstance(found, DetectionReport)
    assert 0 <= found.metrics["AP50"] <= 1
    assert set(found.metrics["per_class_AP"]) == {"raccoon"}
    # a detector's proposals are measured through its first stage
    assert isinstance(detector.evaluate_proposals(str(RACCOON), **options), RecallReport)


def test_evaluating_a_detector_on_other_classes_names_the_dataset(three_classes):
    source = re.escape(str(RACCOON / "annotations"))
    # read on its own, raccoon's one class would be label 1, the checkpoint's "cat"
    index = read_dataset(RACCOON, split_file=TEST_SPLIT)
    with pytest.raises(ValueError, match=rf"{source}: its classes \['raccoon'\]"):
        three_classes.evaluate(index)
    # by path it is read against the checkpoint's names: raccoon is label 3, as trained
    report = three_classes.evaluate(str(RACCOON), split_file=str(TEST_SPLIT))
    assert list(report.metrics["per_class_AP"]) == list(THREE)
    assert math.isnan(report.metrics["per_class_AP"]["cat"])  # no cat in raccoon
    assert not math.isnan(report.metrics["per_class_AP"]["raccoon"])


def test_an_unreadable_file_in_a_list_is_skipped_with_a_warning(rpn, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    good = [IMAGES / "raccoon-1.jpg", IMAGES / "raccoon-2.jpg"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = rpn.propose([good[0], bad, tmp_path / "missing.jpg", good[1]], top=5)
    skipped = [str(w.message) for w in caught if str(w.message).startswith("skipped")]
    assert len(skipped) == 2
    assert "bad.jpg: unreadable" in skipped[0]
    assert "missing.jpg: image file not found" in skipped[1]
    assert [r.file_name for r in results] == ["raccoon-1.jpg", "raccoon-2.jpg"]
    assert [r.image_id for r in results] == [0, 3]  # positions in the list
    for r, path in zip(results, good):
        (alone,) = rpn.propose(path, top=5)
        _close(r, alone)
    with pytest.raises(DataError, match=r"bad\.jpg: unreadable"):
        rpn.propose([good[0], bad], strict=True)


def test_images_a_folders_index_leaves_out_are_counted_as_skipped(rpn, tmp_path):
    shutil.copy(IMAGES / "raccoon-1.jpg", tmp_path)
    (tmp_path / "broken.jpg").write_text("not an image")
    (tmp_path / "notes.txt").write_text("not an image file at all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = rpn.propose(tmp_path, top=5)
    assert [r.file_name for r in results] == ["raccoon-1.jpg"]
    (line,) = rpn.skipped  # the unreadable image, not the text file
    assert line.startswith(f"{tmp_path / 'broken.jpg'}: unreadable")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"short_side": -5}, "short_side must be an integer >= 1, got -5"),
        ({"short_side": 0}, "short_side must be an integer >= 1, got 0"),  # not the default
        ({"max_size": 800.5}, "max_size must be an integer >= 32, got 800.5"),
        ({"max_size": 10}, "max_size must be an integer >= 32, got 10"),  # as --max-size
        ({"num_workers": -1}, "num_workers must be an integer >= 0 or None, got -1"),
        ({"compile": ""}, "compile must be True, False or a backend's name"),
    ],
)
def test_load_refuses_settings_that_cannot_work(checkpoints, settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        rpnkit.load(checkpoints["rpn"], "cpu", **settings)


def test_counts_of_a_call_are_integers(rpn, three_classes):
    path = IMAGES / "raccoon-1.jpg"
    for top in (2.5, None, True):
        with pytest.raises(ValueError, match=r"top must be an integer >= 1, got "):
            rpn.propose(path, top=top)
    with pytest.raises(ValueError, match=r"max_detections must be an integer >= 1 or None"):
        three_classes.detect(path, max_detections=1.5)
    spec = dataclasses.replace(three_classes.spec, class_names=("a", "b"))
    with pytest.raises(ValueError, match=r"the spec names 2 class\(es\) and the detector's box"):
        rpnkit.Predictor(three_classes.network, spec, device="cpu")


def test_inputs_and_options_it_cannot_take_are_type_errors_naming_the_method(rpn, three_classes):
    path = IMAGES / "raccoon-1.jpg"
    for inputs in (None, 3, b"raccoon-1.jpg", {"image": str(path)}):
        # the method called is named (it once named iter_proposals for propose)
        with pytest.raises(TypeError, match=r"^propose\(\): inputs must be .*got "):
            rpn.propose(inputs)
        with pytest.raises(TypeError, match=r"^evaluate\(\): inputs must be"):
            rpn.evaluate(inputs)
        with pytest.raises(TypeError, match=r"^iter_proposals\(\): inputs must be"):
            rpn.iter_proposals(inputs)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) tpo; it takes top, "):
        rpn.iter_proposals(path, tpo=3)  # at the call, not at the first result
    with pytest.raises(TypeError, match=r"^propose\(\) got unexpected keyword argument\(s\) tpo"):
        rpn.propose(path, tpo=3)
    with pytest.raises(TypeError, match=r"^evaluate\(\) got unexpected keyword argument\(s\) x;"):
        rpn.evaluate(path, x=3)
    with pytest.raises(TypeError, match=r"^detect\(\): inputs must be"):
        three_classes.detect(None)
    with pytest.raises(TypeError, match=r"^detect\(\) got unexpected keyword argument\(s\) bogus"):
        three_classes.detect(path, bogus=1)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) scroe; .*\bsplit\b"):
        rpn.evaluate_proposals(path, scroe=0.3)
    assert len(rpn.propose([path], top=5, split=None, strict=False)) == 1  # data options pass


def test_evaluate_given_the_other_kind_s_limit_says_which_one_counts_its_results(
    rpn, three_classes
):
    data = IMAGES / "raccoon-1.jpg"  # refused before anything is read
    with pytest.raises(TypeError, match=r"results are detections, counted by max_detections\)$"):
        three_classes.evaluate(data, top=5)
    with pytest.raises(TypeError, match=r"results are proposals, counted by top\)$"):
        rpn.evaluate(data, max_detections=5)
    with pytest.raises(TypeError, match=r"tpo; it takes top, [^(]*$"):  # no hint for a typo
        rpn.evaluate(data, tpo=5)


def test_a_dataset_of_foreign_items_is_a_type_error_saying_what_rpnkit_takes(rpn):
    class Pairs(torch.utils.data.Dataset):  # torchvision-style (image, target) pairs
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 64, 64), {}

    with pytest.raises(TypeError, match=r"a dataset item must be rpnkit's .* got tuple"):
        rpn.propose(Pairs())

    class Tensors(Pairs):  # bare image tensors
        def __getitem__(self, i):
            return torch.zeros(3, 64, 64)

    with pytest.raises(TypeError, match=r"a dataset item must be rpnkit's .* got Tensor"):
        rpn.propose(Tensors())


def test_results_writing_takes_one_result_and_refuses_what_it_cannot_write(rpn, tmp_path):
    (found,) = rpn.propose(IMAGES / "raccoon-1.jpg", top=3)
    assert rpnkit.to_coco_results(found) == rpnkit.to_coco_results([found])
    path = rpnkit.write_coco_results(tmp_path / "one.json", found, background=False)
    assert len(json.loads(path.read_text())) == 3
    with pytest.raises(ValueError, match=r"is a folder; give the JSON file to write"):
        rpnkit.write_coco_results(tmp_path, [found])
    with pytest.raises(TypeError, match=r"takes ProposalResult and DetectionResult .* got dict"):
        rpnkit.write_coco_results(tmp_path / "d.json", found.to_coco_results(), background=False)
    with pytest.raises(ValueError, match=r"is a file, not a folder to write the run in"):
        rpnkit.fit(str(IMAGES.parent), model="tiny", out=path)


def test_iterators_check_their_arguments_at_the_call_and_read_the_data_when_used(rpn, tmp_path):
    with pytest.raises(ValueError, match="top must be an integer >= 1"):
        rpn.iter_proposals(IMAGES, top=0)  # at the call
    results = rpn.iter_proposals(tmp_path, top=5)  # an empty folder, for now
    shutil.copy(IMAGES / "raccoon-1.jpg", tmp_path)
    assert [r.file_name for r in results] == ["raccoon-1.jpg"]  # read at the first result


def test_a_per_call_head_config_is_for_inference_only():
    from rpnkit import GroundTruth

    network = build_detector(detector_config(preset_config("tiny"), 3)).train()
    images = torch.rand(1, 3, 64, 64)
    targets = GroundTruth.from_lists([torch.tensor([[4.0, 4, 40, 40]])], [torch.tensor([1])])
    with pytest.raises(ValueError, match="a per-call config is for inference, not for training"):
        network(images, torch.tensor([[64, 64]]), targets, head_config=network.roi_heads.config)


def test_a_checkpoint_whose_weights_overflow_is_one_line_at_loading(tmp_path):
    network = build_model(preset_config("tiny"))
    with torch.no_grad():
        for parameter in network.backbone.parameters():
            parameter.mul_(1e30)  # finite, as a run that had diverged leaves them
    path = save_model(tmp_path / "c.safetensors", network, ModelSpec("rpn", preset_config("tiny")))
    with pytest.raises(ValueError, match=r"c.safetensors: the network's output on a probe image"):
        rpnkit.load(path, "cpu")


# --- regressions of the Python API audit ----------------------------------------------------


COCO_ANNOTATIONS = RACCOON.parent / "coco128" / "annotations"


def _truncated(tmp_path: Path) -> Path:
    """raccoon-1.jpg cut short: its header reads, its pixels do not (a worker finds it)."""
    path = tmp_path / "trunc.jpg"
    path.write_bytes((IMAGES / "raccoon-1.jpg").read_bytes()[:3000])
    return path


def _skipped_warnings(caught) -> list:
    return [w for w in caught if issubclass(w.category, rpnkit.data.SkippedSample)]


def test_a_coco_annotations_folder_is_read_by_inference_as_by_training(rpn, tmp_path):
    from rpnkit.data import index_for_input

    index = index_for_input(COCO_ANNOTATIONS, split="train2017")  # was: plain images, none
    assert index.source == read_dataset(COCO_ANNOTATIONS, split="train2017").source
    assert len(index.records) == 128
    report = rpn.evaluate(str(COCO_ANNOTATIONS), split="train2017", batch_size=16)
    assert isinstance(report, RecallReport) and len(report.kept) == 128
    # a split given with plain images was ignored: it is refused as the other dataset options
    shutil.copy(IMAGES / "raccoon-1.jpg", tmp_path)
    expected = r"a folder of images without annotations: --split \(split=\) apply to datasets"
    with pytest.raises(DataError, match=expected):
        rpn.propose(tmp_path, split="train")
    with pytest.raises(DataError, match=r"an image: --split \(split=\) apply to datasets only"):
        rpn.propose(tmp_path / "raccoon-1.jpg", split="train2017")
    with pytest.raises(DataError, match=expected):
        rpn.propose(tmp_path, split="val")  # asked, even the commands' default
    assert len(rpn.propose(tmp_path, split=None)) == 1  # not asked: the default
    listed = [tmp_path / "raccoon-1.jpg"] * 2  # a list of images: the same refusals
    for option in ({"split_file": "ids.txt"}, {"format": "voc"}, {"images": tmp_path}):
        with pytest.raises(DataError, match=r"^a list of images: --\S+ \(\w+=\) apply to"):
            rpn.propose(listed, **option)
    # a JSON beside the photos that is no COCO dataset (a results list, a manifest) leaves
    # them plain images: propose's own proposals.json, written there, read again
    (tmp_path / "proposals.json").write_text('[{"image_id": 1, "bbox": [0, 0, 1, 1]}]')
    (tmp_path / "manifest.json").write_text('{"camera": "x"}')
    assert len(rpn.propose(tmp_path)) == 1
    (tmp_path / "instances_val.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(DataError, match=r"instances_val\.json"):  # a COCO file: a dataset
        rpn.propose(tmp_path)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_skipped_image_is_one_warning_at_the_callers_line(checkpoints, tmp_path, capfd, workers):
    model = rpnkit.load(checkpoints["detector"], "cpu", num_workers=workers, **SMALL)
    bad = _truncated(tmp_path)
    with warnings.catch_warnings(record=True) as caught:  # Python's filters, as they are
        results = model.detect([IMAGES / "raccoon-2.jpg", bad])
    (warning,) = _skipped_warnings(caught)  # num_workers=2: none reached this process
    assert str(warning.message).startswith(f"skipped {bad}: unreadable or truncated image")
    assert warning.filename == __file__  # num_workers=0: was torch's _utils/fetch.py
    assert len(results) == 1 and model.skipped == [str(warning.message)[len("skipped ") :]]
    assert str(bad) not in capfd.readouterr().err  # no worker printed it too


def test_a_skipped_image_of_sliced_inference_is_one_warning_at_the_callers_line(rpn, tmp_path):
    bad = _truncated(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = rpn.propose([bad, IMAGES / "raccoon-2.jpg"], top=5, tile_size=256)
    (warning,) = _skipped_warnings(caught)
    assert str(bad) in str(warning.message) and warning.filename == __file__
    assert len(results) == 1 and len(rpn.skipped) == 1


def test_training_reports_each_skipped_image_once_at_the_callers_line(tmp_path):
    data = tmp_path / "voc"
    (data / "annotations").mkdir(parents=True)
    (data / "images").mkdir()
    for name in ("raccoon-1", "raccoon-2", "raccoon-3"):
        shutil.copy(RACCOON / "annotations" / f"{name}.xml", data / "annotations")
        shutil.copy(IMAGES / f"{name}.jpg", data / "images")
    bad = data / "images" / "raccoon-3.jpg"
    bad.write_bytes(bad.read_bytes()[:3000])
    # 6 steps of 2 from 3 images: 4 epochs, the truncated image met in each
    config = rpnkit.TrainConfig(steps=6, batch_size=2, lr=1e-3, warmup_steps=0, log_every=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a repeat would show
        run = rpnkit.fit(
            rpnkit.DataConfig(str(data), short_side=96, max_size=144),
            model="tiny",
            train=config,
            out=tmp_path / "run",
            device="cpu",
            progress=False,
        )
    (warning,) = _skipped_warnings(caught)
    assert str(warning.message).startswith(f"skipped {bad}: unreadable or truncated image")
    assert warning.filename == __file__
    assert run.summary.skipped_images == 1 and run.summary.steps == 6  # counted, not lost


def test_each_call_has_its_own_list_of_skipped_images(detector, tmp_path):
    good = [IMAGES / "raccoon-1.jpg", IMAGES / "raccoon-2.jpg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = detector.iter_detections([tmp_path / "nope1.jpg", *good])
        first_skipped = detector.skipped
        next(first)
        second = detector.iter_detections(good[:1])
        next(second)
        assert len(list(first)) == 1  # an open iterator goes on with its own list
        assert detector.skipped == [] and detector.skipped is not first_skipped  # the latest
        assert first_skipped == [f"{tmp_path / 'nope1.jpg'}: image file not found"]
        with pytest.raises(ValueError, match="batch_size must be"):
            detector.detect(tmp_path / "nope2.jpg", batch_size=0)
        assert detector.skipped == []  # a rejected call is the latest call too
        # an image whose header cannot be read is listed as one whose pixels cannot be
        text, cut = tmp_path / "text.jpg", _truncated(tmp_path)
        text.write_text("not an image")
        for path in (text, cut):
            with pytest.raises(DataError, match="no readable image"):
                detector.detect(path)
            (line,) = detector.skipped
            assert line.startswith(f"{path}: unreadable")


def test_proposal_recall_counts_every_object_whatever_the_checkpoints_classes(detector, tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    shutil.copy(IMAGES / "raccoon-1.jpg", tmp_path / "images")
    objects = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, (x0, y0, x1, y1) in (("dog", (81, 88, 522, 408)), ("cat", (10, 10, 60, 50)))
    )
    (tmp_path / "annotations" / "raccoon-1.xml").write_text(
        "<annotation><filename>raccoon-1.jpg</filename><size><width>650</width>"
        f"<height>417</height></size>{objects}</annotation>"
    )
    assert detector.class_names == ("raccoon",)  # none of the dataset's classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: 2 object(s) of classes not among the 1 given
        report = detector.evaluate_proposals(str(tmp_path))
    ((_, gt),) = report.kept
    assert len(gt) == 2  # the dog and the cat (was: none)
    assert 0 <= report.metrics["AR@100"] <= 1  # was -1: no object to find


def test_a_folder_in_a_list_is_said_to_be_a_folder(detector):
    with pytest.warns(rpnkit.data.SkippedSample) as caught:
        results = detector.detect([IMAGES, IMAGES / "raccoon-1.jpg"])
    (line,) = [str(w.message) for w in caught]
    assert line == f"skipped {IMAGES}: a folder (give a folder on its own, not in a list)"
    assert [r.file_name for r in results] == ["raccoon-1.jpg"]


def test_an_empty_list_gives_no_result(rpn, detector):
    assert detector.detect([]) == [] and detector.skipped == []
    assert rpn.propose([]) == []
    assert list(rpn.iter_proposals([], top=5)) == []
    assert list(detector.iter_detections([])) == []
    with (
        pytest.warns(rpnkit.data.SkippedSample, match="nope.jpg"),
        pytest.raises(DataError, match="no readable image"),  # unreadable inputs still raise
    ):
        rpn.propose(["/nope.jpg"])


def test_detecting_with_an_rpn_names_the_python_way_too_at_the_call(rpn):
    path = IMAGES / "raccoon-1.jpg"
    expected = re.escape(
        "not a Faster R-CNN checkpoint (an RPN: train one with --model faster-rcnn "
        "(kind='faster-rcnn')); proposal checkpoints go to rpnkit propose (model.propose())"
    )
    with pytest.raises(ValueError, match=expected):
        rpn.detect(path)
    with pytest.raises(ValueError, match=expected):
        rpn.iter_detections(path)  # at the call, not at the first next()


def test_load_names_a_wrong_path_flag_or_compile_backend_before_any_work(checkpoints):
    from rpnkit.engine.trainer import Trainer

    for path in (None, 123):
        with pytest.raises(TypeError, match=r"load\(\): path must be a checkpoint file's path"):
            rpnkit.load(path)
    checkpoint = checkpoints["rpn"]
    with pytest.raises(TypeError, match="fold_bn must be True or False, got 'no'"):
        rpnkit.load(checkpoint, "cpu", fold_bn="no")  # was taken as true: folded
    with pytest.raises(TypeError, match=r"channels_last must be True, False or None \(by device"):
        rpnkit.load(checkpoint, "cpu", channels_last="yes")
    with pytest.raises(TypeError, match="group_by_aspect must be True or False, got 1"):
        rpnkit.load(checkpoint, "cpu", group_by_aspect=1)
    with pytest.raises(ValueError, match=r"compile: torch.compile has no backend 'nope' \(e.g."):
        rpnkit.load(checkpoint, "cpu", compile="nope")
    with pytest.raises(ValueError, match=r"TrainConfig.compile \(--compile\): torch.compile has"):
        Trainer(rpnkit.build_model(rpnkit.preset_config("tiny")), [],
                rpnkit.TrainConfig(compile="x"), out_dir="unused")  # fmt: skip


def test_hidden_files_beside_the_images_are_ignored_without_a_word(rpn, tmp_path):
    # .DS_Store, and the results file propose is writing into the folder it reads
    shutil.copy(IMAGES / "raccoon-1.jpg", tmp_path)
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    out = tmp_path / "proposals.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a SkippedSample would fail here
        with rpnkit.engine.writing.CocoResultsWriter(out) as writer:
            assert any(p.name.startswith(".proposals.json.") for p in tmp_path.iterdir())
            for result in rpn.iter_proposals(tmp_path, top=3):
                writer.add(result)
    assert len(json.loads(out.read_text())) == 3
