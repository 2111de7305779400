"""Export: the ONNX graph, run by ONNX Runtime (CPU), and the torch.export program give rpnkit's
own outputs on the same inputs, for an RPN and a Faster R-CNN on the tiny preset and OLN's
class-agnostic detector on tiny-oln-rcnn, at batch sizes and image sizes other than the one
traced; the Cascade RPN (tiny-cascade), alone and as a Faster R-CNN's first stage; the fp16
graph; the command line. Three of the exports are made at other settings than the model's
(``EXPORT_SETTINGS``: ``rpnkit export --score / --max-detections``, ``export_configs(top=)``),
and rpnkit's outputs are taken at the same settings (``FasterRCNN.forward(proposal_config=,
head_config=)``): the graph bakes them in.

Tolerances: the same boxes at IoU >= 0.99 and the same scores to 1e-4. ONNX Runtime computes
the same float32 function with other kernels (convolutions accumulate in another order, its
optimiser fuses operations), which moves logits by about 1e-6 relative: measured here, scores
differ by at most 6e-8 and boxes by at most 3e-5 px. Scores lie in [0, 1], so 1e-4 leaves a
margin of over 1000x. Box coordinates scale with the anchor (up to 208 px on the tiny preset)
and exp() of the deltas, so the box check is scale-free: IoU >= 0.99. Rows are matched in
order but may swap with a neighbour whose score is within the tolerance: two near-equal
scores can rank either way in two runtimes.
"""

import json
import shutil

import onnx
import onnxruntime as ort
import pytest
import torch

from rpnkit.cli import main
from rpnkit.data import SyntheticShapes
from rpnkit.engine.checkpoint import DETECTOR, ModelSpec, save_model
from rpnkit.export import (
    DETECTOR_OUTPUT_NAMES,
    INPUT_NAMES,
    RPN_OUTPUT_NAMES,
    ExportableModel,
    export_configs,
    export_program,
    save_onnx,
)
from rpnkit.modeling.boxes import box_iou
from rpnkit.modeling.presets import build_detector, build_model, detector_config, preset_config
from rpnkit.modeling.sizes import padded_size

SCORE_TOLERANCE = 1e-4
MIN_IOU = 0.99
CLASSES = ("circle", "square", "triangle", "diamond")
# oln: OLN's class-agnostic detector (tiny-oln-rcnn); cascade: the Cascade RPN (tiny-cascade),
# cascade-rcnn: a Faster R-CNN on it
KINDS = ["rpn", "detector", "oln", "cascade", "cascade-rcnn"]
# exports at other settings than the model's: a higher score threshold and fewer detections
# (D 40: a batch of CROPS[:3] keeps 40, 40 and 12, cut by D and by the threshold); a lower
# threshold and more detections than the model's 100 (its NMS candidates and RoIs raised as
# rpnkit detect raises them); fewer proposals than the RPN's 300
EXPORT_SETTINGS = {
    "detector": {"score_threshold": 0.197, "max_detections": 40},
    "cascade-rcnn": {"score_threshold": 0.02, "max_detections": 150},
    "cascade": {"top": 100},
}
CLI_OPTIONS = {"score_threshold": "--score", "max_detections": "--max-detections", "top": "--top"}


# ---------------------------------------------------------------- models, images and sessions


def tiny_rpn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(preset_config("tiny")).eval()


def tiny_detector(num_classes: int = len(CLASSES), *, raise_scores: bool = True):
    """The tiny preset's Faster R-CNN; ``raise_scores`` scales the class layer (as conftest's
    ``tiny_detector_pair``) so that many detections pass the 0.05 score threshold."""
    torch.manual_seed(0)
    model = build_detector(detector_config(preset_config("tiny"), num_classes)).eval()
    if raise_scores:
        with torch.no_grad():
            torch.nn.init.normal_(model.roi_heads.box_head.cls_score.weight, std=0.3)
    return model


def tiny_oln_detector():
    """tiny-oln-rcnn's Faster R-CNN (class-agnostic, boxes scored sqrt(RPN x IoU)), its RPN's
    head and the IoU layer scaled so that the combined scores spread (0.45-0.56 instead of
    0.497-0.499): untrained, nearly every score is sqrt(0.5 x 0.5) and the comparison would
    mostly match near-ties."""
    torch.manual_seed(0)
    model = build_detector(detector_config(preset_config("tiny-oln-rcnn"), len(CLASSES))).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.first_stage.rpn.head.conv.weight, std=0.1)
        for layer in model.first_stage.rpn.head.cls_logits:
            torch.nn.init.normal_(layer.weight, std=3.0)
        torch.nn.init.normal_(model.roi_heads.box_head.iou_score.weight, std=3.0)
    return model


