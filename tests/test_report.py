import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_tiny_on_raccoon
from PIL import Image

from rpnkit.cli import main
from rpnkit.engine.checkpoint import read_header
from rpnkit.evaluation.detection import COCO_STATS, format_metric
from rpnkit.viz.report import gallery_picks

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    # validated every 3 steps: best.safetensors and the validations the page lists
    assert train_tiny_on_raccoon(run, steps=6, size=192, extra=["--eval-every", "3"]) == 0
    assert main(["report", str(run), "--gallery", "3", "--no-progress"]) == 0
    return run / "report.html"


def test_report_is_one_self_contained_page(report):
    text = report.read_text()
    assert 'id="metrics"' in text and "<pre id='config'>" in text
    assert text.count("data:image/png;base64,") == 2 + 2 * 3  # 2 curves, 3 best + 3 worst
    assert not re.search(r'src="(?!data:)', text)  # nothing to fetch: opens from disk


def listed_metrics(page: Path) -> dict:
    """The page's "All metrics" list."""
    text = re.search(r"<pre id='metrics-json'>(.*?)</pre>", page.read_text(), flags=re.S)
    return json.loads(html.unescape(text.group(1)))


def test_report_lists_the_figures_of_the_runs_metrics_json(report):
    """Evaluated at the run's batch size (2), as the run's validation was, the page's recall
    is the run's own to the bit (batches padded alike: docs/cli.md)."""
    recorded = json.loads((report.parent / "metrics.json").read_text())
    assert listed_metrics(report) == recorded


def test_report_displays_in_headless_chromium(report, chromium, tmp_path):
    # The page's own script counts the images that decoded; the DOM dump after load shows it.
    dom = subprocess.run(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    loaded = re.search(r'data-images-loaded="(\d+)" data-images-total="(\d+)"', dom)
    assert loaded is not None, "the page's load script did not run"
    assert loaded.group(1) == loaded.group(2) == "8"
    assert dom.count("<tr>") >= 13  # the header and 12 metric rows rendered as a table
    # and a screenshot that is not blank: text, tables and pictures give many colours
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1200,2000",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 2000
    assert (pixels != 255).any(axis=1).mean() > 0.1  # more than a white page


def test_report_needs_a_run_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a training run folder" in capsys.readouterr().err
    checkpoint = tmp_path / "checkpoint.safetensors"  # the run's checkpoint given: its folder
    checkpoint.write_bytes(b"")
    assert main(["report", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert f"{checkpoint}: is a file; a report is of a run folder ({tmp_path})" in err


def test_report_names_the_best_validation_and_lists_those_logged(report):
    best = read_header(report.parent / "best.safetensors")["extra"]["best"]
    text = report.read_text()
    line = re.search(r"<p id='best'>(.*?)</p>", text).group(1)
    assert line.startswith(
        f"best validation during training: {best['metric']} {best['value']:.3f} at step "
        f"{best['step']}, its weights kept in {html.escape(str(report.parent))}/best.safetensors"
    )
    # the validations of steps 3 and 6, as TensorBoard has them (no other file keeps them)
    rows = re.findall(r"<tr><td>(\d+)</td>(.*?)</tr>", validations_table(text))
    assert [step for step, _ in rows] == ["3", "6"]
    final = json.loads((report.parent / "metrics.json").read_text())  # the step-6 validation
    assert f"<td>{final['AR@100']:.3f}</td><td>{final['AR@1000']:.3f}</td>" in rows[1][1]


def validations_table(text: str) -> str:
    return re.search(r'<table id="validations">(.*?)</table>', text, flags=re.S).group(1)


def test_gallery_picks_show_each_image_once():
    recall = torch.tensor([0.5, float("nan"), 1.0, 0.0, 0.25])  # image 1 has no GT
    assert gallery_picks(recall, 1) == ([2], [3])
    assert gallery_picks(recall, 2) == ([2, 0], [3, 4])
    # 4 images with GT, 3 of each asked: the better half best, the rest worst, none twice
    assert gallery_picks(recall, 3) == ([2, 0], [3, 4])
    assert gallery_picks(recall[:3], 5) == ([2], [0])
    assert gallery_picks(recall[[2, 0, 4]], 2) == ([0, 1], [2])  # odd: the middle one best
    assert gallery_picks(recall, 0) == ([], [])


def test_a_gallery_larger_than_the_validation_set_repeats_no_image(report, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report.parent, run)
    rows = (RACCOON / "test_labels.csv").read_text().splitlines()
    names = list(dict.fromkeys(r.split(",")[0] for r in rows[1:]))[:3]
    three = tmp_path / "three.csv"
    three.write_text("\n".join(rows[:1] + [r for r in rows[1:] if r.split(",")[0] in names]))
    args = ["report", str(run), "--data", str(RACCOON), "--split-file", str(three)]
    assert main([*args, "--gallery", "4", "--no-progress"]) == 0
    text = (run / "report.html").read_text()
    captions = re.findall(r"<figcaption>(?:best|worst) recall: (.*?), recall@100", text)
    assert sorted(captions) == sorted(names)  # each of the 3 images once
    assert "Only 3 validation image(s) have GT: each is shown once." in text


def test_a_detector_run_reports_its_map_first(tmp_path):
    run = tmp_path / "frcnn"
    assert train_tiny_on_raccoon(run, steps=3, size=128, extra=["--model", "faster-rcnn"]) == 0
    assert main(["report", str(run), "--gallery", "1", "--no-progress"]) == 0
    text = (run / "report.html").read_text()
    assert text.index('id="detection"') < text.index('id="metrics"')  # mAP before recall
    assert "<td>raccoon</td>" in text and 'id="per-class"' in text
    assert text.count("data:image/png;base64,") == 1 + 2 + 2 * 1  # PR, 2 curves, gallery
    listed, recorded = (
        listed_metrics(run / "report.html"),
        json.loads((run / "metrics.json").read_text()),
    )
    del recorded["pr_curves"]  # drawn, not listed
    assert {k: listed[k] for k in recorded} == recorded  # the run's mAP, and recall besides
    assert "AP50" in listed and "AR@100" in listed
    # no GT of a size (raccoon has no small box): n/a, as eval prints it, in every table
    assert listed["APs"] == -1 and listed["AR@100_small"] == -1
    cells = re.findall(r"<td>(.*?)</td>", re.search(r'id="detection">(.*?)</table>', text)[1])
    assert cells == [format_metric(listed[k]) for k in COCO_STATS] + [
        f"{listed['VOC07_mAP50']:.3f}"
    ]
    assert cells[COCO_STATS.index("APs")] == "n/a"
    recall = re.search(r'id="metrics">(.*?)</table>', text)[1]
    small = re.findall(r"<tr><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td>", recall)
    assert small == ["n/a"] * 12 and "-1.000" not in text.split("<pre id='metrics-json'>")[0]


def test_a_run_with_a_held_out_split_reports_on_the_held_out_images(tmp_path):
    run = tmp_path / "split"
    args = ["train", "--data", str(RACCOON), "--val-fraction", "0.1", "--preset", "tiny"]
    args += ["--steps", "2", "--batch-size", "2", "--workers", "0", "--out", str(run)]
    args += ["--short-side", "96", "--max-size", "144", "--no-progress"]
    assert main(args) == 0
    assert main(["report", str(run), "--gallery", "1", "--no-progress"]) == 0
    text = (run / "report.html").read_text()
    assert "(20 images)" in text  # 10 % of raccoon's 200, not all of them
