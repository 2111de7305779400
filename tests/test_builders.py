"""The builders (``build_model``, ``build_detector``, ``detector_config``), the checkpoint
schema (``ModelSpec``, format-1 files), ``Freezable``, the agreements on feature sizes and the
resize scale, the run record, and ``rpnkit.fit`` end to end on raccoon."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

import rpnkit
from rpnkit.config import config_to_dict
from rpnkit.data.transforms import resize_scale
from rpnkit.engine.checkpoint import ModelSpec, load_checkpoint, load_model, rng_state
from rpnkit.engine.run_record import RunRecord
from rpnkit.modeling.detector import FasterRCNN
from rpnkit.modeling.presets import (
    PRESETS,
    build_detector,
    build_model,
    detector_config,
    preset_config,
    without_pretrained_weights,
)
from rpnkit.modeling.proposal_model import ProposalModel
from rpnkit.modeling.roi_heads import RoIHeadConfig
from rpnkit.modeling.sizes import feature_sizes, padded_size

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"


def _equal_states(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def _ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


def _trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- builders


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_build_model_gives_a_proposal_model_whose_strides_are_the_anchors(name):
    config = without_pretrained_weights(preset_config(name))
    model = build_model(config)
    assert isinstance(model, ProposalModel)
    levels = config.rpn.anchors.levels
    assert tuple(model.backbone.strides) == tuple(level.stride for level in levels)
    assert model.rpn.head.num_anchors_per_level == [level.num_anchors for level in levels]


def test_a_detector_holds_its_first_stage_as_a_module():
    det = build_detector(detector_config(preset_config("tiny"), 2))
    assert isinstance(det, FasterRCNN)
    assert isinstance(det.first_stage, ProposalModel)
    assert det.backbone is det.first_stage.backbone
    assert det.rpn is det.first_stage.rpn
    assert _ids(det.first_stage) < _ids(det)
    assert _ids(det.first_stage) | _ids(det.roi_heads) == _ids(det)
    assert not _ids(det.first_stage) & _ids(det.roi_heads)
    keys = list(det.state_dict())
    assert all(k.startswith(("first_stage.", "roi_heads.")) for k in keys)
    nested = [k.removeprefix("first_stage.") for k in keys if k.startswith("first_stage.")]
    assert nested == list(det.first_stage.state_dict())
    assert tuple(det.roi_heads.pooler.strides) == (8, 16, 32)


def test_a_detector_pools_the_first_levels_of_its_backbone():
    fpn = build_detector(detector_config(preset_config("r18-fpn"), 2))
    assert tuple(fpn.roi_heads.pooler.strides) == (4, 8, 16, 32)  # P2-P5, not P6
    assert fpn.pooled_levels == 4
    c4 = build_detector(detector_config(preset_config("r18-c4"), 2))
    assert tuple(c4.roi_heads.pooler.strides) == (16,)
    assert c4.pooled_levels == 1


@pytest.mark.parametrize("name", ["tiny", "r18-fpn"])
def test_a_seeded_detector_starts_from_the_first_stage_of_build_model(name):
    config = detector_config(preset_config(name), 3)
    torch.manual_seed(0)
    det = build_detector(config)
    torch.manual_seed(0)
    alone = build_model(config.model)
    assert _equal_states(det.first_stage.state_dict(), alone.state_dict())
    torch.manual_seed(1)  # and another seed gives other weights
    other = build_model(config.model)
    assert not _equal_states(other.state_dict(), alone.state_dict())


def test_detector_config_follows_the_preset():
    paper = detector_config(preset_config("vgg16-c5"), 20)
    assert paper.roi == RoIHeadConfig.paper(num_classes=21)
    assert paper.roi.representation_size == 4096
    assert (paper.roi.head, paper.roi.pooler, paper.roi.rois_per_image) == ("vgg", "pool", 128)
    assert paper.pooled_levels == 1
    assert paper.model == preset_config("vgg16-c5")
    for name in ("r18-fpn", "r50-fpn", "effnet-lite0-fpn"):
        config = detector_config(preset_config(name), 3)
        assert config.pooled_levels == 4, name
        assert config.roi == RoIHeadConfig(num_classes=4), name
    for name in ("r18-c4", "r50-c4"):
        assert detector_config(preset_config(name), 3).pooled_levels == 1, name
    tiny = detector_config(preset_config("tiny"), 1)
    assert tiny.pooled_levels == 3
    assert tiny.roi.num_classes == 2
    assert tiny.roi.representation_size == RoIHeadConfig().representation_size


# ---------------------------------------------------------------- the checkpoint schema


@pytest.mark.parametrize("kind", ["rpn", "faster-rcnn"])
@pytest.mark.parametrize("preset", ["tiny", "vgg16-c5", "effnet-lite0-fpn"])
def test_model_spec_round_trips_through_its_dict_and_json(kind, preset):
    model = preset_config(preset)
    config = detector_config(model, 2) if kind == "faster-rcnn" else model
    spec = ModelSpec(kind, config, ("cat", "dog"))
    data = spec.to_dict()
    assert data["kind"] == kind
    assert set(data) == {"kind", "detector" if kind == "faster-rcnn" else "model", "class_names"}
    assert ModelSpec.from_dict(data) == spec
    back = ModelSpec.from_dict(json.loads(json.dumps(data)))  # tuples came back as lists
    assert back == spec
    assert back.is_detector == (kind == "faster-rcnn")
    assert back.model_config == model


def test_a_bare_model_config_dict_reads_as_an_rpn():
    # format 1 wrote an RPN's config as the bare ModelConfig, without "kind"
    spec = ModelSpec.from_dict(config_to_dict(preset_config("tiny")))
    assert spec.kind == "rpn" and not spec.is_detector
    assert spec.config == preset_config("tiny")
    assert spec.class_names == ()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([1, 2], "not a mapping"),
        ({"preset": "tiny", "nonsense": 1}, r"unknown key\(s\) \['nonsense'\]"),
        ({"kind": "rpn", "model": {"preset": "tiny", "backbone": "resnet"}}, "expected a mapping"),
        ({"kind": "rpn"}, "not usable: 'model'"),
        ({"kind": "faster-rcnn", "model": {"preset": "tiny"}}, "not usable: 'detector'"),
        ({"kind": "yolo", "model": {"preset": "tiny"}}, "'yolo'"),
    ],
)
def test_unusable_model_configs_are_value_errors_naming_the_file(data, problem):
    with pytest.raises(ValueError, match=problem) as caught:
        ModelSpec.from_dict(data, where="run/ck.safetensors")
    assert str(caught.value).startswith("run/ck.safetensors: ")


def test_a_spec_needs_the_config_of_its_kind():
    tiny = preset_config("tiny")
    with pytest.raises(ValueError, match="needs a DetectorConfig, got ModelConfig"):
        ModelSpec("faster-rcnn", tiny)
    with pytest.raises(ValueError, match="needs a ModelConfig, got DetectorConfig"):
        ModelSpec("rpn", detector_config(tiny, 1))
    with pytest.raises(ValueError, match="'yolo'"):
        ModelSpec("yolo", tiny)


def _write_format_1(path: Path, weights: dict, config: dict) -> None:
    """A checkpoint as format 1 wrote it: weights as "model." + key, RNG states, and a JSON
    header in the metadata (``save_checkpoint`` of the time, without an optimizer)."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in weights.items()}
    rng_tensors, rng_plain = rng_state()
    tensors.update(rng_tensors)
    header = {
        "format": "rpnkit-checkpoint-1",
        "config": config,
        "step": 0,
        "extra": {},
        "rng": rng_plain,
    }
    save_file(tensors, str(path), metadata={"rpnkit": json.dumps(header)})


