"""``rpnkit export``'s checks: an --out that is the checkpoint (or not .onnx) is refused
before anything is written; the ONNX file is written whole or not at all; a missing
onnxscript is one line before the model is loaded; an ONNX file given as a checkpoint says
what it is; the settings that the graph bakes in (--score, --max-detections, --top) are
refused for the other kind of model.
"""

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
from rpnkit.export import ExportableModel, export_configs, save_onnx
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
