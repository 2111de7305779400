"""``rpnkit export``'s checks and ``--verify``: an --out that is the checkpoint (or not .onnx)
is refused before anything is written; the ONNX file is written whole or not at all; a missing
onnxscript is one line before the model is loaded; an ONNX file given as a checkpoint says
what it is; the settings that the graph bakes in (--score, --max-detections, --top) are
refused for the other kind of model; ``--verify`` compares ONNX Runtime with rpnkit in PyTorch
(``Predictor.detect`` / ``propose``, what ``rpnkit detect`` / ``propose`` run) on raccoon
photographs at the settings baked in, and fails on a file that does not compute what it says;
docs/deploy.md names every option and metadata key.
"""

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import torch
from conftest import RACCOON

import rpnkit
from rpnkit.cli import main
from rpnkit.engine.checkpoint import RPN, ModelSpec, load_model, save_model
from rpnkit.export import ExportableModel, export_configs, save_onnx, verify_onnx
from rpnkit.export.verify import Rows, Verification, compare
from rpnkit.modeling.presets import build_detector, build_model, detector_config, preset_config

PHOTOS = [RACCOON / "images" / f"raccoon-{i}.jpg" for i in (1, 2, 3)]


def tiny_rpn(spread: bool = False) -> torch.nn.Module:
    """The tiny preset's RPN; ``spread``: its head scaled so that the objectness spreads
    (untrained, every score is about 0.5 and a comparison would mostly match near-ties)."""
    torch.manual_seed(0)
    model = build_model(preset_config("tiny")).eval()
    if spread:
        with torch.no_grad():
            torch.nn.init.normal_(model.rpn.head.conv.weight, std=0.1)
            for layer in model.rpn.head.cls_logits:
                torch.nn.init.normal_(layer.weight, std=3.0)
    return model


def rpn_checkpoint(path: Path, *, spread: bool = False) -> Path:
    spec = ModelSpec(RPN, preset_config("tiny"), ("raccoon",))
    return save_model(path, tiny_rpn(spread), spec, input_size=(128, 192))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------- what is refused, up front


def test_export_refuses_to_write_over_its_checkpoint(tmp_path, monkeypatch, capsys):
    """Was: the ONNX file written over the trained model. The same path, another spelling of
    it, a symbolic and a hard link to it named .onnx: each refused in one line, the checkpoint
    unchanged; a name not ending in .onnx is refused as such, nothing written."""
    checkpoint = rpn_checkpoint(tmp_path / "checkpoint.safetensors")
    before = checkpoint.read_bytes()
    (tmp_path / "link.onnx").symlink_to(checkpoint)
    os.link(checkpoint, tmp_path / "hard.onnx")
    monkeypatch.chdir(tmp_path)
    outs = [checkpoint, "checkpoint.safetensors", "./sub/../checkpoint.safetensors"]
    for out in [*outs, "link.onnx", tmp_path / "hard.onnx"]:
        argv = ["export", "--checkpoint", "checkpoint.safetensors", "--out", str(out)]
        assert main(argv) == 2
        err = one_line_error(capsys)
        assert f"{Path(out)}: is the checkpoint checkpoint.safetensors: the export would" in err
        assert "write over the trained model; give --out (out=) a new NAME.onnx" in err
    assert checkpoint.read_bytes() == before
    assert main(["export", "--checkpoint", str(checkpoint), "--out", "model.bin"]) == 2
    assert "model.bin: not an ONNX file name: name the file to write NAME.onnx" in (
        one_line_error(capsys)
    )
    assert not (tmp_path / "model.bin").exists()


def test_a_missing_onnxscript_is_one_line_before_the_model_is_loaded(tmp_path, monkeypatch, capsys):
    """torch.onnx's exporter needs onnxscript: was a traceback after loading and tracing."""
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript: ImportError
    missing = tmp_path / "none.safetensors"  # not read: the check comes first
    argv = ["export", "--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")]
    assert main(argv) == 2
    assert one_line_error(capsys) == (
        'rpnkit export: error: the export needs onnxscript: pip install -e ".[export]"\n'
    )