def test_a_format_1_detector_checkpoint_loads_with_its_weights(tmp_path):
    config = detector_config(preset_config("tiny"), 1)
    spec = ModelSpec("faster-rcnn", config, ("raccoon",))
    torch.manual_seed(0)
    det = build_detector(config)
    state = det.state_dict()
    # format 1 kept the detector's backbone and RPN at the top of its state dict
    old = {k.removeprefix("first_stage."): v for k, v in state.items()}
    assert any(k.startswith("backbone.") for k in old) and any(k.startswith("rpn.") for k in old)
    path = tmp_path / "old.safetensors"
    _write_format_1(path, old, spec.to_dict())
    assert set(load_checkpoint(path)["model"]) == set(state)
    model, read = load_model(path)
    assert read == spec
    assert isinstance(model, FasterRCNN)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_format_1_rpn_checkpoint_loads_with_its_weights(tmp_path):
    config = preset_config("tiny")
    torch.manual_seed(0)
    rpn = build_model(config)
    path = tmp_path / "old.safetensors"
    _write_format_1(path, rpn.state_dict(), config_to_dict(config))  # the bare config
    model, spec = load_model(path)
    assert spec == ModelSpec("rpn", config)
    assert isinstance(model, ProposalModel)
    assert _equal_states(model.state_dict(), rpn.state_dict())