def spread_cascade(rpn: torch.nn.Module) -> None:
    """A Cascade RPN's layers scaled so that stage 1 moves its boxes (its offsets are far from
    the anchors' own) and the objectness spreads (0.54-0.76 instead of 0.4999-0.5001):
    untrained, every score is about 0.5 and the comparison would mostly match near-ties."""
    head = rpn.head
    with torch.no_grad():
        for layer, std in (
            (head.stage1_conv, 0.1),
            (head.stage1_deltas, 0.5),
            (head.stage2_conv, 0.1),
            (head.stage2_logits, 3.0),
        ):
            torch.nn.init.normal_(layer.weight, std=std)


def tiny_cascade():
    torch.manual_seed(0)
    model = build_model(preset_config("tiny-cascade")).eval()
    spread_cascade(model.rpn)
    return model


def tiny_cascade_detector():
    torch.manual_seed(0)
    config = detector_config(preset_config("tiny-cascade"), len(CLASSES))
    model = build_detector(config).eval()
    spread_cascade(model.first_stage.rpn)
    with torch.no_grad():
        torch.nn.init.normal_(model.roi_heads.box_head.cls_score.weight, std=0.3)
    return model


def padded_batch(crops: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, h, w) uint8 images -> a (B, 3, H, W) batch padded to multiples of 32, (B, 2) sizes."""
    h, w = padded_size(max(c.shape[1] for c in crops), max(c.shape[2] for c in crops))
    images = torch.zeros(len(crops), 3, h, w, dtype=torch.uint8)
    for i, c in enumerate(crops):
        images[i, :, : c.shape[1], : c.shape[2]] = c
    return images, torch.tensor([c.shape[1:] for c in crops], dtype=torch.int64)


SHAPES = SyntheticShapes(4, seed=5)
CROPS = [  # different sizes, none a multiple of 32 but the first
    SHAPES[0]["image"],
    SHAPES[1]["image"][:, :200, :170],
    SHAPES[2]["image"][:, :90, :250],
    SHAPES[3]["image"][:, :45, :61],
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """kind -> (ExportableModel, ONNX Runtime session, .onnx path, torch.export program or
    None). The detectors are saved as checkpoints and exported through ``rpnkit export`` (the
    command line and ``export_onnx``); the RPNs through ``export_program`` and ``save_onnx``,
    which keeps their programs for the torch.export test."""
    folder = tmp_path_factory.mktemp("export")
    found = {}
    for kind, preset, build in (
        ("detector", "tiny", tiny_detector),
        ("oln", "tiny-oln-rcnn", tiny_oln_detector),
        ("cascade-rcnn", "tiny-cascade", tiny_cascade_detector),
    ):
        spec = ModelSpec(DETECTOR, detector_config(preset_config(preset), len(CLASSES)), CLASSES)
        size = {"input_size": (640, 960)} if kind == "oln" else {}  # one records its resize
        checkpoint = save_model(folder / f"{kind}.safetensors", build(), spec, **size)
        out = folder / f"{kind}.onnx"
        argv = ["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out)]
        settings = EXPORT_SETTINGS.get(kind, {})
        argv += [str(x) for key, value in settings.items() for x in (CLI_OPTIONS[key], value)]
        assert main(argv) == 0
        found[kind] = (exportable(build(), settings), session(out), out, None)
    for kind, build in (("rpn", tiny_rpn), ("cascade", tiny_cascade)):
        rpn = exportable(build(), EXPORT_SETTINGS.get(kind, {}))
        program = export_program(rpn)
        out = save_onnx(rpn, folder / f"{kind}.onnx", program=program)
        found[kind] = (rpn, session(out), out, program)
    return found


def exportable(network: torch.nn.Module, settings: dict) -> ExportableModel:
    """``network`` wrapped for export at ``settings`` (``export_configs``'s keywords)."""
    return ExportableModel(network, **export_configs(network, **settings))


def session(path) -> "ort.InferenceSession":
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(sess, images: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
    feeds = {"images": images.numpy(), "image_sizes": sizes.numpy()}
    return [torch.from_numpy(out) for out in sess.run(None, feeds)]


# ---------------------------------------------------------------- comparing outputs


def assert_same_outputs(got, ref) -> None:
    """``got`` and ``ref``: (boxes, scores, counts) or (boxes, scores, labels, counts)."""
    counts_got, counts_ref = got[-1], ref[-1]
    assert counts_got.dtype == torch.int64 and torch.equal(counts_got, counts_ref)
    labels = len(got) == 4
    for i, n in enumerate(counts_ref.tolist()):
        rows = [t[i, :n] for t in got[:-1]], [t[i, :n] for t in ref[:-1]]
        assert_same_rows(*rows, labels=labels)
        for t in got[:-1]:  # the padding is zeros
            assert not t[i, n:].any()


def assert_same_rows(got, ref, *, labels: bool) -> None:
    """The same rows in the same order, up to neighbours whose scores are within the tolerance
    (and, at the end of the list, a last row tied within the tolerance with one left out)."""
    boxes, scores = got[0], got[1]
    ref_boxes, ref_scores = ref[0], ref[1]
    n = len(ref_scores)
    iou = box_iou(boxes, ref_boxes)  # (n, n)
    alike = (iou >= MIN_IOU) & ((scores[:, None] - ref_scores[None, :]).abs() <= SCORE_TOLERANCE)
    if labels:
        alike &= got[2][:, None] == ref[2][None, :]
    if n and bool(alike.diagonal().all()):
        return
    # near-equal scores may rank either way: match each row to a free alike one
    free = torch.ones(n, dtype=torch.bool)
    for i in range(n):
        options = (alike[i] & free).nonzero().flatten()
        if len(options) == 0:
            tied_at_end = (scores[i] - ref_scores[-1]).abs() <= SCORE_TOLERANCE
            assert tied_at_end, f"row {i} ({boxes[i].tolist()}, {float(scores[i])}) not found"
            continue
        free[options[0]] = False


# ---------------------------------------------------------------- ONNX Runtime against PyTorch


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [1, 3], ids=["batch1", "batch3"])
def test_onnx_runtime_gives_rpnkits_outputs(exported, kind, batch):
    model, sess, *_ = exported[kind]
    images, sizes = padded_batch(CROPS[:batch])
    got = run(sess, images, sizes)
    ref = model.reference(images, sizes)
    assert (got[-1] > 0).all()
    assert_same_outputs(got, ref)


def test_the_oln_graph_is_class_agnostic(exported):
    """OLN's detector in ONNX Runtime: every box is label 1, the kept boxes overlap each other
    at IoU <= 0.7 whatever the proposals' levels (one NMS over all boxes, not per class), and
    the scores are geometric means of two probabilities, in (0, 1)."""
    model, sess, *_ = exported["oln"]
    config = model.model.roi_heads.config
    assert config.score_mode == "localization"
    images, sizes = padded_batch(CROPS[:2])
    boxes, scores, labels, counts = run(sess, images, sizes)
    for i, n in enumerate(counts.tolist()):
        assert n > 10 and (labels[i, :n] == 1).all()
        assert ((scores[i, :n] > 0) & (scores[i, :n] < 1)).all()
        iou = box_iou(boxes[i, :n], boxes[i, :n]).fill_diagonal_(0)
        assert iou.max() <= config.nms_threshold + 1e-6


def test_the_graph_has_the_documented_inputs_and_outputs(exported):
    for kind in KINDS:
        model, sess, path, _ = exported[kind]
        names = DETECTOR_OUTPUT_NAMES if model.is_detector else RPN_OUTPUT_NAMES
        assert [i.name for i in sess.get_inputs()] == list(INPUT_NAMES)
        assert [i.type for i in sess.get_inputs()] == ["tensor(uint8)", "tensor(int64)"]
        # the dynamic sizes are named, not torch.export's symbols (s34, s14...)
        assert [i.shape for i in sess.get_inputs()] == [
            ["batch", 3, "height", "width"],
            ["batch", 2],
        ]
        assert [o.name for o in sess.get_outputs()] == list(names)
        images, sizes = padded_batch(CROPS[:2])
        outputs = run(sess, images, sizes)
        width = model.settings()[
            "detections_per_image" if model.is_detector else "proposals_per_image"
        ]
        assert [o.shape[:2] for o in sess.get_outputs()][:2] == [["batch", width]] * 2
        assert outputs[0].shape == (2, width, 4) and outputs[0].dtype == torch.float32
        assert outputs[1].shape == (2, width) and outputs[-1].shape == (2,)
        graph = onnx.load(str(path))
        ops = {node.op_type for node in graph.graph.node}
        assert "NonMaxSuppression" in ops and "BatchNormalization" not in ops  # folded
        assert ("RoiAlign" in ops) == model.is_detector
        # the Cascade RPN's adaptive convolution: bilinear sampling (deform_conv2d has no op)
        assert ("GridSample" in ops) == kind.startswith("cascade")
        metadata = {p.key: p.value for p in graph.metadata_props}
        assert {k: json.loads(metadata[f"rpnkit.{k}"]) for k in model.settings()} == (
            model.settings()
        )
        assert "images (batch, 3, height, width) uint8 RGB" in graph.doc_string
    # rpnkit export records what the file is, and the settings baked in
    graph = onnx.load(str(exported["detector"][2]))
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert metadata["rpnkit.kind"] == "faster-rcnn" and metadata["rpnkit.preset"] == "tiny"
    assert json.loads(metadata["rpnkit.class_names"]) == list(CLASSES)
    assert json.loads(metadata["rpnkit.input_size"]) == [800, 1333]  # recorded none: defaults
    baked = {k: json.loads(metadata[f"rpnkit.{k}"]) for k in ("score_threshold", "nms_threshold")}
    assert baked == {"score_threshold": 0.197, "nms_threshold": 0.5}  # --score 0.197
    assert json.loads(metadata["rpnkit.detections_per_image"]) == 40  # --max-detections 40
    assert json.loads(metadata["rpnkit.pixel_mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(metadata["rpnkit.pixel_std"]) == [0.229, 0.224, 0.225]
    assert json.loads(metadata["rpnkit.size_divisible"]) == 32
    assert metadata["rpnkit.version"] and metadata["rpnkit.precision"] == "fp32"
    assert "scoring above 0.197 after NMS at IoU 0.5 within each class, at most 40" in (
        graph.doc_string
    )
    metadata = {p.key: p.value for p in onnx.load(str(exported["oln"][2])).metadata_props}
    assert json.loads(metadata["rpnkit.input_size"]) == [640, 960]  # the training resize
    assert json.loads(metadata["rpnkit.detections_per_image"]) == 1500  # the model's own
    assert json.loads(metadata["rpnkit.proposals_per_image"]) == 300
    cascade = exported["cascade-rcnn"][0]  # --max-detections 150: its NMS candidates raised
    assert cascade.head_config.detections_per_image == 150
    assert cascade.head_config.nms_candidates == 5000  # max(5000, 5 x 150)
    assert exported["cascade"][0].proposals_per_image == 100  # top=100


@pytest.mark.parametrize("kind", ["detector", "cascade"])
def test_one_export_runs_other_batches_and_image_sizes(exported, kind):
    """The graph was traced at batch 2, 90x121: other batches, a 32x32 image (one position
    on the stride-32 level, fewer anchors than pre_nms_top_n), tall and wide images, and
    images whose sides are not multiples of 32, given unpadded (down to 7x5)."""
    model, sess, *_ = exported[kind]
    cases = [
        [SHAPES[0]["image"][:, :32, :32]],
        [SHAPES[1]["image"][:, :256, :40]] * 2,
        [c[:, :60, :] for c in CROPS],  # 4 images, up to 60x256
    ]
    for crops in cases:
        images, sizes = padded_batch(crops)
        assert_same_outputs(run(sess, images, sizes), model.reference(images, sizes))
    # any size: the graph pads to multiples of 32 itself, as rpnkit's batches are padded
    for crop in (CROPS[3], SHAPES[1]["image"][:, :33, :250], SHAPES[2]["image"][:, :7, :5]):
        images, sizes = crop[None], torch.tensor([crop.shape[1:]])
        padded, _ = padded_batch([crop])
        assert padded.shape[-2:] != images.shape[-2:]
        assert_same_outputs(run(sess, images, sizes), model.reference(padded, sizes))


def test_no_detection_is_zero_counts_and_zero_padding(tmp_path):
    """An untrained detector over 90 classes: every class score is about 1/91, below 0.05, so
    no image has a detection, in ONNX Runtime as in PyTorch."""
    model = ExportableModel(tiny_detector(90, raise_scores=False))
    sess = session(save_onnx(model, tmp_path / "none.onnx"))
    blank = torch.zeros(3, 64, 64, dtype=torch.uint8)
    images, sizes = padded_batch([CROPS[0], blank])
    got, ref = run(sess, images, sizes), model.reference(images, sizes)
    assert got[-1].tolist() == ref[-1].tolist() == [0, 0]
    assert not any(t.any() for t in got[:-1])


# ---------------------------------------------------------------- fp16 and torch.export


def test_fp16_graph_has_half_weights_and_float32_outputs(tmp_path):
    """The fp16 graph (for a GPU) runs on ONNX Runtime's CPU too: its best detections are
    rpnkit's float32 ones, to half precision's tolerance (IoU 0.9, scores 1e-2)."""
    reference = ExportableModel(tiny_detector())  # the model's own settings, as the fp16 one
    path = save_onnx(ExportableModel(tiny_detector(), fp16=True), tmp_path / "fp16.onnx")
    graph = onnx.load(str(path)).graph
    convs = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    weights = {i.name: i.data_type for i in graph.initializer if i.name in convs}
    assert weights and set(weights.values()) == {onnx.TensorProto.FLOAT16}
    images, sizes = padded_batch(CROPS[:2])
    got, ref = run(session(path), images, sizes), reference.reference(images, sizes)
    assert got[0].dtype == got[1].dtype == torch.float32
    for i in range(2):
        top = min(10, int(ref[-1][i]))
        iou = box_iou(ref[0][i, :top], got[0][i, :top]).max(dim=1).values
        assert (iou >= 0.9).all()
        assert torch.allclose(got[1][i, :top], ref[1][i, :top], atol=1e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_torch_export_program_has_a_dynamic_batch_and_rpnkits_outputs(exported, kind):
    model, _, _, program = exported[kind]
    program = program or export_program(model)
    inputs = program.graph_signature.user_inputs
    shapes = {n.name: n.meta["val"].shape for n in program.graph.nodes if n.name in inputs}
    symbolic = [isinstance(d, torch.SymInt) for d in (*shapes["images"], *shapes["image_sizes"])]
    assert symbolic == [True, False, True, True, True, False]  # batch, height, width
    module = program.module()
    for crops in (CROPS[:1], CROPS[:3]):  # traced at batch 2
        images, sizes = padded_batch(crops)
        with torch.no_grad():
            got = module(images, sizes)
        assert_same_outputs(list(got), model.reference(images, sizes))
    crop = CROPS[3]  # 45x61, unpadded
    with torch.no_grad():
        got = module(crop[None], torch.tensor([crop.shape[1:]]))
    assert_same_outputs(list(got), model.reference(*padded_batch([crop])))


# ---------------------------------------------------------------- the command line and the docs


def test_export_errors_are_one_line(exported, tmp_path, capsys):
    missing = ["export", "--checkpoint", str(tmp_path / "none.safetensors")]
    assert main([*missing, "--out", str(tmp_path / "m.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main([*missing, "--opset", "0"]) == 2
    assert "argument --opset: must be an integer >= 1" in capsys.readouterr().err
    checkpoint = str(exported["detector"][2].with_suffix(".safetensors"))  # the fixture's
    assert main(["export", "--checkpoint", checkpoint, "--opset", "17"]) == 2
    assert "needs opset 18 or later" in capsys.readouterr().err
    made = tmp_path / "no" / "m.onnx"
    assert main([*missing, "--out", str(made)]) == 2  # the checkpoint: not found
    assert made.parent.is_dir()  # its folder made first, as propose, detect and eval do
    capsys.readouterr()
    assert main(["export", "--checkpoint", checkpoint, "--out", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder; give the .onnx file to write" in capsys.readouterr().err
    assert main(["export", "--checkpoint", checkpoint, "--opset", "99"]) == 2
    assert "opset 99: onnx " in capsys.readouterr().err  # before anything is exported


def test_an_opset_the_exporter_did_not_reach_is_refused(tmp_path, monkeypatch):
    # torch's exporter converts from its own opset and, when it cannot, keeps that one
    from types import SimpleNamespace

    from rpnkit.export.exporters import save_onnx

    kept = SimpleNamespace(model=SimpleNamespace(opset_imports={"": 18}, metadata_props={}))
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: kept)
    model = SimpleNamespace(output_names=("boxes",))
    with pytest.raises(ValueError, match=r"opset 19: .* could not convert .* stays at opset 18"):
        save_onnx(model, tmp_path / "m.onnx", opset=19, program=object())
    assert not (tmp_path / "m.onnx").exists()


def test_the_deploy_guide_snippet_runs(exported, tmp_path):
    """docs/deploy.md's ONNX Runtime snippet, as written, on a detector and a photo."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    guide = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), flags=re.S)
    snippet = next(b for b in blocks if "onnxruntime" in b)
    shutil.copy(exported["detector"][2], tmp_path / "model.onnx")
    Image.fromarray(SHAPES[2]["image"].permute(1, 2, 0).numpy()).save(tmp_path / "photo.jpg")
    (tmp_path / "snippet.py").write_text(snippet)
    done = subprocess.run(
        [sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"^(\d+) detections", done.stdout, flags=re.M)
    assert found and int(found.group(1)) > 0, done.stdout