def test_settings_of_the_other_kind_of_model_are_refused(tmp_path, capsys):
    rpn = tiny_rpn()
    detector = build_detector(detector_config(preset_config("tiny"), 2)).eval()
    with pytest.raises(ValueError, match=r"^--top \(top=\) sets an RPN's proposals per image"):
        export_configs(detector, top=10)
    with pytest.raises(ValueError, match=r"^--score and --max-detections .* set a Faster R-CNN"):
        export_configs(rpn, score_threshold=0.3)
    with pytest.raises(ValueError, match=r"^--score and --max-detections"):
        export_configs(rpn, max_detections=5)
    own = rpn.rpn.config.test_proposals
    assert export_configs(rpn, top=50)["proposal_config"].post_nms_top_n == 50
    raised = export_configs(rpn, top=2000)["proposal_config"]  # as propose --top 2000
    assert (raised.post_nms_top_n, raised.pre_nms_top_n) == (2000, max(2000, own.pre_nms_top_n))
    head = export_configs(detector, score_threshold=0.5, max_detections=7)["head_config"]
    assert (head.score_threshold, head.detections_per_image) == (0.5, 7)
    assert detector.roi_heads.config.score_threshold == 0.05  # the model is left as it is
    checkpoint = rpn_checkpoint(tmp_path / "rpn.safetensors")
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx")]
    assert main([*argv, "--score", "0.3"]) == 2  # before the export
    assert "--score and --max-detections (score_threshold=, max_detections=)" in (
        one_line_error(capsys)
    )
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- writing the file


def test_the_onnx_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """The file goes to a hidden temporary beside it, renamed when whole: a failed save
    leaves an earlier file as it was and no part; a finished one replaces it."""
    from rpnkit.export import exporters

    model = ExportableModel(tiny_rpn())
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    written = []

    def failing_save(path, external_data):
        written.append(Path(path))
        Path(path).write_bytes(b"half a gra")
        raise OSError(28, "No space left on device")

    onnx_model = SimpleNamespace(opset_imports={"": 18}, metadata_props={}, doc_string=None)
    program = SimpleNamespace(model=onnx_model, save=failing_save)
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: program)
    monkeypatch.setattr(exporters, "name_dynamic_dims", lambda model: None)
    with pytest.raises(OSError, match="No space left"):
        save_onnx(model, out, program=object())
    assert out.read_bytes() == b"an earlier export"
    assert written[0].parent == tmp_path and written[0].name.startswith(".model.onnx.")
    assert written[0].suffix == ".tmp"
    assert sorted(tmp_path.iterdir()) == [out]  # the part removed
    program.save = lambda path, external_data: Path(path).write_bytes(b"the new export")
    assert save_onnx(model, out, program=object()) == out
    assert out.read_bytes() == b"the new export" and sorted(tmp_path.iterdir()) == [out]
    assert json.loads(onnx_model.metadata_props["rpnkit.proposals_per_image"]) == 300
    assert "proposals (batch, 300, 4) float32 xyxy" in onnx_model.doc_string


# ---------------------------------------------------------------- an ONNX file as a checkpoint


def tiny_onnx_model() -> onnx.ModelProto:
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    out = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [value], [out]
    )
    return onnx.helper.make_model(graph, producer_name="rpnkit")


def test_an_onnx_file_given_as_a_checkpoint_says_what_it_is(tmp_path, capsys):
    """Was: 'not a readable rpnkit checkpoint (SafetensorError: header too large)'. An ONNX
    model named .onnx or not (its bytes say so); a checkpoint named .onnx still loads."""
    said = (
        "an ONNX model (what rpnkit export writes), not an rpnkit checkpoint: run it in ONNX "
        "Runtime (docs/deploy.md), or give the .safetensors checkpoint it was exported from"
    )
    for name in ("model.onnx", "model.bin"):
        path = tmp_path / name
        onnx.save(tiny_onnx_model(), str(path))
        with pytest.raises(ValueError) as raised:
            rpnkit.load(path, "cpu")
        assert str(raised.value) == f"{path}: {said}"
        assert main(["detect", str(PHOTOS[0]), "--checkpoint", str(path)]) == 2
        assert one_line_error(capsys) == f"rpnkit detect: error: {path}: {said}\n"
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a readable rpnkit checkpoint"):
        rpnkit.load(junk, "cpu")
    named_onnx = shutil.copy(rpn_checkpoint(tmp_path / "rpn.safetensors"), tmp_path / "rpn.onnx")
    assert load_model(named_onnx)[1].kind == RPN


# ---------------------------------------------------------------- --verify


def rows(*found) -> Rows:
    """Rows of (box, score, label) tuples."""
    boxes, scores, labels = zip(*found)
    return Rows(
        torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), torch.tensor(labels)
    )


