"""The command line's option ranges, its one-line errors and warnings, --debug and
--max-image-pixels; the configs' own checks (configs loaded from YAML or built in Python)."""

import argparse
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from rpnkit.cli import build_parser, main, parse_args, reduce_worker_traceback
from rpnkit.cli import options as cli_options
from rpnkit.config import config_to_dict
from rpnkit.data import DataConfig, DataError
from rpnkit.modeling.anchors import AnchorConfig, LevelAnchors
from rpnkit.modeling.presets import PRESETS, detector_config, preset_config
from rpnkit.modeling.roi_heads import RoIHeadConfig
from rpnkit.modeling.rpn import ProposalConfig, RPNConfig

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
SMALL = ["--short-side", "128", "--max-size", "192", "--no-progress"]


def one_error_line(capsys) -> str:
    """stderr of the last command, which must be exactly one line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err.rstrip("\n")


# ---------------------------------------------------------------- option ranges


RANGES = [
    # (command line, option, its rule as the error states it, the value given)
    (["train"], "--steps", "an integer >= 1", "-5"),
    (["train"], "--steps", "an integer >= 1", "0"),
    (["train"], "--steps", "an integer >= 1", "2.5"),
    (["train"], "--batch-size", "an integer >= 1", "0"),
    (["train"], "--lr", "a number > 0", "0"),
    (["train"], "--lr", "a number > 0", "nan"),
    (["train"], "--weight-decay", "a number >= 0", "-0.001"),
    (["train"], "--warmup", "an integer >= 0", "-1"),
    (["train"], "--grad-clip", "a number > 0", "-1"),
    (["train"], "--grad-clip", "a number > 0", "inf"),
    (["train"], "--flip", "a probability in [0, 1]", "1.5"),
    (["train"], "--workers", "an integer >= 0", "-2"),
    (["train"], "--log-every", "an integer >= 1", "0"),
    (["train"], "--eval-every", "an integer >= 0", "-1"),
    (["train"], "--checkpoint-every", "an integer >= 0", "-1"),
    (["train"], "--seed", "an integer in [0, 2**32 - 1]", "x"),
    (["train"], "--seed", "an integer in [0, 2**32 - 1]", "-3"),  # numpy takes no other
    (["demo"], "--seed", "an integer in [0, 2**32 - 1]", "4294967296"),
    (["train"], "--short-side", "an integer >= 1", "0"),
    (["train"], "--max-size", "an integer >= 32", "0"),
    (["train"], "--max-size", "an integer >= 32", "31"),
    (["propose", "x.jpg"], "--top", "an integer >= 1", "-1"),
    (["propose", "x.jpg"], "--overlay-top", "an integer >= 0", "-1"),
    (["propose", "x.jpg"], "--max-overlays", "an integer >= 0", "-1"),
    (["propose", "x.jpg"], "--batch-size", "an integer >= 1", "0"),
    (["detect", "x.jpg"], "--score", "a probability in [0, 1]", "-0.1"),
    (["eval"], "--batch-size", "an integer >= 1", "0"),
    (["eval"], "--short-side", "an integer >= 1", "-800"),
    (["demo"], "--steps", "an integer >= 1", "0"),
    (["demo"], "--time-budget", "a number > 0", "0"),
    (["demo"], "--num-val", "an integer >= 1", "0"),
    (["anchors"], "--threshold", "an IoU in [0, 1]", "1.2"),
    (["anchors"], "--show", "an integer >= 0", "-1"),
    (["show", "anchors", "x.jpg"], "--index", "an integer >= 0", "-1"),
    (["show", "grid", "x.jpg"], "--level", "an integer >= 0", "-1"),
    (["show", "nms", "x.jpg"], "--top", "an integer >= 1", "0"),
    (["show", "anchors", "x.jpg"], "--x", "a number >= 0", "-3"),
    (["report", "run"], "--gallery", "an integer >= 0", "-1"),
    (["report", "run"], "--max-size", "an integer >= 32", "8"),
    (["train"], "--max-image-pixels", "an integer >= 0", "-1"),
]


@pytest.mark.parametrize(("command", "option", "rule", "value"), RANGES)
def test_an_option_out_of_its_range_is_one_line_naming_it(command, option, rule, value, capsys):
    assert main([*command, option, value]) == 2
    assert one_error_line(capsys) == (
        f"rpnkit {command[0]}: error: argument {option}: must be {rule}, got {value}"
    )


def test_the_brief_example_reads_as_promised(capsys):
    assert main(["train", "--steps", "-5", "--data", "somewhere"]) == 2
    assert one_error_line(capsys) == (
        "rpnkit train: error: argument --steps: must be an integer >= 1, got -5"
    )


def test_values_at_the_ends_of_their_ranges_are_accepted():
    ends = ["--flip", "0", "--eval-every", "0", "--checkpoint-every", "0", "--warmup", "0"]
    ends += ["--workers", "0", "--weight-decay", "0", "--grad-clip", "0.5", "--seed", "0"]
    ends += ["--steps", "1", "--max-size", "32", "--short-side", "1"]
    args = parse_args(build_parser(), ["train", *ends])
    assert (args.flip, args.eval_every, args.checkpoint_every, args.grad_clip) == (0, 0, 0, 0.5)
    assert (args.seed, args.steps, args.max_size, args.short_side) == (0, 1, 32, 1)
    assert parse_args(build_parser(), ["train", "--seed", "4294967295"]).seed == 2**32 - 1
    args = parse_args(build_parser(), ["detect", "x.jpg", "--checkpoint", "c", "--score", "1"])
    assert args.score == 1.0
    assert parse_args(build_parser(), ["train"]).grad_clip is None  # no clipping by default


RANGE_TYPES = {
    cli_options.seed,
    cli_options.positive_int,
    cli_options.non_negative_int,
    cli_options.image_side,
    cli_options.positive_float,
    cli_options.non_negative_float,
    cli_options.probability,
    cli_options.fraction,
    cli_options.held_out_fraction,
    cli_options.iou,
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_numeric_option_of_every_command_has_a_range():
    parser = build_parser()
    commands = {"rpnkit": parser, **_subparsers(parser)}
    assert set(commands) == {"rpnkit", "demo", "train", "eval", "propose", "anchors", "show"} | {
        "detect",
        "report",
        "export",
    }
    for name, command in commands.items():
        for action in command._actions:
            if action.type is not None:
                assert action.type in RANGE_TYPES, f"{name} {action.option_strings}: {action.type}"


@pytest.mark.parametrize(
    ("check", "text", "value"),
    [
        (cli_options.positive_int, "3", 3),
        (cli_options.non_negative_int, "0", 0),
        (cli_options.positive_float, "1e-3", 1e-3),
        (cli_options.probability, "1", 1.0),
        (cli_options.iou, "0", 0.0),
        (cli_options.held_out_fraction, "0", 0.0),
    ],
)
def test_range_types_return_the_value(check, text, value):
    assert check(text) == value


# ---------------------------------------------------------------- argparse's own errors


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["eval", "--data", "d"],
            "rpnkit eval: error: the following arguments are required: --checkpoint",
        ),
        (["anchors"], "rpnkit anchors: error: the following arguments are required: --data"),
        (["train", "--preset", "nope"], "rpnkit train: error: argument --preset: invalid choice"),
        (["show", "pictures", "x"], "rpnkit show: error: argument what: invalid choice"),
        (["trian"], "rpnkit: error: argument command: invalid choice: 'trian'"),
        ([], "rpnkit: error: the following arguments are required: command"),
        (["train", "--bogus", "3"], "rpnkit train: error: unrecognized arguments: --bogus 3"),
        (
            ["train", "--val-fraction", "1"],
            "rpnkit train: error: argument --val-fraction: must be a fraction in [0, 1), got 1",
        ),
    ],
)
def test_argparse_errors_are_one_line(argv, line, capsys):
    assert main(argv) == 2
    assert one_error_line(capsys).startswith(line)


def test_help_still_prints_and_exits_0(capsys):
    for argv in (["--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: rpnkit") and "--max-image-pixels N" in out


# ---------------------------------------------------------------- the configs' own checks


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ProposalConfig(post_nms_top_n=0), "ProposalConfig.post_nms_top_n must be an "),
        (lambda: ProposalConfig(pre_nms_top_n=-1), "ProposalConfig.pre_nms_top_n must be "),
        (lambda: ProposalConfig(nms_threshold=0.0), r"nms_threshold must be a number in \(0, 1\]"),
        (lambda: ProposalConfig(nms_threshold=1.5), "ProposalConfig.nms_threshold"),
        (lambda: ProposalConfig(min_size=-1), "ProposalConfig.min_size must be a number >= 0"),
        (lambda: ProposalConfig(min_size=math.nan), "ProposalConfig.min_size"),
        (lambda: ProposalConfig(score_threshold=2), "ProposalConfig.score_threshold"),
        (lambda: RPNConfig(fg_iou_threshold=1.2), "RPNConfig.fg_iou_threshold"),
        (lambda: RPNConfig(bg_iou_threshold=-0.1), "RPNConfig.bg_iou_threshold"),
        (lambda: RPNConfig(bg_iou_threshold=0.8), "bg_iou_threshold must be <= fg_iou_threshold"),
        (lambda: RPNConfig(batch_size_per_image=0), "RPNConfig.batch_size_per_image"),
        (lambda: RPNConfig(positive_fraction=0.0), "RPNConfig.positive_fraction"),
        (lambda: RPNConfig(allowed_border=-1.0), "RPNConfig.allowed_border"),
        (lambda: RPNConfig(objectness="tanh"), "RPNConfig.objectness must be one of"),
        (lambda: RPNConfig(box_coder_weights=(1, 1, 0, 1)), "RPNConfig.box_coder_weights"),
        (lambda: RoIHeadConfig(num_classes=1), "RoIHeadConfig.num_classes must be an integer >= 2"),
        (lambda: RoIHeadConfig(rois_per_image=0), "RoIHeadConfig.rois_per_image"),
        (lambda: RoIHeadConfig(positive_fraction=1.5), "RoIHeadConfig.positive_fraction"),
        (lambda: RoIHeadConfig(fg_iou=-0.5), "RoIHeadConfig.fg_iou"),
        (lambda: RoIHeadConfig(bg_iou=(0.5, 0.1)), r"RoIHeadConfig.bg_iou must be a range"),
        (lambda: RoIHeadConfig(bg_iou=(0.0, 0.7)), r"high <= fg_iou \(0.5\)"),
        (lambda: RoIHeadConfig(detections_per_image=0), "RoIHeadConfig.detections_per_image"),
        (lambda: RoIHeadConfig(pooled_size=0), "RoIHeadConfig.pooled_size"),
        (lambda: RoIHeadConfig(sampling_ratio=-1), "RoIHeadConfig.sampling_ratio"),
        (lambda: RoIHeadConfig(nms_threshold=0), "RoIHeadConfig.nms_threshold"),
        (lambda: RoIHeadConfig(pooler="max"), "RoIHeadConfig.pooler must be one of"),
        (lambda: DataConfig("d", short_side=0), "DataConfig.short_side must be an integer >= 1"),
        (lambda: DataConfig("d", max_size=-5), "DataConfig.max_size"),
        (lambda: DataConfig("d", max_size=10), "DataConfig.max_size must be an integer >= 32"),
        (lambda: DataConfig("d", flip=1.5), r"DataConfig.flip must be a probability in \[0, 1\]"),
        (lambda: DataConfig("d", split=""), "DataConfig.split must be None or a non-empty"),
        (lambda: DataConfig("d", format="xml"), "DataConfig.format"),
        (lambda: DataConfig(""), "DataConfig.data"),
        (lambda: AnchorConfig.single_level(sizes=(math.nan,)), "sizes and ratios must be positive"),
        (lambda: AnchorConfig.single_level(ratios=(0.0, 1.0)), "must be positive"),
        (lambda: AnchorConfig((LevelAnchors(0, (32.0,)),)), "stride must be a positive integer"),
        (lambda: AnchorConfig((LevelAnchors(8, shapes=((16.0, -1.0),)),)), "shapes must be"),
    ],
)
def test_configs_check_themselves(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_the_brief_config_example_and_the_value_given():
    with pytest.raises(ValueError) as caught:
        ProposalConfig(post_nms_top_n=0)
    assert str(caught.value) == "ProposalConfig.post_nms_top_n must be an integer >= 1, got 0"


def test_every_preset_and_its_detector_and_the_paper_settings_validate():
    for name in PRESETS:
        detector_config(preset_config(name), 3)
    RPNConfig.paper()
    RoIHeadConfig.paper(num_classes=21)
    ProposalConfig(nms_threshold=1.0)  # rpnkit show nms: no suppression at all
    RoIHeadConfig(num_classes=2, bg_iou=(0.5, 0.5), sampling_ratio=0)
    DataConfig(Path("somewhere"), short_side=1, max_size=32, flip=0)


def test_a_config_file_with_a_bad_value_is_one_line_naming_the_file_and_field(tmp_path, capsys):
    data = config_to_dict(preset_config("tiny"))
    data["rpn"]["test_proposals"]["post_nms_top_n"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["anchors", "--data", str(RACCOON), "--config", str(bad), *SMALL]) == 2
    assert one_error_line(capsys) == (  # the file, and where in it
        f"rpnkit anchors: error: {bad}.rpn.test_proposals: ProposalConfig.post_nms_top_n must "
        "be an integer >= 1, got 0"
    )


# ---------------------------------------------------------------- --debug


def test_errors_are_one_line_and_debug_raises_them(tmp_path, capsys):
    argv = ["anchors", "--data", str(tmp_path / "nowhere"), "--preset", "tiny"]
    assert main(argv) == 2
    assert (
        one_error_line(capsys)
        == f"rpnkit anchors: error: {tmp_path / 'nowhere'}: no such file or folder"
    )
    with pytest.raises(DataError, match="no such file or folder"):
        main(["--debug", *argv])
    with pytest.raises(DataError, match="no such file or folder"):
        main([*argv, "--debug"])  # after the subcommand too
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- DataLoader workers


def _worker_message(error: Exception) -> str:
    """The message PyTorch re-raises in the main process for ``error`` raised in a worker
    (with a cause, as readers raise DataError from Pillow's errors)."""
    from torch.utils.data._utils.worker import ExceptionWrapper

    try:
        try:
            raise OSError("image file is truncated")
        except OSError as cause:
            raise error from cause
    except Exception:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(type(error)) as caught:
        wrapper.reraise()
    return str(caught.value)


def test_a_worker_traceback_is_reduced_to_the_original_message():
    message = _worker_message(DataError("x.jpg: bad"))
    assert message.startswith("Caught DataError in DataLoader worker process 0.\nOriginal ")
    assert "The above exception was the direct cause" in message  # the chain is embedded
    assert reduce_worker_traceback(message) == "x.jpg: bad"
    two_lines = _worker_message(ValueError("first line\nsecond: line"))
    assert reduce_worker_traceback(two_lines) == "first line\nsecond: line"
    assert reduce_worker_traceback(_worker_message(DataError())) == "rpnkit.data.records.DataError"


def test_other_messages_are_kept_as_they_are():
    for message in ("x.jpg: bad", "Caught nothing", "a\nTraceback (most recent call last):\n"):
        assert reduce_worker_traceback(message) == message


class _BadDataset:
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise DataError("x.jpg: bad")


def _load_in_a_worker(args) -> int:
    from torch.utils.data import DataLoader

    next(iter(DataLoader(_BadDataset(), num_workers=1)))
    return 0


def test_an_error_in_a_dataloader_worker_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("rpnkit.cli.anchors.run", _load_in_a_worker)
    assert main(["anchors", "--data", "d"]) == 2
    assert one_error_line(capsys) == "rpnkit anchors: error: x.jpg: bad"


# ---------------------------------------------------------------- one-line warnings


def _voc_with_a_nan_box(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in ("raccoon-1", "raccoon-2"):
        shutil.copy(RACCOON / "images" / f"{name}.jpg", root / "images")
    xml = (RACCOON / "annotations" / "raccoon-1.xml").read_text()
    (root / "annotations" / "raccoon-1.xml").write_text(xml)
    bad = (RACCOON / "annotations" / "raccoon-2.xml").read_text()
    start = bad.index("<xmin>") + len("<xmin>")
    bad = bad[:start] + "nan" + bad[bad.index("</xmin>") :]
    (root / "annotations" / "raccoon-2.xml").write_text(bad)
    return root


def test_a_skipped_sample_is_one_warning_line(tmp_path, capsys):
    voc = _voc_with_a_nan_box(tmp_path / "voc")
    formatwarning = warnings.formatwarning
    assert main(["anchors", "--data", str(voc), "--preset", "tiny", *SMALL]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "raccoon-2.xml" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("warning: skipped ") and "NaN" in lines[0]
    assert warnings.formatwarning is formatwarning  # restored


FORK = "This process (pid=12) is multi-threaded, use of fork() may lead to deadlocks in the child."


def _warn_twice(args) -> int:
    warnings.warn("a runtime\n   problem", RuntimeWarning, stacklevel=1)
    warnings.warn("a deprecation", DeprecationWarning, stacklevel=1)
    warnings.warn(FORK, DeprecationWarning, stacklevel=1)  # the loader's forks: not printed
    return 0


def test_every_warning_category_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("rpnkit.cli.anchors.run", _warn_twice)
    assert main(["anchors", "--data", "d"]) == 0
    assert capsys.readouterr().err == "warning: a runtime problem\nwarning: a deprecation\n"
    assert main(["--debug", "anchors", "--data", "d"]) == 0  # --debug: Python's own format
    err = capsys.readouterr().err
    assert "test_options.py:" in err and "RuntimeWarning: a runtime" in err


# ---------------------------------------------------------------- --max-image-pixels


def test_max_image_pixels_lets_large_images_load(tmp_path, monkeypatch, capsys):
    image = tmp_path / "large.png"
    Image.new("RGB", (200, 150), (20, 120, 220)).save(image)  # 30,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # refused above 20,000; restored after
    out = tmp_path / "anchors.png"
    argv = ["show", "anchors", str(image), "--preset", "tiny", "--out", str(out), *SMALL]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"rpnkit show: error: {image}")
    assert any("over Pillow's limit" in line and "--max-image-pixels 0" in line for line in err)
    assert not out.exists()
    assert main([*argv, "--max-image-pixels", "0"]) == 0
    assert out.is_file()
    assert Image.MAX_IMAGE_PIXELS == 10_000  # the command's limit lasted as long as the command
    out.unlink()
    assert main(["--max-image-pixels", "40000", *argv]) == 0  # before the subcommand too
    assert out.is_file()
    assert Image.MAX_IMAGE_PIXELS == 10_000


def test_what_print_config_prints_goes_back_to_config(tmp_path, capsys):
    from rpnkit.cli import main

    assert main(["train", "--print-config", "--preset", "tiny", "--lr", "0.5"]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "cfg.yaml"
    path.write_text(
        printed.replace("objectness_mode: classification", "objectness_mode: localization")
    )
    assert main(["train", "--print-config", "--config", str(path)]) == 0
    again = capsys.readouterr()
    assert again.out == printed.replace("objectness_mode: classification",
                                        "objectness_mode: localization")  # fmt: skip
    assert again.err == ""  # both parts read
    # the options named on the command line win, even at their defaults; the file's fields
    # that no option sets (momentum) come from it
    path.write_text(printed.replace("momentum: 0.9", "momentum: 0.8"))
    assert main(["train", "--print-config", "--config", str(path), "--steps", "7",
                 "--lr", "0.01"]) == 0  # fmt: skip
    train = yaml.safe_load(capsys.readouterr().out)["train"]
    assert (train["steps"], train["lr"], train["momentum"]) == (7, 0.01, 0.8)
    # a train: part alone: the model is the preset's
    path.write_text("train:\n  steps: 5\n")
    assert main(["train", "--print-config", "--config", str(path), "--preset", "tiny"]) == 0
    both = yaml.safe_load(capsys.readouterr().out)
    assert both["train"]["steps"] == 5 and both["model"]["preset"] == "tiny"
    # a train: part with a bad field is one line naming the file and the field
    path.write_text(printed.replace("steps: 2000", "steps: -1"))
    assert main(["train", "--print-config", "--config", str(path)]) == 2
    assert f"{path}: train" in one_error_line(capsys)
    # other commands read the model: part only, and say so
    path.write_text(printed)
    Image.new("RGB", (96, 64)).save(tmp_path / "i.png")
    argv = ["show", "anchors", str(tmp_path / "i.png"), "--config", str(path)]
    assert main([*argv, "--out", str(tmp_path / "a.png")]) == 0
    assert "only its model: part is read, not ['train']" in capsys.readouterr().err


def test_devices_other_than_cpu_and_cuda_are_one_line(capsys):
    from rpnkit.engine.device import decodes_on_device, resolve_device

    for name in ("mps", "xpu", "meta", "gpu"):
        with pytest.raises(ValueError, match=rf"device '{name}': "):
            resolve_device(name)
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible here"):
            resolve_device("cuda")
    argv = ["propose", "x.jpg", "--checkpoint", "c.safetensors", "--device", "mps"]
    assert main(argv) == 2
    assert "device 'mps': rpnkit runs on cpu or cuda" in one_error_line(capsys)
    with pytest.warns(UserWarning, match="slower than the workers' Pillow path"):
        assert decodes_on_device(True, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not decodes_on_device(None, torch.device("cpu"))


def test_print_config_of_a_detector_has_its_second_stage_and_goes_back(tmp_path, capsys):
    from conftest import RACCOON

    from rpnkit.engine.checkpoint import read_spec

    assert main(["train", "--print-config", "--preset", "tiny", "--model", "faster-rcnn"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# detector.roi.num_classes: the data's classes + 1")
    parts = yaml.safe_load(printed)
    assert list(parts) == ["model", "detector", "train"]
    assert (parts["detector"]["roi"]["rois_per_image"], parts["detector"]["pooled_levels"]) == (
        512,
        3,
    )
    # an RPN has no second stage to print
    assert main(["train", "--print-config", "--preset", "tiny"]) == 0
    assert list(yaml.safe_load(capsys.readouterr().out)) == ["model", "train"]
    # the detector: part read back: a Faster R-CNN (without --model) with that second stage
    path = tmp_path / "detector.yaml"
    path.write_text(printed.replace("rois_per_image: 512", "rois_per_image: 64"))
    assert main(["train", "--print-config", "--config", str(path)]) == 0
    again = capsys.readouterr()
    assert again.out == printed.replace("rois_per_image: 512", "rois_per_image: 64")
    assert again.err == ""  # every part read
    argv = ["train", "--config", str(path), "--data", str(RACCOON), "--steps", "1",
            "--batch-size", "1", "--workers", "0", "--short-side", "96", "--max-size", "128",
            "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    spec = read_spec(tmp_path / "run" / "checkpoint.safetensors")
    assert spec.kind == "faster-rcnn" and spec.config.roi.rois_per_image == 64
    assert spec.config.roi.num_classes == len(spec.class_names) + 1  # the data's, not 91
    # with --model rpn it would be left unused: one line
    assert main(["train", "--print-config", "--config", str(path), "--model", "rpn"]) == 2
    assert "its detector: part is a Faster R-CNN's second stage" in one_error_line(capsys)
    # a bad field of the part names the file and the field
    path.write_text(printed.replace("pooled_size: 7", "pooled_size: 0"))
    assert main(["train", "--print-config", "--config", str(path)]) == 2
    assert f"{path}: detector" in one_error_line(capsys)
