"""Test setup shared by the suite: a headless Chromium for the report test, installed from
Debian's packages when the machine has none (CI runs as root on a fresh machine)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("the report test needs Debian's chromium: apt-get install chromium")
    return found


RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"


def train_tiny_on_raccoon(out: Path, *, steps: int, size: int = 128, extra=()) -> int:
    """``rpnkit train`` of the tiny preset on raccoon's CSV split, with raccoon's test split
    as validation data, at a small image size; returns the exit code."""
    from rpnkit.cli import main

    return main(
        [
            "train",
            "--data",
            str(RACCOON),
            "--split-file",
            str(RACCOON / "train_labels.csv"),
            "--val-data",
            str(RACCOON),
            "--val-split-file",
            str(RACCOON / "test_labels.csv"),
            "--preset",
            "tiny",
            "--steps",
            str(steps),
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--out",
            str(out),
            "--short-side",
            str(size),
            "--max-size",
            str(size * 3 // 2),
            "--no-progress",
            *extra,
        ]
    )
