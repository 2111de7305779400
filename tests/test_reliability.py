"""Bad runs and bad files: each stops with one clear message, or is skipped and counted;
nothing crashes on the way and nothing good is lost."""

import csv
import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

import rpnkit
from rpnkit.data import DataConfig, DataError, SyntheticShapes
from rpnkit.engine.checkpoint import (
    DETECTOR,
    ModelSpec,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from rpnkit.engine.trainer import TrainConfig, train
from rpnkit.modeling.presets import build_detector, build_model, detector_config, preset_config
from rpnkit.modeling.rpn import ProposalConfig, select_proposals

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
FAST = TrainConfig(steps=4, batch_size=2, optimizer="sgd", lr=1e-3, warmup_steps=0, log_every=1)


def _tiny_detector(classes: int = 4):
    torch.manual_seed(0)
    spec = ModelSpec(DETECTOR, detector_config(preset_config("tiny"), classes), tuple("abcd"))
    return build_detector(spec.config), spec


def test_nan_proposals_never_reach_the_second_stage():
    # the chain that once ended in bincount's RuntimeError: NaN head outputs give NaN boxes;
    # they are not proposals, and padding slots are zeros (never NaN times 0)
    logits = torch.randn(2, 300)
    deltas = torch.randn(2, 300, 4)
    logits[0, :100], deltas[1, 50:] = float("nan"), float("nan")
    anchors = torch.rand(300, 4) * 100
    anchors[:, 2:] += anchors[:, :2] + 8
    found = select_proposals(
        logits, deltas, anchors, [300], torch.tensor([[128, 128]] * 2), ProposalConfig(300, 50)
    )
    assert torch.isfinite(found.boxes).all() and torch.isfinite(found.scores).all()
    picked = found.boxes[found.valid]
    assert len(picked) > 0 and (picked[:, 2:] > picked[:, :2]).all()


def test_a_detector_with_nan_weights_trains_into_the_divergence_message(tmp_path):
    # NaN features -> NaN proposals -> the RoI heads still run (no pooler crash); the step's
    # loss is NaN and training stops naming it
    model, spec = _tiny_detector()
    data = SyntheticShapes(8)
    calls = {"n": 0}
    original = model.first_stage.backbone.forward

    def poisoned(x):
        calls["n"] += 1
        features = original(x)
        return [f * float("nan") for f in features] if calls["n"] >= 2 else features

    model.first_stage.backbone.forward = poisoned
    with pytest.raises(FloatingPointError, match=r"diverged at step 1: loss nan"):
        train(model, data, FAST, out_dir=tmp_path, spec=spec, progress=False)
    assert not (tmp_path / "checkpoint.safetensors").exists()  # nothing saved after it


def test_an_infinite_gradient_norm_stops_training(tmp_path):
    model = build_model(preset_config("tiny"))
    original = model.rpn.forward

    def huge(*args, **kwargs):
        out = original(*args, **kwargs)
        box = out.losses["loss_rpn_box"] * 1e38  # the same loss, gradients 1e38 times larger
        out.losses["loss_rpn_box"] = out.losses["loss_rpn_box"] + (box - box.detach())
        return out

    model.rpn.forward = huge
    config = TrainConfig(**{**FAST.__dict__, "grad_clip": 1.0})
    with pytest.raises(FloatingPointError, match=r"diverged at step 0: gradient norm inf"):
        train(model, SyntheticShapes(8), config, out_dir=tmp_path, progress=False)


def test_a_finite_exploding_loss_stops_training_at_its_step(tmp_path):
    # blown-up weights give finite losses in the millions a step or two before inf or NaN
    model = build_model(preset_config("tiny"))
    original, calls = model.rpn.forward, {"n": 0}

    def exploding(*args, **kwargs):
        out = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            out.losses["loss_objectness"] = out.losses["loss_objectness"] + 3.6e7
        return out

    model.rpn.forward = exploding
    match = r"diverged at step 1: loss 3\.6e\+07 \(above 10000\) \(loss_objectness=3\.6e\+07"
    with pytest.raises(FloatingPointError, match=match):
        train(model, SyntheticShapes(8), FAST, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    model, spec = _tiny_detector()
    with torch.no_grad():
        model.roi_heads.box_head.fc6.weight[0, 0] = float("inf")
    path = save_model(tmp_path / "bad.safetensors", model, spec)
    with pytest.raises(ValueError, match=r"bad.safetensors: weight .*fc6.weight holds NaN or inf"):
        load_model(path)
    with pytest.raises(ValueError, match=r"holds NaN or infinite"):
        rpnkit.load(path, "cpu")


def test_a_folder_given_as_checkpoint_says_so(tmp_path):
    model, spec = _tiny_detector()
    save_model(tmp_path / "checkpoint.safetensors", model, spec)
    with pytest.raises(ValueError, match=r"is a folder, not a checkpoint file \(did you mean"):
        load_checkpoint(tmp_path)


def test_checkpoint_writes_are_durable_readable_and_clean_up(tmp_path):
    model = build_model(preset_config("tiny"))
    stale = tmp_path / ".checkpoint.safetensors.abc123.tmp"  # a write killed earlier
    stale.write_bytes(b"")
    path = save_checkpoint(tmp_path / "checkpoint.safetensors", model, config={})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.safetensors"]
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH  # not mkstemp's 0600


def _run(tmp_path, name, steps, resume=None, model_name="tiny"):
    torch.manual_seed(0)
    config = TrainConfig(**{**FAST.__dict__, "steps": steps, "checkpoint_every": 2})
    return train(
        build_model(preset_config(model_name)),
        SyntheticShapes(6, image_size=96),
        config,
        out_dir=tmp_path / name,
        progress=False,
        resume=resume,
    )


def test_resume_refuses_a_finished_run_and_another_model(tmp_path):
    _run(tmp_path, "a", steps=2)
    done = tmp_path / "a" / "checkpoint.safetensors"
    with pytest.raises(ValueError, match=r"at step 2 and the run has 2 steps: nothing is left"):
        _run(tmp_path, "a", steps=2, resume=done)
    with pytest.raises(ValueError, match=r"the weights are those of another model"):
        _run(tmp_path, "b", steps=4, resume=done, model_name="r18-fpn")


def test_a_resumed_log_keeps_each_step_once(tmp_path):
    _run(tmp_path, "a", steps=3)  # checkpoint at step 2, log rows 1, 2, 3
    (tmp_path / "a" / "checkpoint.safetensors").replace(tmp_path / "a" / "at2.safetensors")
    _run(tmp_path, "a", steps=5, resume=tmp_path / "a" / "at2.safetensors")
    with open(tmp_path / "a" / "train_log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [1, 2, 3, 4, 5]


def _broken_voc(tmp_path, good: int) -> Path:
    """A VOC folder of raccoon images, all truncated except the first ``good``."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    for i, src in enumerate(sorted((RACCOON / "annotations").glob("*.xml"))[:6]):
        image = RACCOON / "images" / src.with_suffix(".jpg").name
        data = image.read_bytes()
        (tmp_path / "images" / image.name).write_bytes(data if i < good else data[:2000])
        (tmp_path / "annotations" / src.name).write_text(src.read_text())
    return tmp_path


def test_a_dataset_of_only_unreadable_images_fails_instead_of_training(tmp_path):
    data = DataConfig(str(_broken_voc(tmp_path, good=0)), short_side=96, max_size=144)
    with (
        pytest.warns(UserWarning, match="truncated"),
        pytest.raises(ValueError, match=r"no training image could be read: \d+ skipped"),
    ):
        rpnkit.fit(data, model="tiny", train=FAST, out=tmp_path / "run", progress=False)


def test_unreadable_training_images_are_counted(tmp_path):
    data = DataConfig(str(_broken_voc(tmp_path, good=3)), short_side=96, max_size=144)
    with pytest.warns(UserWarning, match="truncated"):
        result = rpnkit.fit(data, model="tiny", train=FAST, out=tmp_path / "run", progress=False)
    assert result.summary.skipped_images > 0
    assert f"{result.summary.skipped_images} image(s) could not be read" in result.describe()


def test_inference_reports_non_images_and_fails_on_nothing_readable(tmp_path):
    model = build_model(preset_config("tiny"))
    path = save_model(tmp_path / "rpn.safetensors", model, ModelSpec("rpn", preset_config("tiny")))
    runtime = rpnkit.load(path, "cpu", short_side=96, max_size=144)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a photo")
    Image.new("RGB", (64, 48), (200, 10, 10)).save(folder / "red.png")
    with pytest.warns(UserWarning, match=r"notes.txt: not an image"):
        assert [r.file_name for r in runtime.propose(folder)] == ["red.png"]
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((RACCOON / "images" / "raccoon-1.jpg").read_bytes()[:3000])
    with (
        pytest.warns(UserWarning, match="truncated"),
        pytest.raises(DataError, match="no readable image"),
    ):
        runtime.propose(truncated)
    assert len(runtime.skipped) == 1 and "cut.jpg" in runtime.skipped[0]


def _voc_folder(root: Path, objects: dict[str, list[str]]) -> Path:
    """A VOC folder: one raccoon image per entry, with objects of the given class names."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for i, (name, classes) in enumerate(objects.items()):
        image = RACCOON / "images" / f"raccoon-{i + 1}.jpg"
        (root / "images" / f"{name}.jpg").write_bytes(image.read_bytes())
        width, height = Image.open(image).size
        boxes = "".join(
            f"<object><name>{c}</name><bndbox><xmin>{10 + 30 * k}</xmin><ymin>10</ymin>"
            f"<xmax>{40 + 30 * k}</xmax><ymax>60</ymax></bndbox></object>"
            for k, c in enumerate(classes)
        )
        (root / "annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>{width}</width>"
            f"<height>{height}</height></size>{boxes}</annotation>"
        )
    return root


def test_a_validation_split_lacking_a_class_keeps_the_training_ids(tmp_path):
    train = _voc_folder(tmp_path / "train", {"t1": ["apple", "pear"], "t2": ["pear"]})
    val = _voc_folder(tmp_path / "val", {"v1": ["pear"], "v2": ["plum", "pear"]})
    data = DataConfig(str(train), val_data=str(val))
    names = data.read_train().class_names
    assert names == ["apple", "pear"]
    with pytest.warns(UserWarning, match=r"unknown class 'plum'"):
        val_index = data.read_val(class_names=names)
    assert val_index.class_names == names  # read alone, "pear" would be class 1
    assert [r.labels.tolist() for r in val_index.records] == [[2], [2]]
    assert val_index.skipped_annotations == 1


def test_an_earlier_version_s_log_from_step_0_is_renumbered_when_resumed(tmp_path):
    from rpnkit.engine.run_log import RunLog

    # steps 0..4 as an earlier version logged them (0-based): the 4th step was "3"
    rows = ["step,lr,loss"] + [f"{k},0.01,{k / 10}" for k in range(5)]
    (tmp_path / "train_log.csv").write_text("\n".join(rows) + "\n")
    RunLog(tmp_path, resume_at=3).close()  # resumed from 3 steps done
    with open(tmp_path / "train_log.csv") as f:
        kept = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    assert kept == [(1, 0.0), (2, 0.1), (3, 0.2)]  # each step once, as steps done
