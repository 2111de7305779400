"""Test setup shared by the suite: a headless Chromium for the report test, installed from
Debian's packages when the machine has none (CI runs as root on a fresh machine)."""

import os
import shutil
import subprocess

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