# ---------------------------------------------------------------- Freezable


def test_freeze_and_unfreeze_leave_the_config_frozen_stages_frozen():
    model = build_model(preset_config("r18-fpn"))  # its config freezes the stem and layer1
    everything = {name for name, _ in model.named_parameters()}
    trainable = _trainable(model)
    assert trainable < everything
    model.freeze("backbone")
    assert model.frozen == ("backbone",)
    assert _trainable(model) == {n for n in everything if not n.startswith("backbone.")}
    model.unfreeze("backbone")
    assert model.frozen == ()
    assert _trainable(model) == trainable


def test_unfreeze_gives_back_only_the_gradients_that_freeze_took():
    model = build_model(preset_config("tiny"))
    assert _trainable(model) == {name for name, _ in model.named_parameters()}
    model.backbone.stages[0].requires_grad_(False)  # frozen before, by someone else
    before = _trainable(model)
    assert not any(n.startswith("backbone.stages.0.") for n in before)
    model.freeze("backbone")
    assert not any(n.startswith("backbone.") for n in _trainable(model))
    model.unfreeze("backbone")
    assert _trainable(model) == before


def test_a_frozen_backbone_keeps_its_batch_norm_statistics_under_train():
    torch.manual_seed(0)
    model = build_model(preset_config("tiny"))
    norm = model.backbone.stages[1][0][1]
    assert isinstance(norm, nn.BatchNorm2d)
    images, sizes = torch.rand(2, 3, 64, 64), torch.tensor([[64, 64], [64, 64]])
    model.freeze("backbone").train()
    assert model.training and model.rpn.training
    assert not any(m.training for m in model.backbone.modules())
    stats = norm.running_mean.clone()
    model.features(images, sizes)
    assert torch.equal(norm.running_mean, stats)
    model.unfreeze("backbone")
    assert all(m.training for m in model.backbone.modules())
    model.features(images, sizes)
    assert not torch.equal(norm.running_mean, stats)


def test_unfreezing_what_is_not_frozen_is_a_value_error():
    model = build_model(preset_config("tiny"))
    with pytest.raises(ValueError, match="'backbone' is not frozen"):
        model.unfreeze("backbone")
    model.freeze("rpn")
    with pytest.raises(ValueError, match=r"'backbone' is not frozen \(frozen: \['rpn'\]\)"):
        model.unfreeze("backbone")


