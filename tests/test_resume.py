"""The rules of resuming (engine/resume.py): which settings a resumed run keeps, compared in one
way for a resumed checkpoint and for the run folder it goes on in."""

import pytest
from conftest import RACCOON
from torch import nn

import rpnkit
from rpnkit.engine.checkpoint import RunState, save_checkpoint
from rpnkit.engine.resume import _same_run, changed_settings, check_resumed_settings

SAVED = {
    "data": {"data": "/d", "short_side": 96, "val_data": "a"},
    "train": {"lr": 0.01, "steps": 2},
    "read": {"images": 6, "boxes": 9},
}


def test_changed_settings_lists_the_kept_settings_that_differ_by_hand():
    now = {
        "data": {"data": "/d", "short_side": 64, "val_data": "b", "tile_size": 512},
        "train": {"lr": 0.001, "steps": 5},
    }
    # val_data and steps are free; tile_size is recorded by one side only (another version)
    assert changed_settings(SAVED, now) == [
        ("data.short_side", 96, 64),
        ("train.lr", 0.01, 0.001),
    ]
    assert changed_settings(SAVED, {**SAVED, "read": {"images": 5, "boxes": 9}}) == []


def test_a_part_a_checkpoint_does_not_record_is_not_compared(tmp_path):
    # Trainer alone may keep some parts only: the message once indexed saved["train"], a KeyError
    path = tmp_path / "c.safetensors"
    save_checkpoint(
        path, nn.Linear(1, 1), config={}, run=RunState(settings={"data": SAVED["data"]})
    )
    check_resumed_settings(path, {"data": SAVED["data"], "train": {"lr": 0.5}})
    with pytest.raises(ValueError, match=r"keeps its own settings, and these differ: "
                       r"data.short_side 96 -> 64 \(give"):  # fmt: skip
        check_resumed_settings(path, {"data": {**SAVED["data"], "short_side": 64}, "train": {}})


def test_a_resumed_checkpoint_and_its_folders_run_are_compared_alike():
    def header(settings):
        return {"config": {}, "extra": {"settings": settings}}

    free = {**SAVED, "train": {"lr": 0.01, "steps": 9}}
    kept = {**SAVED, "train": {"lr": 0.02, "steps": 2}}
    assert _same_run(header(SAVED), header(free)) and not changed_settings(SAVED, free)
    assert not _same_run(header(SAVED), header(kept)) and changed_settings(SAVED, kept)
    assert _same_run(header(SAVED), {"config": {}})  # a checkpoint that keeps no settings


def test_fit_resumed_without_training_settings_keeps_the_checkpoints(tmp_path):
    # were TrainConfig's defaults, refused as other settings (train.lr 0.005 -> 0.01)
    data = rpnkit.DataConfig(
        data=str(RACCOON), split_file=str(RACCOON / "test_labels.csv"), short_side=96, max_size=128
    )
    train = {"steps": 1, "batch_size": 2, "lr": 0.005, "warmup_steps": 0}
    rpnkit.fit(data, model="tiny", train=train, out=tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="nothing is left to train"):
        rpnkit.fit(data, resume=tmp_path / "checkpoint.safetensors", device="cpu", progress=False)
