import os

import pytest
import torch

from rpnkit.config import config_from_dict, config_to_dict
from rpnkit.engine.checkpoint import (
    RunState,
    load_checkpoint,
    read_header,
    read_run_state,
    save_checkpoint,
)
from rpnkit.modeling.presets import ModelConfig, build_model, preset_config


def test_round_trip_weights_optimizer_config_and_rng(tmp_path):
    config = preset_config("tiny")
    model = build_model(config)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(1, 3, 64, 64), torch.tensor([[64, 64]]))  # touch the model
    loss = sum(p.sum() for p in model.parameters())
    loss.backward()
    opt.step()
    torch.manual_seed(123)
    path = save_checkpoint(
        tmp_path / "ck.safetensors", model, config=config_to_dict(config), optimizer=opt, step=7
    )
    expected_next = torch.rand(3)

    loaded = load_checkpoint(path)
    assert loaded["step"] == 7
    assert config_from_dict(ModelConfig, loaded["config"]) == config
    fresh = build_model(config)
    fresh.load_state_dict(loaded["model"])
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    for group_a, group_b in zip(
        opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()
    ):
        assert torch.equal(group_a["momentum_buffer"], group_b["momentum_buffer"])
    from rpnkit.engine.checkpoint import set_rng_state

    set_rng_state(*loaded["rng"])
    assert torch.equal(torch.rand(3), expected_next)


def test_the_run_record_round_trips_and_reads_other_versions_headers_leniently(tmp_path):
    model = build_model(preset_config("tiny"))
    config = config_to_dict(preset_config("tiny"))
    best = {"metric": "AR@1000", "value": 0.5, "step": 4}
    run = RunState(seconds=12.5, time_budget_s=60.0, settings={"data": {"a": 1}}, best=best)
    path = save_checkpoint(tmp_path / "ck.safetensors", model, config=config, run=run)
    assert load_checkpoint(path)["run"] == run == read_run_state(path)
    # the header keeps only what is set: a run without budget or best records neither
    plain = save_checkpoint(tmp_path / "p.safetensors", model, config=config)
    assert read_header(plain)["extra"] == {"seconds": 0.0}
    assert read_run_state(plain) == RunState()
    # another version's keys are ignored, fields of the wrong type left unset
    odd = {"seconds": "7", "best": [1], "settings": {"x": 1}, "time_budget_s": True, "new": 1}
    assert RunState.from_json(odd) == RunState(settings={"x": 1})
    assert RunState.from_json(None) == RunState() == RunState.from_json([])


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    model = build_model(preset_config("tiny"))
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model, config={})
    save_checkpoint(path, model, config={"again": True})
    assert sorted(os.listdir(tmp_path)) == ["ck.safetensors"]
    assert load_checkpoint(path)["config"] == {"again": True}


def test_unreadable_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"garbage.safetensors: not a readable rpnkit checkpoint"):
        load_checkpoint(garbage)
    # a truncated file, as a crash mid-copy would leave
    model = build_model(preset_config("tiny"))
    good = save_checkpoint(tmp_path / "good.safetensors", model, config={})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"truncated\.safetensors: not a readable"):
        load_checkpoint(truncated)


def test_pickle_files_are_refused(tmp_path):
    # a legacy torch pickle is never unpickled: it is not a safetensors file
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a readable rpnkit checkpoint"):
        load_checkpoint(path)


def test_config_round_trip_through_yaml_and_unknown_keys(tmp_path):
    from rpnkit.config import load_config, save_config

    config = preset_config("tiny")
    save_config(config, tmp_path / "c.yaml")
    save_config(config, tmp_path / "c.json")
    assert load_config(ModelConfig, tmp_path / "c.yaml") == config
    assert load_config(ModelConfig, tmp_path / "c.json") == config
    data = config_to_dict(config)
    data["rpn"]["fg_iou_treshold"] = 0.5
    with pytest.raises(ValueError, match=r"config.rpn: unknown key\(s\) \['fg_iou_treshold'\]"):
        config_from_dict(ModelConfig, data)


def test_resuming_another_kind_or_other_classes_says_which(tmp_path):
    from rpnkit.engine.checkpoint import DETECTOR, RPN, ModelSpec, check_resumable
    from rpnkit.modeling.presets import detector_config, preset_config

    rpn = ModelSpec(RPN, preset_config("tiny"), ("raccoon",))
    detector = ModelSpec(DETECTOR, detector_config(preset_config("tiny"), 1), ("raccoon",))
    state = {"config": detector.to_dict()}
    check_resumable(state, detector, "c.safetensors")  # the same model: nothing to say
    with pytest.raises(ValueError, match=r"c.safetensors: a faster-rcnn checkpoint, and this "
                       r"run trains an rpn: resume it with --model faster-rcnn"):  # fmt: skip
        check_resumable(state, rpn, "c.safetensors")
    other = ModelSpec(DETECTOR, detector_config(preset_config("tiny"), 2), ("cat", "dog"))
    with pytest.raises(ValueError, match=r"trained on 1 class\(es\) \(raccoon\), and this "
                       r"run's data has 2 \(cat, dog\)"):  # fmt: skip
        check_resumable(state, other, "c.safetensors")


def test_a_checkpoint_records_its_training_size_and_load_resizes_as_training_did(tmp_path):
    import rpnkit
    from rpnkit.engine.checkpoint import RPN, ModelSpec, save_model

    spec = ModelSpec(RPN, preset_config("tiny"))
    model = build_model(preset_config("tiny"))
    sized = save_model(tmp_path / "sized.safetensors", model, spec, input_size=(128, 192))
    assert load_checkpoint(sized)["input_size"] == (128, 192)
    runtime = rpnkit.load(sized, "cpu")
    assert (runtime.short_side, runtime.max_size) == (128, 192)  # as trained
    runtime = rpnkit.load(sized, "cpu", short_side=256)
    assert (runtime.short_side, runtime.max_size) == (256, 192)  # unless told otherwise
    older = save_model(tmp_path / "older.safetensors", model, spec)  # no size recorded
    assert load_checkpoint(older)["input_size"] is None
    runtime = rpnkit.load(older, "cpu")
    assert (runtime.short_side, runtime.max_size) == (800, 1333)


def test_a_safetensors_file_of_another_tool_says_so(tmp_path):
    from safetensors.torch import save_file

    from rpnkit.engine.checkpoint import read_header

    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    for read in (load_checkpoint, read_header):
        with pytest.raises(ValueError, match=r"model\.safetensors: not a readable rpnkit "
                           r"checkpoint \(a safetensors file without rpnkit's header"):  # fmt: skip
            read(path)