def test_a_frozen_part_of_a_detector_survives_train_on_the_detector():
    det = build_detector(detector_config(preset_config("tiny"), 1))
    det.first_stage.freeze("backbone")  # a Freezable inside a Freezable
    det.train()
    assert not any(m.training for m in det.first_stage.backbone.modules())
    assert det.first_stage.training and det.rpn.training and det.roi_heads.training
    rpn_params = {f"first_stage.rpn.{n}" for n, _ in det.rpn.named_parameters()}
    det.freeze("first_stage")
    det.train()
    assert not any(m.training for m in det.first_stage.modules())
    assert det.roi_heads.training
    assert not any(n.startswith("first_stage.") for n in _trainable(det))
    det.unfreeze("first_stage")  # gives back the RPN's; the backbone's were not its to take
    det.train()
    assert rpn_params and rpn_params <= _trainable(det)
    assert not any(n.startswith("first_stage.backbone.") for n in _trainable(det))
    assert det.first_stage.training and det.rpn.training
    assert not any(m.training for m in det.first_stage.backbone.modules())


# ---------------------------------------------------------------- sizes and scales


@pytest.mark.parametrize("name", ["tiny", "r18-fpn", "r18-c4", "vgg16-c5", "effnet-lite0-fpn"])
def test_feature_sizes_are_the_backbone_feature_maps(name):
    model = build_model(without_pretrained_weights(preset_config(name))).eval()
    strides = model.backbone.strides
    for height, width in ((97, 131), (33, 65), (200, 333)):
        ph, pw = padded_size(height, width)
        assert ph % 32 == 0 and pw % 32 == 0 and 0 <= ph - height < 32 and 0 <= pw - width < 32
        with torch.no_grad():
            maps = model.backbone(torch.zeros(1, 3, ph, pw))
        assert [tuple(m.shape[-2:]) for m in maps] == feature_sizes(height, width, strides)


def test_padded_and_feature_sizes_by_hand():
    assert padded_size(97, 131) == (128, 160)
    assert padded_size(128, 160) == (128, 160)
    # FPN's P6 at stride 64 rounds up: 160 / 64 = 2.5 -> 3
    assert feature_sizes(97, 131, (4, 8, 16, 32, 64)) == [
        (32, 40),
        (16, 20),
        (8, 10),
        (4, 5),
        (2, 3),
    ]


def test_resize_scale_by_hand():
    assert resize_scale(600, 800, 800, 1333) == pytest.approx(4 / 3)  # the shorter side to 800
    assert resize_scale(600, 2000, 800, 1333) == pytest.approx(1333 / 2000)  # the longer capped
    assert resize_scale(2000, 600, 800, 1333) == pytest.approx(1333 / 2000)


# ---------------------------------------------------------------- the run record and fit


