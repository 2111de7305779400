"""The README's Python snippets run as written, from a checkout with ../shared beside it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_snippets():
    blocks = python_blocks()
    assert len(blocks) >= 2
    assert any("rpnkit.fit(" in b and "rpnkit.load(" in b for b in blocks)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_snippet_runs_as_written(index, tmp_path):
    # a checkout's layout: the snippet runs in the repository folder, ../shared beside it
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (tmp_path / "shared").symlink_to(SHARED.resolve())
    script = checkout / "snippet.py"
    script.write_text(python_blocks()[index])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=checkout, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
