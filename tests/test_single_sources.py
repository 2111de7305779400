"""One source for each shared agreement: every reader of a checkpoint path gives the same
one-line messages; the class-name check, the AMP dtypes and the compile backend are each
defined once."""

from pathlib import Path

import pytest
import torch

from rpnkit.cli import main
from rpnkit.engine.checkpoint import (
    DETECTOR,
    ModelSpec,
    check_class_names,
    load_checkpoint,
    read_header,
    read_spec,
    save_model,
)
from rpnkit.engine.device import AMP_DTYPES, compile_backend
from rpnkit.modeling.presets import build_detector, build_model, detector_config, preset_config


def _run_folder(folder: Path) -> Path:
    """``folder`` holding a tiny two-class detector's checkpoint.safetensors, as a run's does."""
    torch.manual_seed(0)
    spec = ModelSpec(DETECTOR, detector_config(preset_config("tiny"), 2), ("a", "b"))
    save_model(folder / "checkpoint.safetensors", build_detector(spec.config), spec)
    return folder


def test_train_resume_given_a_run_folder_points_at_its_checkpoint(tmp_path, capsys):
    # once "checkpoint not found": the header reader did not check for a folder
    folder = _run_folder(tmp_path)
    assert main(["train", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    hint = f"{folder}: is a folder, not a checkpoint file (did you mean {folder}"
    assert f"rpnkit train: error: {hint}/checkpoint.safetensors?)" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("reader", [load_checkpoint, read_header, read_spec])
def test_every_checkpoint_reader_gives_the_same_messages(tmp_path, reader):
    folder = _run_folder(tmp_path / "run")
    hint = f" (did you mean {folder / 'checkpoint.safetensors'}?)"
    with pytest.raises(ValueError) as raised:
        reader(folder)
    assert str(raised.value) == f"{folder}: is a folder, not a checkpoint file{hint}"
    empty = tmp_path / "empty"
    empty.mkdir()  # no checkpoint inside: no hint
    with pytest.raises(ValueError) as raised:
        reader(empty)
    assert str(raised.value) == f"{empty}: is a folder, not a checkpoint file"
    with pytest.raises(ValueError) as raised:
        reader(tmp_path / "none.safetensors")
    assert str(raised.value) == f"{tmp_path / 'none.safetensors'}: checkpoint not found"
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk.safetensors: not a readable rpnkit checkpoint"):
        reader(tmp_path / "junk.safetensors")


def test_class_names_are_checked_against_the_box_head_by_one_function():
    detector = build_detector(detector_config(preset_config("tiny"), 2))  # 2 classes + bg
    check_class_names(detector, ("a", "b"), where="x:")  # one per class: fine
    with pytest.raises(ValueError) as raised:
        check_class_names(detector, ("a", "b", "c"), where="ckpt.safetensors:")
    assert str(raised.value) == (
        "ckpt.safetensors: names 3 class(es) and its box head has 2: one name per class, "
        "background apart"
    )
    with pytest.raises(ValueError, match=r"^the spec names 1 class\(es\) and the detector's box"):
        check_class_names(detector, ("a",), where="the spec", head="the detector's box head")
    check_class_names(build_model(preset_config("tiny")), ("a", "b", "c"), where="x:")  # an RPN


def test_amp_dtypes_and_compile_backend_have_one_source():
    assert (AMP_DTYPES["bf16"], AMP_DTYPES["fp16"]) == (torch.bfloat16, torch.float16)
    assert AMP_DTYPES.get("none") is None  # float32: the trainer's autocast stays off
    assert compile_backend(True) == "inductor"
    assert compile_backend("eager") == "eager"