def test_run_record_round_trips_through_its_folder(tmp_path):
    spec = ModelSpec("faster-rcnn", detector_config(preset_config("vgg16-c5"), 2), ("a", "b"))
    train = rpnkit.TrainConfig(steps=7, grad_clip=1.5, milestones=(0.5, 0.75), amp="bf16")
    data = rpnkit.DataConfig(
        data="d", split_file="s.csv", val_data="v", format="voc", flip=0.0, short_side=600
    )
    record = RunRecord(spec, train, data, "alternating")
    assert record.save(tmp_path) == tmp_path / "config.yaml"
    assert RunRecord.load(tmp_path) == record
    empty = tmp_path / "demo"
    empty.mkdir()
    assert RunRecord.load(empty) is None
    broken = record.to_dict()
    del broken["train"]
    (empty / "config.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match=r"config\.yaml: not a readable run record"):
        RunRecord.load(empty)


def test_fit_trains_an_rpn_on_raccoon_and_writes_its_run(tmp_path, capsys):
    data = rpnkit.DataConfig(
        data=str(RACCOON),
        split_file=str(RACCOON / "train_labels.csv"),
        val_data=str(RACCOON),
        val_split_file=str(RACCOON / "test_labels.csv"),
        short_side=96,
        max_size=144,
    )
    train = rpnkit.TrainConfig(steps=2, batch_size=2, log_every=1, num_workers=0)
    out = tmp_path / "run"
    settings = dataclasses.asdict(train)  # a mapping of TrainConfig's fields is one too
    result = rpnkit.fit(data, model="tiny", train=settings, out=out, device="cpu", progress=False)
    assert isinstance(result, rpnkit.FitResult)
    assert result.checkpoint == out / "checkpoint.safetensors" and result.checkpoint.is_file()
    assert result.summary.steps == 2
    assert 0 <= result.metrics["AR@100"] <= 1
    assert json.loads((out / "metrics.json").read_text()) == result.metrics
    assert "trained 2 steps" in result.describe()
    assert "validation: AR@100" in result.describe()
    record = RunRecord.load(out)
    assert record.data == data and record.train == train
    assert record.model.kind == "rpn" and record.model == result.spec
    assert record.model.class_names == ("raccoon",)
    assert record.schedule == "joint"
    model, spec = load_model(result.checkpoint)
    assert spec == result.spec and isinstance(model, ProposalModel)
    assert "160 images" in capsys.readouterr().out  # the training index, summarised


def test_a_time_budget_is_for_one_process_and_the_joint_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun each process has its own clock
    with pytest.raises(ValueError, match=r"time budget \(--time-budget, time_budget_s=\) is for "
                       "one process only"):  # fmt: skip
        rpnkit.fit(str(RACCOON), model="tiny", out=tmp_path / "r", time_budget_s=10)
    assert not (tmp_path / "r").exists()


def test_fit_validates_the_final_weights_once(tmp_path, monkeypatch):
    import rpnkit.engine.fit as fit_module

    calls = []
    real = fit_module.evaluate_proposals

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "evaluate_proposals", counted)
    data = {"data": str(RACCOON), "val_fraction": 0.1, "short_side": 96, "max_size": 144}
    train = {"steps": 2, "batch_size": 2, "num_workers": 0}
    result = rpnkit.fit(data, model="tiny", train={**train, "eval_every": 2}, out=tmp_path / "a",
                        device="cpu", progress=False)  # fmt: skip
    assert len(calls) == 1 and result.metrics == result.summary.evaluation
    assert result.summary.evaluated_at == 2
    result = rpnkit.fit(data, model="tiny", train={**train, "eval_every": 3}, out=tmp_path / "b",
                        device="cpu", progress=False)  # fmt: skip
    assert len(calls) == 2 and result.summary.evaluated_at == 2  # after the last step only
    assert result.metrics == result.summary.evaluation
    written = (tmp_path / "a" / "metrics.json").read_text()
    again = rpnkit.fit(data, train={**train, "steps": 4, "eval_every": 2}, device="cpu",
                       progress=False, resume=tmp_path / "a" / "checkpoint.safetensors",
                       time_budget_s=1e-3)  # fmt: skip
    # no time for a step: the checkpoint's validation, as logged, is reported, not made again
    assert len(calls) == 2 and again.summary.evaluation_read_back
    assert again.metrics["AR@100"] == pytest.approx(json.loads(written)["AR@100"])
    assert "validation at step 2 (logged): AR@100" in again.describe()
    assert (tmp_path / "a" / "metrics.json").read_text() == written  # the full one kept


def test_fit_refuses_the_alternating_schedule_for_an_rpn(tmp_path):
    with pytest.raises(ValueError, match="alternating needs --model faster-rcnn"):
        rpnkit.fit(str(RACCOON), kind="rpn", schedule="alternating", model="tiny", out=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was read or written


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"train": 5}, TypeError, r"fit\(\): train must be None, a TrainConfig or a mapping"),
        (
            {"model": 3},
            TypeError,
            r"fit\(\): model must be None, a preset's name, a ModelConfig or a",
        ),
        ({"data": None}, TypeError, r"fit\(\): data must be a dataset's path, a DataConfig"),
        ({"train": {"stepz": 1}}, ValueError, r"fit\(train=...\): unknown key\(s\) \['stepz'\]"),
        ({"train": {"steps": "1"}}, ValueError, r"fit\(train=...\): TrainConfig.steps must be"),
        ({"data": {"data": 3}}, ValueError, r"fit\(data=...\): DataConfig.data must be"),
    ],
)
def test_fit_names_an_argument_it_cannot_take_before_reading_anything(
    tmp_path, arguments, error, message
):
    arguments = {"data": str(RACCOON), "model": "tiny", **arguments}
    with pytest.raises(error, match=message):
        rpnkit.fit(arguments.pop("data"), out=tmp_path, **arguments)
    assert not any(tmp_path.iterdir())


