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


def test_the_python_api_page_names_what_exists():
    """docs/python.md: every keyword of its fit call is fit's, every method of its table and
    every keyword the text gives a Predictor method is the Predictor's."""
    import inspect

    import rpnkit

    text = (ROOT / "docs" / "python.md").read_text()
    (fit_call,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "fit(" in b]
    keywords = re.findall(r"^\s+(\w+)=", fit_call, flags=re.M)
    assert len(keywords) >= 8
    assert set(keywords) <= set(inspect.signature(rpnkit.fit).parameters)
    cells = re.findall(r"^\| (`.*?) \|", text, flags=re.M)  # the method table's first column
    methods = [name for cell in cells for name in re.findall(r"`(\w+)", cell)]
    assert len(methods) >= 8
    for name in methods:
        assert callable(getattr(rpnkit.Predictor, name, None)), name
    given = {"propose": "iter_proposals", "detect": "iter_detections"}  # they pass it on
    for name, keyword in re.findall(r"`(\w+)\((?:inputs|data), (\w+)=", text):
        method = getattr(rpnkit.Predictor, given.get(name, name))
        assert keyword in inspect.signature(method).parameters, (name, keyword)
