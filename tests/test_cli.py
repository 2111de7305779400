import json
import re
from pathlib import Path

import pytest
import torch
from conftest import train_tiny_on_raccoon
from PIL import Image

from rpnkit.cli import build_parser, main, parse_args
from rpnkit.engine.checkpoint import read_header
from rpnkit.engine.results import ProposalResult
from rpnkit.engine.runner import Pace
from rpnkit.viz.export import Written, export_results

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
SMALL = ["--short-side", "128", "--max-size", "192", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = train_tiny_on_raccoon(out, steps=4, extra=["--log-every", "1"])
    assert code == 0
    return out


def test_train_writes_checkpoint_logs_config_and_metrics(trained):
    for name in ("checkpoint.safetensors", "train_log.csv", "config.yaml", "metrics.json"):
        assert (trained / name).is_file(), name
    assert any((trained / "tensorboard").iterdir())
    assert len((trained / "train_log.csv").read_text().splitlines()) == 5  # header + 4 steps
    metrics = json.loads((trained / "metrics.json").read_text())
    assert {"AR@100", "AR@1000", "recall@100@0.5_small"} <= set(metrics)
    from rpnkit.engine.checkpoint import load_checkpoint

    state = load_checkpoint(trained / "checkpoint.safetensors")  # what inference resizes to
    assert state["input_size"] == (128, 192)


def test_eval_prints_a_table_and_writes_json(trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    code = main(
        [
            "eval",
            "--checkpoint",
            str(trained / "checkpoint.safetensors"),
            "--data",
            str(RACCOON),
            "--split-file",
            str(RACCOON / "test_labels.csv"),
            "--out",
            str(out),
            *SMALL,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "AR 0.5:0.95" in printed
    ran = r"^ran the model on \d+ image\(s\) \(first results after [\d.]+ s, then [\d.]+ images/s\)"
    assert re.search(ran, printed, re.MULTILINE), printed
    assert 0 <= json.loads(out.read_text())["AR@100"] <= 1


def test_propose_writes_coco_results_and_overlays(trained, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("raccoon-1.jpg", "raccoon-2.jpg"):
        (folder / name).write_bytes((RACCOON / "images" / name).read_bytes())
    out, overlays = tmp_path / "p.json", tmp_path / "over"
    code = main(
        [
            "propose",
            str(folder),
            "--checkpoint",
            str(trained / "checkpoint.safetensors"),
            "--top",
            "7",
            "--batch-size",
            "1",  # two batches: a rate to tell
            "--out",
            str(out),
            "--overlays",
            str(overlays),
            *SMALL,
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert len(results) == 14 and {r["file_name"] for r in results} == {
        "raccoon-1.jpg",
        "raccoon-2.jpg",
    }
    first = results[0]
    assert set(first) == {"file_name", "image_id", "bbox", "score"}
    with Image.open(folder / "raccoon-1.jpg") as img:
        w, h = img.size
    x, y, bw, bh = first["bbox"]  # original-image pixels
    assert x >= 0 and x + bw <= w + 0.01 and y >= 0 and y + bh <= h + 0.01
    assert sorted(p.name for p in overlays.iterdir()) == ["raccoon-1.jpg.png", "raccoon-2.jpg.png"]
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"wrote 14 proposals for 2 image\(s\) to {re.escape(str(out))}; 2 overlays in "
        rf"{re.escape(str(overlays))} \(first results after \d+\.\d\d s, then \d+\.\d images/s\)",
        summary,
    ), summary


def test_summary_rate_leaves_out_the_first_batch():
    pace = Pace(started=10.0, first=15.0, last=15.4, images=3, later=2)
    assert pace.rate() == pytest.approx(5.0)  # the 2 images after the first batch in 0.4 s
    assert pace.rate(end=15.5) == pytest.approx(4.0)  # ... to the file in place
    assert Written(30, 3, 0, pace=pace, end=15.5).describe("detections", "d.json", None) == (
        "wrote 30 detections for 3 image(s) to d.json "
        "(first results after 5.00 s, then 4.0 images/s)"
    )
    one = Pace(started=0.0, first=0.25, last=0.25, images=1)
    assert one.rate() is None  # one batch: no rate to tell
    assert Written(1, 1, 0, 2, one, 0.3).describe("proposals", "p.json", None) == (
        "wrote 1 proposals for 1 image(s) to p.json; 2 image(s) could not be read "
        "(first results after 0.25 s)"
    )
    assert Pace().summary() == ""
    assert Written(0, 0, 0).describe("detections", "d.json", None) == (
        "wrote 0 detections for 0 image(s) to d.json"
    )


def test_pace_counts_the_images_after_the_first_batch(tmp_path):
    pace = Pace()
    batches = [([{}] * 2, "a"), ([{}] * 3, "b"), ([{}], "c")]
    assert [output for _, output in pace.track(batches)] == ["a", "b", "c"]
    assert (pace.images, pace.later) == (6, 4)
    assert pace.started <= pace.first <= pace.last
    results = [
        ProposalResult(k, f"{k}.jpg", torch.zeros(1, 4), torch.ones(1), (8, 8)) for k in range(6)
    ]
    paced = export_results(results, tmp_path / "a.json", pace=pace)
    assert paced.images == 6 and paced.pace is pace and paced.end >= pace.last
    unpaced = export_results(results, tmp_path / "b.json")  # timed as the results come
    assert (unpaced.pace.images, unpaced.pace.later) == (6, 5)
    assert export_results([], tmp_path / "c.json").pace.first is None


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert (
        main(["eval", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", str(RACCOON)])
        == 2
    )
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--preset", "tiny"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "train", "eval", "propose"])
def test_every_option_has_help(command):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings} has no help"


@pytest.mark.parametrize("what", ["anchors", "grid", "labels", "objectness", "nms", "proposals"])
def test_show_writes_each_picture(trained, tmp_path, what):
    out = tmp_path / f"{what}.png"
    args = [
        "show",
        what,
        str(RACCOON),
        "--split-file",
        str(RACCOON / "test_labels.csv"),
        "--preset",
        "tiny",
        "--out",
        str(out),
        *SMALL,
    ]
    if what in ("objectness", "nms", "proposals"):
        args += ["--checkpoint", str(trained / "checkpoint.safetensors")]
    assert main(args) == 0
    with Image.open(out) as img:
        assert img.format == "PNG"


def test_show_losses_and_eval_plots(trained, tmp_path):
    assert main(["show", "losses", str(trained), "--out", str(tmp_path / "l.png")]) == 0
    checkpoint = str(trained / "checkpoint.safetensors")  # a run's checkpoint: its folder's log
    assert main(["show", "losses", checkpoint, "--out", str(tmp_path / "c.png")]) == 0
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(trained / "checkpoint.safetensors"),
                "--data",
                str(RACCOON),
                "--split-file",
                str(RACCOON / "test_labels.csv"),
                "--plots",
                str(tmp_path),
                *SMALL,
            ]
        )
        == 0
    )
    assert (tmp_path / "recall.png").is_file()
    assert main(["show", "nms", str(RACCOON), "--out", str(tmp_path / "x.png")]) == 2


def test_faster_rcnn_trains_evaluates_detects_and_proposes(tmp_path, capsys):
    run = tmp_path / "frcnn"
    common = ["--short-side", "128", "--max-size", "192", "--no-progress"]
    assert train_tiny_on_raccoon(run, steps=3, extra=["--model", "faster-rcnn"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "VOC07_mAP50"} <= set(metrics)
    assert set(metrics["per_class_AP"]) == {"raccoon"}
    ck = str(run / "checkpoint.safetensors")
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                ck,
                "--data",
                str(RACCOON),
                "--split-file",
                str(RACCOON / "test_labels.csv"),
                *common,
            ]
        )
        == 0
    )
    assert "COCO box AP" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", ck, "--data", str(RACCOON), "--amp", "fp16", *common])
    assert "--amp fp16 needs a CUDA device" in capsys.readouterr().err
    out = tmp_path / "det.json"
    assert (
        main(
            [
                "detect",
                str(RACCOON / "images" / "raccoon-1.jpg"),
                "--checkpoint",
                ck,
                "--score",
                "0",
                "--out",
                str(out),
                "--overlays",
                str(tmp_path / "o"),
                *common,
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    assert len(results) > 0 and all(r["category_name"] == "raccoon" for r in results)
    # under bf16 autocast too (boxes decoded in float32: JSON-writable)
    args = [str(RACCOON / "images" / "raccoon-1.jpg"), "--checkpoint", ck, "--score", "0"]
    out_bf16 = tmp_path / "det-bf16.json"
    assert main(["detect", *args, "--amp", "bf16", "--out", str(out_bf16), *common]) == 0
    assert len(json.loads(out_bf16.read_text())) > 0
    assert {"file_name", "image_id", "bbox", "score", "category_id"} <= set(results[0])
    assert (tmp_path / "o" / "raccoon-1.jpg.png").is_file()
    # a detector checkpoint also proposes, through its RPN; an RPN checkpoint cannot detect
    assert (
        main(
            [
                "propose",
                str(RACCOON / "images" / "raccoon-1.jpg"),
                "--checkpoint",
                ck,
                "--out",
                str(tmp_path / "p.json"),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "detect",
                str(RACCOON / "images"),
                "--checkpoint",
                str(tmp_path / "missing.safetensors"),
            ]
        )
        == 2
    )


def test_train_with_a_seed_is_reproducible(tmp_path):
    # the same seed: the same initial weights, data order and losses
    for name in ("a", "b"):
        assert train_tiny_on_raccoon(tmp_path / name, steps=2, extra=["--log-every", "1"]) == 0
    logs = [(tmp_path / n / "train_log.csv").read_text().splitlines() for n in ("a", "b")]
    losses = [[line.split(",")[2] for line in log[1:]] for log in logs]
    assert len(losses[0]) == 2 and losses[0] == losses[1]


def _torchrun_train(out, *options: str):
    """``rpnkit train`` in two processes on the CPU (gloo), raccoon's training split at 96 px."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "rpnkit", "train", "--data", str(RACCOON)]
    command += ["--split-file", str(RACCOON / "train_labels.csv"), *options]
    command += ["--batch-size", "2", "--workers", "0", "--out", str(out)]
    command += ["--short-side", "96", "--max-size", "144", "--no-progress", "--log-every", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "checkpoint.safetensors").is_file()
    return done


def test_train_under_torchrun_with_two_processes(tmp_path):
    # DistributedDataParallel on the CPU (gloo): rank 0 alone writes and reports; the global
    # batch is split between the processes by the distributed sampler
    out = tmp_path / "ddp"
    validation = ["--val-data", str(RACCOON), "--val-split-file", str(RACCOON / "test_labels.csv")]
    done = _torchrun_train(out, *validation, "--preset", "tiny", "--steps", "3")
    assert done.stdout.count("trained 3 steps") == 1
    assert done.stdout.count("images, 1 class") == 2  # the two summaries, by rank 0 alone
    assert done.stdout.count("validation: AR@100") == 1
    assert len((out / "train_log.csv").read_text().splitlines()) == 4


def test_train_under_torchrun_with_frozen_norms_skips_the_buffer_broadcast(tmp_path):
    # r18-fpn's norms are frozen: DDP keeps no buffer in step after construction
    # (engine/distributed.buffers_drift), and says nothing about it
    done = _torchrun_train(tmp_path / "ddp", "--preset", "r18-fpn", "--steps", "2")
    assert done.stdout.count("trained 2 steps") == 1
    assert "broadcast_buffers" not in done.stderr, done.stderr[-3000:]  # no deprecation


def test_train_stops_at_its_time_budget(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tiny_on_raccoon(out, steps=100_000, extra=["--time-budget", "2"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^step \d+: the time budget is spent \(\d+ s of 2\)", printed, re.M)
    steps = int(re.search(r"trained (\d+) steps", printed).group(1))
    assert 0 < steps < 100_000
    assert main(["train", "--data", str(RACCOON), "--time-budget", "-1"]) != 0
    assert "--time-budget: must be a number >= 0, got -1" in capsys.readouterr().err
    code = main(["train", "--data", str(RACCOON), "--model", "faster-rcnn", "--schedule",
                 "alternating", "--time-budget", "5", "--out", str(tmp_path / "alt")])  # fmt: skip
    assert code != 0
    assert "--time-budget, time_budget_s=) is for --schedule joint only" in capsys.readouterr().err


def test_options_without_effect_and_wrong_targets_are_one_line(trained, tmp_path, capsys):
    checkpoint = str(trained / "checkpoint.safetensors")
    image = tmp_path / "a.jpg"
    Image.new("RGB", (64, 48), (90, 60, 30)).save(image)
    propose = ["propose", str(image), "--checkpoint", checkpoint, *SMALL]
    for extra, line in (
        (["--max-overlays", "3"], "--max-overlays does nothing without --overlays"),
        (["--overlay-top", "5"], "--overlay-top does nothing without --overlays"),
        (["--tile-overlap", "10"], "--tile-overlap does nothing without --tile-size"),
        (["--overlays", str(image)], f"--overlays {image}: is a file, not a folder to write in"),
        (["--split-file", str(image)], "a folder of images without annotations: --split-file"),
    ):
        argv = [*propose, *extra]
        if extra[0] == "--split-file":
            argv[1] = str(tmp_path)
        assert main([*argv, "--out", str(tmp_path / "p.json")]) == 2, extra
        assert line in capsys.readouterr().err, extra
    assert not (tmp_path / "p.json").exists()


def test_a_gif_is_read_as_its_first_frame_and_other_pictures_say_what_they_are(
    trained, tmp_path, capsys
):
    frames = [Image.new("RGB", (64, 48), c) for c in ((200, 10, 10), (10, 200, 10))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "p.json"
    argv = [
        "propose",
        str(tmp_path / "a.gif"),
        "--checkpoint",
        str(trained / "checkpoint.safetensors"),
    ]
    assert main([*argv, *SMALL, "--out", str(out)]) == 0
    assert json.loads(out.read_text())[0]["file_name"].endswith("a.gif")
    frames[0].save(tmp_path / "a.ico")
    argv[1] = str(tmp_path / "a.ico")
    assert main([*argv, *SMALL, "--out", str(out)]) == 2
    assert "a.ico: a .ico image, which rpnkit does not read" in capsys.readouterr().err


def test_stored_results_refuse_model_options_and_show_anchors_reads_a_checkpoint(
    trained, tmp_path, capsys
):
    proposals = tmp_path / "p.json"
    proposals.write_text("[]")
    argv = ["eval", "--proposals", str(proposals), "--data", str(RACCOON), "--tile-size", "64"]
    assert main([*argv, "--batch-size", "2"]) == 0  # a warning: scripts pass them to each use
    assert "--batch-size, --tile-size: ignored: stored --proposals" in capsys.readouterr().err
    image = RACCOON / "images" / "raccoon-1.jpg"
    assert main(["train", "--data", str(image)]) == 2  # an image is not a dataset
    assert "raccoon-1.jpg: an image, not a dataset: this needs its boxes" in capsys.readouterr().err
    out = tmp_path / "grid.png"
    checkpoint = str(trained / "checkpoint.safetensors")
    assert main(["show", "grid", str(image), "--checkpoint", checkpoint, "--out", str(out)]) == 0
    assert out.is_file()  # the checkpoint's anchors at its size (128 / 192): no --preset needed


def test_resume_needs_only_the_checkpoint_and_what_changes(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  momentum: 0.8\n")  # a field no option sets
    run = tmp_path / "run"
    extra = ["--config", str(config), "--lr", "0.005", "--preset", "tiny", "--time-budget", "1e6"]
    assert train_tiny_on_raccoon(run, steps=2, extra=extra) == 0
    checkpoint = run / "checkpoint.safetensors"
    # the settings, data, model and time budget are the checkpoint's; --steps grows
    assert main(["train", "--resume", str(checkpoint), "--steps", "3", "--no-progress"]) == 0
    assert "trained steps 2-3" in capsys.readouterr().out
    assert read_header(checkpoint)["extra"]["time_budget_s"] == 1e6
    argv = ["train", "--resume", str(checkpoint), "--steps", "4", "--time-budget", "0"]
    assert main([*argv, "--no-progress"]) == 0  # 0: the budget dropped
    assert "time_budget_s" not in read_header(checkpoint)["extra"]
    import yaml

    record = yaml.safe_load((run / "config.yaml").read_text())
    assert (record["train"]["steps"], record["train"]["momentum"]) == (4, 0.8)
    assert record["train"]["lr"] == 0.005 and record["data"]["short_side"] == 128
    # a setting that may not change still stops, naming it
    argv = ["train", "--resume", str(checkpoint), "--steps", "5", "--lr", "0.1"]
    assert main([*argv, "--no-progress"]) == 2
    assert "train.lr 0.005 -> 0.1" in capsys.readouterr().err


def test_a_runs_config_yaml_given_as_config_trains_that_run_again(tmp_path, capsys):
    first = tmp_path / "first"
    assert (
        train_tiny_on_raccoon(first, steps=2, extra=["--lr", "0.005", "--model", "faster-rcnn"])
        == 0
    )
    again = tmp_path / "again"
    argv = ["train", "--config", str(first / "config.yaml"), "--out", str(again), "--no-progress"]
    assert main([*argv, "--steps", "3"]) == 0
    import yaml

    before, after = (yaml.safe_load((r / "config.yaml").read_text()) for r in (first, again))
    assert after["model"] == before["model"] and after["data"] == before["data"]
    assert after["train"] == {**before["train"], "steps": 3}  # but for the option named


def test_resume_edge_cases_best_record_options_and_print_config(trained, tmp_path, capsys):
    import yaml

    from rpnkit.cli.train import data_config

    # best.safetensors is a model to use, not a run to resume
    run = tmp_path / "run"
    extra = ["--eval-every", "2", "--log-every", "1"]
    assert train_tiny_on_raccoon(run, steps=4, extra=extra) == 0
    argv = ["train", "--resume", str(run / "best.safetensors"), "--steps", "6"]
    capsys.readouterr()
    assert main(argv) == 2  # (written at the first validation, step 2, whatever followed)
    refused = capsys.readouterr()
    assert "a model to use (no optimizer or schedule state)" in refused.err
    assert "images, 1 class" not in refused.out  # refused before reading the data (it read
    # it and wrote a held-out split into the run's folder first)
    # a run's record gives the model: --preset with it says so
    argv = ["train", "--config", str(run / "config.yaml"), "--preset", "tiny", "--out", "x"]
    assert main(argv) == 2
    assert "a run's record gives the model, with its kind: --preset" in capsys.readouterr().err
    # the resumed run's own model is printed, not the default preset
    checkpoint = str(trained / "checkpoint.safetensors")
    assert main(["train", "--resume", checkpoint, "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["preset"] == "tiny"
    # a new validation set does not keep the old one's split file
    args = parse_args(build_parser(), ["train", "--val-data", "other", "--resume", checkpoint])
    saved = {"data": "d", "val_data": "v", "val_split_file": "v.csv", "short_side": 96}
    data = data_config(args, saved)
    kept = (data.val_data, data.val_split_file, data.data, data.short_side)
    assert kept == ("other", None, "d", 96)