def test_fit_resumed_without_a_model_trains_the_checkpoints_own(tmp_path):
    data = rpnkit.DataConfig(
        data=str(RACCOON),
        split_file=str(RACCOON / "train_labels.csv"),
        short_side=96,
        max_size=144,
    )
    train = {"steps": 2, "batch_size": 2, "num_workers": 0, "warmup_steps": 0}
    first = rpnkit.fit(data, kind="faster-rcnn", model="tiny", train=train, out=tmp_path / "r",
                       device="cpu", progress=False)  # fmt: skip
    resumed = rpnkit.fit(data, train={**train, "steps": 3}, resume=first.checkpoint,
                         device="cpu", progress=False)  # fmt: skip
    assert resumed.spec == first.spec and resumed.spec.model_config.preset == "tiny"
    assert resumed.spec.kind == "faster-rcnn" and resumed.summary.steps == 3


def test_fit_takes_a_detector_config_whose_second_stage_it_keeps(tmp_path):
    config = rpnkit.detector_config(rpnkit.preset_config("tiny"), 80)  # any class count
    roi = dataclasses.replace(config.roi, detections_per_image=7, representation_size=64)
    data = rpnkit.DataConfig(str(RACCOON), split_file=str(RACCOON / "train_labels.csv"),
                             short_side=96, max_size=144)  # fmt: skip
    result = rpnkit.fit(data, model=dataclasses.replace(config, roi=roi), out=tmp_path,
                        train={"steps": 1, "batch_size": 2, "num_workers": 0, "warmup_steps": 0},
                        device="cpu", progress=False)  # fmt: skip
    assert result.spec.kind == "faster-rcnn"
    head = result.spec.config.roi
    assert (head.detections_per_image, head.representation_size, head.num_classes) == (7, 64, 2)
    with pytest.raises(ValueError, match="a DetectorConfig describes a Faster R-CNN"):
        rpnkit.fit(data, kind="rpn", model=config, out=tmp_path / "x")


def test_a_resumed_run_refuses_settings_it_would_not_apply(tmp_path):
    """A new learning rate would be ignored (the optimizer's state is the run's), a new
    held-out share would leak training images into validation: both are refused, by name."""
    data = {"data": str(RACCOON), "val_fraction": 0.1, "short_side": 96, "max_size": 144}
    train = {"steps": 2, "batch_size": 2, "num_workers": 0, "warmup_steps": 0}
    first = rpnkit.fit(data, model="tiny", train=train, out=tmp_path / "r", device="cpu",
                       progress=False)  # fmt: skip
    resume = {"resume": first.checkpoint, "device": "cpu", "progress": False}
    refused = [
        (data, {**train, "steps": 3, "lr": 0.001}, r"train.lr 0.01 -> 0.001"),
        ({**data, "val_fraction": 0.3}, {**train, "steps": 3}, r"data.val_fraction 0.1 -> 0.3"),
        ({**data, "short_side": 64}, {**train, "steps": 3}, r"data.short_side 96 -> 64"),
    ]
    for data_now, train_now, change in refused:
        with pytest.raises(ValueError, match=r"a resumed run keeps its own settings.*" + change):
            rpnkit.fit(data_now, train=train_now, **resume)
    longer = rpnkit.fit(data, train={**train, "steps": 3, "log_every": 1}, **resume)
    assert longer.summary.steps == 3  # more steps, another log interval: free


