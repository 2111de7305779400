"""The files and folders the command line writes: one rule for every output option, checked
before any work (docs/cli.md, "Option ranges, errors and warnings"). A missing folder on the
way is made; a folder given as the file, or a file where a folder should be, stops the command
with exit code 2 and one ``rpnkit <command>: error:`` line naming the path, before the data is
read or the model loaded, so that no result is computed and then lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from rpnkit.cli import main
from rpnkit.engine.paths import check_folder, output_file, output_folder
from rpnkit.engine.run_folder import run_folder

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
STEMS = ("raccoon-4", "raccoon-5", "raccoon-6")
TINY = ["--preset", "tiny", "--short-side", "96", "--max-size", "144", "--no-progress"]


@pytest.fixture
def data(tmp_path) -> Path:
    """Three raccoon images with their VOC XML files."""
    root = tmp_path / "data"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for stem in STEMS:
        shutil.copy(RACCOON / "annotations" / f"{stem}.xml", root / "annotations")
        shutil.copy(RACCOON / "images" / f"{stem}.jpg", root / "images")
    return root


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("not a folder\n")
    return path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_stopped(ran: tuple[int, str, str], command: str, line: str) -> None:
    """Exit code 2, one error line (``line``) on stderr, nothing done before it (no output)."""
    code, out, err = ran
    assert "Traceback" not in err
    assert code == 2, err
    assert err.splitlines() == [f"rpnkit {command}: error: {line}"], err
    assert out == "", out  # said before the data was read (its summary line) or anything run


# ---------------------------------------------------------------- the rule, in the library


def test_an_output_file_gets_its_folders_and_refuses_a_folder_or_a_file_in_the_way(
    tmp_path, a_file
):
    nested = tmp_path / "new" / "deeper" / "a.json"
    assert output_file(nested, what="JSON") == nested
    assert nested.parent.is_dir() and not nested.exists()  # the folder made, nothing written
    with pytest.raises(ValueError, match=rf"^{tmp_path}: is a folder; give the PNG file to write$"):
        output_file(tmp_path, what="PNG")
    for under in (a_file / "a.json", a_file / "sub" / "a.json"):
        with pytest.raises(ValueError, match=rf"^{under}: {a_file} is a file, not a folder$"):
            output_file(under, what="JSON")


def test_an_output_folder_is_made_unless_a_file_stands_in_its_way(tmp_path, a_file):
    assert output_folder(tmp_path / "plots" / "x").is_dir()
    with pytest.raises(ValueError, match=r"^--plots .*afile: is a file, not a folder to write in$"):
        output_folder(a_file, name=f"--plots {a_file}")
    with pytest.raises(ValueError, match=rf"^{a_file}/sub: {a_file} is a file, not a folder$"):
        check_folder(a_file / "sub")
    assert not (tmp_path / "later").exists()
    assert check_folder(tmp_path / "later" / "x") == tmp_path / "later" / "x"  # not made


# ---------------------------------------------------------------- B7: anchors --json, --out-config


def test_anchors_makes_the_folders_of_json_and_out_config(data, tmp_path, capsys):
    report, config = tmp_path / "nod7" / "a.json", tmp_path / "nod8" / "a.yaml"
    argv = ["anchors", "--data", data, *TINY, "--fit", "--json", report, "--out-config", config]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "coverage_fitted" in json.loads(report.read_text())
    assert "rpn" in yaml.safe_load(config.read_text())
    assert f"wrote {report}" in out and f"wrote {config}:" in out


@pytest.mark.parametrize("option", ["--json", "--out-config"])
def test_anchors_refuses_a_folder_or_a_file_in_the_way_before_the_analysis(
    option, data, tmp_path, a_file, capsys
):
    what = "JSON" if option == "--json" else "config"
    argv = ["anchors", "--data", data, *TINY, "--fit", option]
    ran = run_cli([*argv, tmp_path], capsys)
    assert_stopped(ran, "anchors", f"{tmp_path}: is a folder; give the {what} file to write")
    ran = run_cli([*argv, a_file / "a.out"], capsys)
    assert_stopped(ran, "anchors", f"{a_file}/a.out: {a_file} is a file, not a folder")


def test_anchors_out_config_without_fit_is_one_line(data, tmp_path, capsys):
    ran = run_cli(["anchors", "--data", data, *TINY, "--out-config", tmp_path / "a.yaml"], capsys)
    assert_stopped(ran, "anchors", "--out-config does nothing without --fit")
    assert not (tmp_path / "a.yaml").exists()


# ---------------------------------------------------------------- B8: train --out under a file


def test_train_out_under_a_file_is_one_line_before_the_data_is_read(data, a_file, capsys):
    argv = ["train", "--data", data, *TINY, "--steps", "1", "--workers", "0"]
    ran = run_cli([*argv, "--out", a_file / "sub"], capsys)
    assert_stopped(ran, "train", f"{a_file}/sub: {a_file} is a file, not a folder")
    ran = run_cli([*argv, "--out", a_file], capsys)  # the file itself: as before
    assert_stopped(ran, "train", f"{a_file}: is a file, not a folder to write the run in")
    with pytest.raises(ValueError, match=r"afile/sub/run: .*afile is a file, not a folder$"):
        run_folder(a_file / "sub" / "run", None)


# ---------------------------------------------------------------- R9: show --out a folder


def test_show_refuses_a_folder_as_its_png_rather_than_writing_beside_it(
    data, tmp_path, a_file, capsys
):
    image = data / "images" / "raccoon-4.jpg"
    show = ["show", "anchors", image, *TINY]
    folder = tmp_path / "outdir"
    folder.mkdir()
    ran = run_cli([*show, "--out", folder], capsys)
    assert_stopped(ran, "show", f"{folder}: is a folder; give the PNG file to write")
    assert not (tmp_path / "outdir.png").exists()  # was written there, silently
    (tmp_path / "pics.png").mkdir()  # the file --out pics names, once .png is added
    ran = run_cli([*show, "--out", tmp_path / "pics"], capsys)
    assert_stopped(ran, "show", f"{tmp_path}/pics.png: is a folder; give the PNG file to write")
    ran = run_cli([*show, "--out", a_file / "a.png"], capsys)
    assert_stopped(ran, "show", f"{a_file}/a.png: {a_file} is a file, not a folder")
    code, out, err = run_cli([*show, "--out", tmp_path / "new" / "a"], capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == f"wrote {tmp_path}/new/a.png"


# ---------------------------------------------------------------- R16: export makes the folder


def test_export_makes_a_missing_folder_as_propose_detect_and_eval_do(tmp_path, a_file, capsys):
    pytest.importorskip("onnx")
    from rpnkit.export import DEFAULT_OPSET
    from rpnkit.export.exporters import check_target

    target = tmp_path / "nod9" / "m.onnx"
    assert check_target(target, DEFAULT_OPSET) == target  # was: "nod9 is not a folder"
    assert target.parent.is_dir()
    missing = tmp_path / "none.safetensors"  # the path is said before the checkpoint is read
    ran = run_cli(["export", "--checkpoint", missing, "--out", a_file / "m.onnx"], capsys)
    assert_stopped(ran, "export", f"{a_file}/m.onnx: {a_file} is a file, not a folder")


# ---------------------------------------------------------------- --overlays under a file


def test_overlays_under_a_file_is_one_line_before_the_model_is_loaded(
    data, tmp_path, a_file, capsys
):
    missing = tmp_path / "none.safetensors"  # never read: the overlays are checked first
    argv = ["propose", data / "images", "--checkpoint", missing, "--out", tmp_path / "p.json"]
    ran = run_cli([*argv, "--overlays", a_file / "sub", *TINY[2:]], capsys)
    assert_stopped(ran, "propose", f"--overlays {a_file}/sub: {a_file} is a file, not a folder")


# ---------------------------------------------------------------- R1: report of a malformed record


def test_report_of_a_malformed_run_record_is_one_line_naming_it(tmp_path, capsys):
    from rpnkit.engine.run_record import RunRecord

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("a: [b\n")
    with pytest.raises(ValueError) as caught:
        RunRecord.load(run)
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"{run}/config.yaml: not a readable run record (malformed YAML: expected ',' or ']', "
        "but got '<stream end>', line 2)"
    )
    (run / "checkpoint.safetensors").write_bytes(b"")  # a run folder to the report's eyes
    code, _, err = run_cli(["report", run, "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [f"rpnkit report: error: {message}"], err


# ---------------------------------------------------------------- eval, demo and report


def test_eval_checks_its_plots_folder_and_json_before_evaluating(data, tmp_path, a_file, capsys):
    # --plots under a file was a traceback after the evaluation, its figures lost
    stored = tmp_path / "none.json"
    stored.write_text("[]")
    argv = ["eval", "--proposals", stored, "--data", data]
    ran = run_cli([*argv, "--plots", a_file / "sub"], capsys)
    assert_stopped(ran, "eval", f"--plots {a_file}/sub: {a_file} is a file, not a folder")
    ran = run_cli([*argv, "--out", a_file / "m.json"], capsys)
    assert_stopped(ran, "eval", f"{a_file}/m.json: {a_file} is a file, not a folder")
    made = tmp_path / "new" / "plots"
    assert run_cli([*argv, "--plots", made, "--out", tmp_path / "new" / "m.json"], capsys)[0] == 0
    assert (tmp_path / "new" / "m.json").is_file() and made.is_dir()


def test_demo_refuses_a_file_as_its_folder_before_training(a_file, capsys):
    ran = run_cli(["demo", "--out", a_file, "--no-progress"], capsys)
    assert_stopped(ran, "demo", f"{a_file}: is a file, not a folder to write the demo in")
    ran = run_cli(["demo", "--out", a_file / "sub", "--no-progress"], capsys)
    assert_stopped(ran, "demo", f"{a_file}/sub: {a_file} is a file, not a folder")


def test_report_refuses_a_folder_in_the_place_of_its_page_before_the_work(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "report.html").mkdir(parents=True)
    (run / "checkpoint.safetensors").write_bytes(b"")  # refused before it is read
    ran = run_cli(["report", run, "--no-progress"], capsys)
    assert_stopped(ran, "report", f"{run}/report.html: is a folder; give the HTML file to write")


def test_a_malformed_config_file_is_one_line_with_its_line_number(tmp_path, capsys):
    # the YAML error's own text, source quoted, was flattened onto the line
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [0.1\n")
    ran = run_cli(["train", "--config", bad, "--data", RACCOON], capsys)
    assert_stopped(ran, "train", f"{bad}: cannot read the config: malformed YAML: expected ',' "
                   "or ']', but got '<stream end>', line 3")  # fmt: skip


def test_propose_and_detect_check_their_json_before_loading_the_model(
    data, tmp_path, a_file, capsys
):
    # --out under a file was found when the writer opened (model loaded, input indexed) and
    # said otherwise: "cannot write the results there ([Errno 17] File exists ...)"
    missing = tmp_path / "none.safetensors"  # never read: the output is checked first
    for command in ("propose", "detect"):
        argv = [command, data / "images", "--checkpoint", missing, "--out", a_file / "r.json"]
        ran = run_cli([*argv, *TINY[2:]], capsys)
        assert_stopped(ran, command, f"{a_file}/r.json: {a_file} is a file, not a folder")