def test_rows_are_matched_by_box_and_label_ties_and_cuts_excused():
    """By hand, a detector at score threshold 0.3, NMS 0.5, D = 4. PyTorch: A (0.9), B (0.8,
    label 2), C (0.7), D (0.3001, at the threshold). ONNX Runtime: A and B in another order,
    C' in place of C (C moved down by a pixel, IoU 0.82 > NMS's 0.5, a score within 1e-5: a
    tie NMS broke the other way), no D (it may pass on one side only). Then B under another
    label; A moved by 3 px (IoU 0.54, the same score) on top of C's tie: one tie is excused
    in 4 rows (a quarter), so the other is a failure; a score 0.05 off."""
    a, b, c, d = [0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [40, 40, 50, 50]
    c_moved, a_moved = [0, 21, 10, 31], [0, 3, 10, 13]
    settings = {"score_threshold": 0.3, "nms_threshold": 0.5, "width": 4}
    ref = rows((a, 0.9, 1), (b, 0.8, 2), (c, 0.7, 1), (d, 0.3001, 1))

    def compared(got):
        found = Verification(Path("m.onnx"), Path("c"), "detections", 1e-3, 0.99)
        compare("x.jpg", got, ref, settings, found)
        return found

    found = compared(rows((b, 0.8, 2), (a, 0.900001, 1), (c_moved, 0.70001, 1)))
    assert (found.paired, found.near_ties, found.at_cut, found.count_mismatches) == (2, 1, 1, 1)
    assert found.ok and abs(found.score_difference - 1e-6) < 1e-7
    assert "4 count and" not in found.line() and "1 near-tie swaps" in found.line()
    found = compared(rows((b, 0.8, 3), (a, 0.9, 1), (c_moved, 0.7, 1)))
    assert not found.ok and found.label_mismatches == 1
    assert found.problems == ["x.jpg: row 1's label differs"]
    found = compared(rows((b, 0.8, 2), (a_moved, 0.9, 1), (c_moved, 0.7, 1)))
    assert not found.ok and found.near_ties == 1
    assert found.problems == [  # A took the one tie excused (rows best first), C is left
        "x.jpg: PyTorch's row 2 (score 0.7000, box [0.0, 20.0, 10.0, 30.0]) has no counterpart "
        "(closest: IoU 0.82)",
        "x.jpg: ONNX Runtime's row 2 (score 0.7000, box [0.0, 21.0, 10.0, 31.0]) has no "
        "counterpart (closest: IoU 0.82)",
    ]
    found = compared(rows((a, 0.95, 1), (b, 0.8, 2), (c, 0.7, 1)))
    assert found.problems == ["x.jpg: row 0 differs by 0.05 in score (its box by 0 px)"]


def export_cli(argv: list[str]) -> tuple[int, str]:
    """``rpnkit export`` with ``argv``: its exit code and standard output."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", *argv])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def detector_export(detector_checkpoint, tmp_path_factory) -> tuple[Path, str]:
    """conftest's tiny raccoon detector exported at --score 0.25 --max-detections 10 and
    verified on three raccoon photographs: (the .onnx path, what export printed)."""
    out = tmp_path_factory.mktemp("verify") / "detector.onnx"
    argv = ["--checkpoint", str(detector_checkpoint), "--out", str(out)]
    argv += ["--score", "0.25", "--max-detections", "10", "--verify", *map(str, PHOTOS)]
    code, printed = export_cli(argv)
    assert code == 0, printed
    return out, printed


def test_verify_matches_rpnkit_detect_at_the_settings_baked_in(detector_export):
    out, printed = detector_export
    wrote, verified = printed.splitlines()
    assert wrote == (
        f"wrote {out} (ONNX opset 18, float32; baked in: scores above 0.25, NMS at IoU 0.5, at "
        "most 10 detections per image); see docs/deploy.md to run it"
    )
    assert verified.startswith("verify detector.onnx: ONNX Runtime ")
    assert "on 3 images at batch 1" in verified and "0 count and 0 label mismatches" in verified
    assert verified.endswith("OK (tolerance: scores 0.001, IoU >= 0.99)")


def test_verify_runs_the_checkpoint_through_rpnkits_runtime(detector_export, detector_checkpoint):
    """The numbers behind the line: rpnkit's detections at --score 0.25 and at most 10, the
    same in ONNX Runtime, some images cut by the limit and none by more than the tolerance."""
    out, _ = detector_export
    found = verify_onnx(out, detector_checkpoint, PHOTOS)
    assert found.ok and found.images == 3 and found.what == "detections"
    assert found.found == found.expected > 0 and found.count_mismatches == 0
    assert found.score_difference <= 1e-4 and found.lowest_iou >= 0.999
    expected = rpnkit.load(detector_checkpoint, "cpu").detect(
        PHOTOS, score_threshold=0.25, max_detections=10, batch_size=1
    )
    assert sum(len(r.scores) for r in expected) == found.expected
    assert all(len(r.scores) <= 10 and (r.scores >= 0.25).all() for r in expected)


def tampered(path: Path, to: Path, **recorded) -> Path:
    """A copy of the ONNX file ``path`` whose metadata records other settings."""
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key.removeprefix("rpnkit.") in recorded:
            prop.value = json.dumps(recorded[prop.key.removeprefix("rpnkit.")])
    onnx.save(model, str(to))
    return to


def test_verify_fails_on_a_file_that_computes_other_than_it_says(
    detector_export, detector_checkpoint, tmp_path, monkeypatch, capsys
):
    """A file recording a 0.05 threshold and 100 detections that keeps 10 above 0.25: the
    detections PyTorch finds at 0.05 are missing; exit 2 in one line. A checkpoint whose
    raccoon logit is 0.1 higher: the scores (about 0.5) differ by about 0.025."""
    out, _ = detector_export
    wrong = tampered(out, tmp_path / "wrong.onnx", score_threshold=0.05, detections_per_image=100)
    found = verify_onnx(wrong, detector_checkpoint, PHOTOS)
    assert not found.ok and found.count_mismatches == 3 and found.expected > found.found
    assert "has no counterpart" in found.failure() and "\n" not in found.failure()
    network, spec = load_model(detector_checkpoint)
    with torch.no_grad():
        network.roi_heads.box_head.cls_score.bias[1] += 0.1
    other = save_model(tmp_path / "other.safetensors", network, spec, input_size=(160, 240))
    found = verify_onnx(out, other, PHOTOS)
    assert not found.ok and found.score_difference > 1e-3
    assert "differs by" in found.failure() and "in score" in found.failure()
    # the command line: the line, then exit 2 with one line (the file is kept)
    import rpnkit.export

    monkeypatch.setattr(
        rpnkit.export, "export_onnx", lambda checkpoint, out, **_: shutil.copy(wrong, out)
    )
    target = tmp_path / "exported.onnx"
    argv = [
        "--checkpoint",
        str(detector_checkpoint),
        "--out",
        str(target),
        "--verify",
        str(PHOTOS[0]),
    ]
    code, printed = export_cli(argv)
    assert code == 2 and "FAILED (tolerance: scores 0.001" in printed.splitlines()[-1]
    err = one_line_error(capsys)
    assert err.startswith(f"rpnkit export: error: {target}: differs from {detector_checkpoint}")
    assert target.exists()


def test_verify_of_an_rpn_at_top_k(tmp_path):
    """An RPN exported with --top 50 and verified on a folder: its best 50 proposals of each
    photograph, as rpnkit propose --top 50 gives them."""
    checkpoint = rpn_checkpoint(tmp_path / "rpn.safetensors", spread=True)
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in PHOTOS[:2]:
        shutil.copy(photo, folder)
    out = tmp_path / "rpn.onnx"
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--top", "50"]
    code, printed = export_cli([*argv, "--verify", str(folder)])
    assert code == 0, printed
    assert "at most 50 proposals per image" in printed
    verified = printed.splitlines()[-1]
    assert "ONNX Runtime 100 proposals, PyTorch 100, on 2 images" in verified
    assert verified.endswith("OK (tolerance: scores 0.001, IoU >= 0.99)")
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["rpnkit.proposals_per_image"]) == 50


def test_verify_refuses_missing_images_before_exporting(tmp_path, capsys):
    checkpoint = rpn_checkpoint(tmp_path / "rpn.safetensors")
    out = tmp_path / "rpn.onnx"
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--verify", str(tmp_path / "no")]
    assert export_cli(argv)[0] == 2
    assert f"--verify {tmp_path}/no: not found (give a folder or image files)" in (
        one_line_error(capsys)
    )
    assert not out.exists()


# ---------------------------------------------------------------- docs/deploy.md


def test_the_deploy_guide_documents_every_option_and_metadata_key():
    """docs/deploy.md names each option of rpnkit export, each metadata key an export
    records (an RPN's and a detector's), the extra that installs the exporter and the import
    that reaches rpnkit.export."""
    import argparse

    from rpnkit.cli import export as export_command
    from rpnkit.export.exporters import graph_metadata

    guide = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    parser = argparse.ArgumentParser()
    export_command.add_parser(parser.add_subparsers())
    (command,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = {o for a in command.choices["export"]._actions for o in a.option_strings}
    assert {"--score", "--max-detections", "--top", "--verify"} <= options
    assert [o for o in sorted(options - {"-h", "--help"}) if f"`{o}" not in guide] == []
    detector = build_detector(detector_config(preset_config("tiny"), 2)).eval()
    keys = {"rpnkit.kind", "rpnkit.preset", "rpnkit.class_names", "rpnkit.input_size"}
    for network in (tiny_rpn(), detector):
        keys |= set(graph_metadata(ExportableModel(network)))
    assert [k for k in sorted(keys) if f"`{k}`" not in guide] == []
    assert 'pip install -e ".[export]"' in guide and ".[test]" not in guide
    assert "import rpnkit.export" in guide