def test_a_run_interrupted_before_its_end_has_its_record(tmp_path, monkeypatch):
    from rpnkit.engine import fit as fit_module

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module.Trainer, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rpnkit.fit(str(RACCOON), model="tiny", out=tmp_path, device="cpu", progress=False,
                   train={"steps": 2, "batch_size": 2, "num_workers": 0})  # fmt: skip
    record = RunRecord.load(tmp_path)  # what it was: report and --resume can read it
    assert record is not None and record.train.steps == 2 and record.model.kind == "rpn"


def test_evaluating_every_n_steps_needs_validation_data(tmp_path):
    with pytest.raises(
        ValueError, match=r"--eval-every, TrainConfig.eval_every\) needs validation"
    ):
        rpnkit.fit(str(RACCOON), model="tiny", train={"eval_every": 5}, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_fit_result_says_n_a_for_a_figure_without_gt(tmp_path):
    # validation data without boxes once printed "validation: AP -1.000, ..."
    from rpnkit.engine.trainer import TrainSummary

    spec = ModelSpec("faster-rcnn", rpnkit.detector_config(rpnkit.preset_config("tiny"), 2))
    summary = TrainSummary(steps=2, seconds=1.0, images_per_s=4.0)
    metrics = {"AP": -1.0, "AP50": -1.0, "VOC07_mAP50": -1.0}
    result = rpnkit.FitResult(tmp_path, tmp_path / "c.safetensors", spec, summary, metrics)
    assert "validation: AP n/a, AP50 n/a, VOC07 mAP50 n/a" in result.describe()


def test_a_resumed_run_says_when_its_training_data_changed(tmp_path):
    # files removed since the checkpoint: once resumed without a word
    import shutil
    import warnings

    data = tmp_path / "voc"
    data.mkdir()
    for i in (1, 10, 100, 101, 102, 103):
        for folder, suffix in (("images", "jpg"), ("annotations", "xml")):
            shutil.copy(RACCOON / folder / f"raccoon-{i}.{suffix}", data)
    config = {"data": str(data), "short_side": 64, "max_size": 96}
    train = {"steps": 2, "batch_size": 2, "num_workers": 0, "warmup_steps": 0}
    first = rpnkit.fit(config, model="tiny", train=train, out=tmp_path / "r", device="cpu",
                       progress=False)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rpnkit.fit(config, train={**train, "steps": 3}, resume=first.checkpoint, device="cpu",
                   progress=False)  # fmt: skip
    assert not [w for w in caught if issubclass(w.category, rpnkit.data.DataNote)]
    (data / "raccoon-1.xml").unlink()
    with pytest.warns(rpnkit.data.DataNote, match=r"the training data changed since this "
                      r"checkpoint \(images 6 -> 5; boxes \d+ -> \d+\)"):  # fmt: skip
        rpnkit.fit(config, train={**train, "steps": 4}, resume=tmp_path / "r" /
                   "checkpoint.safetensors", device="cpu", progress=False)  # fmt: skip


def test_a_copy_of_a_runs_own_checkpoint_resumes_in_its_folder(tmp_path):
    # going back to a kept copy is the run itself: not refused as another run's checkpoint
    import shutil

    data = {"data": str(RACCOON), "split_file": str(RACCOON / "train_labels.csv"),
            "short_side": 64, "max_size": 96}  # fmt: skip
    train = {"steps": 2, "batch_size": 2, "num_workers": 0, "warmup_steps": 0}
    first = rpnkit.fit(data, model="tiny", train=train, out=tmp_path / "r", device="cpu",
                       progress=False)  # fmt: skip
    kept = shutil.copy(first.checkpoint, tmp_path / "r" / "step2.safetensors")
    again = rpnkit.fit(data, train={**train, "steps": 3}, resume=kept, device="cpu",
                       progress=False)  # fmt: skip
    assert again.out_dir == tmp_path / "r" and again.summary.steps == 3
