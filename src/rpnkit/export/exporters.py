"""``torch.export`` and ONNX export of an ``ExportableModel``, with a dynamic batch and dynamic
image height and width (any size: the graph pads to multiples of 32 itself), and
``export_onnx``: a checkpoint to an ONNX file.

The ONNX file is made from the ``torch.export`` program (``torch.onnx.export`` of an
``ExportedProgram``), so the two exports are one graph: what the program computes, the ONNX
graph computes, with the translations of ``graph_ops.onnx_translations``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE
from ..engine.checkpoint import load_model_and_size
from ..engine.paths import output_file, temporary_beside
from ..modeling.sizes import SIZE_DIVISIBLE
from .model import INPUT_NAMES, ExportableModel, export_configs

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the graph's translations are written in opset 18 (RoiAlign's modes need 16)
MAX_BATCH = 1024


def dynamic_shapes() -> dict[str, dict[int, object]]:
    """A dynamic batch (1 to ``MAX_BATCH``) and a dynamic height and width, for
    ``torch.export.export``'s ``dynamic_shapes``. The sides are left to torch.export
    (``Dim.DYNAMIC``: from 2 px up, as it finds them): a named ``Dim`` for them trips over the
    graph's own padding to multiples of 32 in torch's check of the derived sizes."""
    Dim = torch.export.Dim
    if not hasattr(Dim, "DYNAMIC"):
        raise RuntimeError(f"the export needs torch 2.6 or later (this is {torch.__version__})")
    batch = Dim("batch", min=1, max=MAX_BATCH)
    return {"images": {0: batch, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}, "image_sizes": {0: batch}}


def example_inputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Two blank 90x121 images, sizes 90x121 and 64x96, on the model's device, for tracing:
    neither side a multiple of 32 (the graph's padding is traced) and nothing specialised to
    1 or to height == width."""
    device = next(model.parameters()).device
    images = torch.zeros(2, 3, 90, 121, dtype=torch.uint8, device=device)
    sizes = torch.tensor([[90, 121], [64, 96]], dtype=torch.int64, device=device)
    return images, sizes


def export_program(model: ExportableModel) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the wrapped model with a dynamic batch, height and width.
    Its NMS is the op ``rpnkit::nms_mask`` (rpnkit's own ``nms_keep``), so running the program
    needs ``rpnkit`` imported, which registers it."""
    if not isinstance(model, ExportableModel):
        raise ValueError("export_program takes an ExportableModel: wrap the model first")
    with torch.no_grad():
        return torch.export.export(
            model.eval(), example_inputs(model), dynamic_shapes=dynamic_shapes(), strict=False
        )


def check_target(out: str | Path, opset: int) -> Path:
    """``out`` as a Path, or a one-line ValueError for a missing onnx or onnxscript (torch's
    exporter needs both: said before any model is loaded or traced), an opset rpnkit's graph
    cannot use or the installed onnx does not know, a name not ending in .onnx, a folder
    given as the file, or a file in the place of one of its folders (``output_file``: a
    missing folder is made)."""
    try:
        import onnx
    except ImportError:
        raise ValueError('the export needs onnx: pip install -e ".[export]"') from None
    try:
        import onnxscript  # noqa: F401  torch.onnx's exporter (dynamo=True) writes through it
    except ImportError:
        raise ValueError('the export needs onnxscript: pip install -e ".[export]"') from None
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset}: rpnkit's graph needs opset {MIN_OPSET} or later")
    if opset > (known := onnx.defs.onnx_opset_version()):
        raise ValueError(f"opset {opset}: onnx {onnx.__version__} knows opsets up to {known}")
    out = Path(out)
    if not out.is_dir() and out.suffix.lower() != ".onnx":  # a folder: output_file says so
        raise ValueError(f"{out}: not an ONNX file name: name the file to write NAME.onnx")
    return output_file(out, what=".onnx")  # its folder made, as propose, detect and eval do


def check_not_the_checkpoint(out: str | Path, checkpoint: str | Path) -> None:
    """A one-line ValueError when ``out`` is the file ``checkpoint`` (the same path, or the
    same file through a link): the export would write over the trained model."""
    out, checkpoint = Path(out), Path(checkpoint)
    same = out.resolve() == checkpoint.resolve()
    if not same and out.exists() and checkpoint.exists():
        same = os.path.samefile(out, checkpoint)  # a hard link
    if same:
        raise ValueError(
            f"{out}: is the checkpoint {checkpoint}: the export would write over the trained "
            "model; give --out (out=) a new NAME.onnx"
        )


def rpnkit_version() -> str:
    try:
        return version("rpnkit")
    except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src)
        return "unknown (source tree)"


def graph_metadata(model: ExportableModel) -> dict[str, str]:
    """The ``rpnkit.*`` metadata_props every export records: rpnkit's version, the outputs,
    the precision, the normalisation inside the graph (RGB mean and std of pixel / 255), the
    padding multiple and the settings the graph bakes in (``ExportableModel.settings``)."""
    stage = model.first_stage
    numbers = {
        "pixel_mean": [round(float(v), 6) for v in stage.pixel_mean.flatten()],
        "pixel_std": [round(float(v), 6) for v in stage.pixel_std.flatten()],
        "size_divisible": SIZE_DIVISIBLE,
        **model.settings(),
    }
    return {
        "rpnkit.version": rpnkit_version(),
        "rpnkit.outputs": ",".join(model.output_names),
        "rpnkit.precision": "fp16" if model.dtype == torch.float16 else "fp32",
        **{f"rpnkit.{key}": json.dumps(value) for key, value in numbers.items()},
    }


def describe(model: ExportableModel, metadata: dict[str, str]) -> str:
    """The ONNX model's doc_string: its inputs, outputs and baked-in settings, in words."""
    meta = {k.removeprefix("rpnkit."): v for k, v in metadata.items()}
    if model.is_detector:
        d = meta["detections_per_image"]
        outputs = (
            f"boxes (batch, {d}, 4) float32 xyxy in pixels of the network input, scores (batch, "
            f"{d}) float32, labels (batch, {d}) int64 class ids 1..C (class_names[label - 1]), "
            f"counts (batch,) int64; detections scoring above {meta['score_threshold']} after NMS "
            f"at IoU {meta['nms_threshold']} within each class, at most {d} per image"
        )
    else:
        k = meta["proposals_per_image"]
        outputs = (
            f"proposals (batch, {k}, 4) float32 xyxy in pixels of the network input, scores "
            f"(batch, {k}) float32 objectness, counts (batch,) int64; at most {k} per image "
            f"after NMS at IoU {meta['nms_threshold']}"
        )
    resize = ""
    if "input_size" in meta:
        short, longest = json.loads(meta["input_size"])
        resize = f" resized (shorter side {short}, longer at most {longest}),"
    return (
        f"rpnkit {meta['version']} export. Inputs: images (batch, 3, height, width) uint8 RGB"
        f"{resize} zero-padded at the bottom and right to the batch's size (batch >= 1); "
        "image_sizes (batch, 2) int64, each image's (height, width) before padding. The graph "
        f"pads to multiples of {meta['size_divisible']} and normalises ((pixel / 255 - mean) / "
        f"std, mean {meta['pixel_mean']}, std {meta['pixel_std']}). Outputs: {outputs}. The "
        "first counts[i] rows of image i are valid, best first; the rest are zeros. "
        "metadata_props: rpnkit.*. See rpnkit's docs/deploy.md."
    )


def name_dynamic_dims(onnx_model) -> None:
    """Rename torch.export's symbols of the dynamic sizes (``s34``...) ``batch``, ``height``
    and ``width`` in every shape of ``onnx_model`` (an ``onnx_ir.Model``; intermediate shapes
    are expressions of them)."""
    import onnx_ir as ir

    images = onnx_model.graph.inputs[0].shape  # (batch, 3, height, width)
    sizes = zip((images[0], images[2], images[3]), ("batch", "height", "width"))
    names = {d.value: name for d, name in sizes if isinstance(d, ir.SymbolicDim) and d.value}
    if not names:
        return
    symbol = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    values = [*onnx_model.graph.inputs, *onnx_model.graph.outputs]
    values += [
        v for node in ir.traversal.RecursiveGraphIterator(onnx_model.graph) for v in node.outputs
    ]
    for value in values:
        if value.shape is None:
            continue
        renamed = [
            symbol.sub(lambda m: names[m.group(1)], d.value)
            if isinstance(d, ir.SymbolicDim) and d.value is not None
            else d
            for d in value.shape
        ]
        value.shape = ir.Shape(renamed)


def save_onnx(
    model: ExportableModel,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
    program: torch.export.ExportedProgram | None = None,
) -> Path:
    """Export ``model`` to the ONNX file ``out`` (one file, weights inside), written to a
    hidden temporary file beside it and renamed (a failed export leaves no part, and an
    earlier file as it was). The inputs and outputs are named as ``INPUT_NAMES`` and
    ``model.output_names``, the dynamic sizes ``batch``, ``height`` and ``width``; the
    metadata_props hold ``graph_metadata(model)`` and ``metadata``, the doc_string
    ``describe``'s words. ``program``: ``export_program(model)`` when the caller has it
    already (the ONNX graph is translated from it)."""
    from .graph_ops import onnx_translations

    out = check_target(out, opset)
    program = program or export_program(model)
    with warnings.catch_warnings():
        # both inputs name their first axis "batch": the exporter warns that it keeps one
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints.*")
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(model.output_names),
            custom_translation_table=onnx_translations(),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    written = onnx_program.model.opset_imports.get("")
    if written != opset:  # the exporter converts from its own opset and keeps it on failure
        raise ValueError(
            f"opset {opset}: torch {torch.__version__}'s exporter could not convert the graph "
            f"to it (it stays at opset {written}); give another --opset (opset=)"
        )
    metadata = {**graph_metadata(model), **(metadata or {})}
    name_dynamic_dims(onnx_program.model)
    onnx_program.model.metadata_props.update(metadata)
    onnx_program.model.doc_string = describe(model, metadata)
    temporary = temporary_beside(out)
    try:
        onnx_program.save(str(temporary), external_data=False)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    top: int | None = None,
) -> Path:
    """An rpnkit checkpoint (an RPN or a Faster R-CNN) to the ONNX file ``out``: batch norms
    folded, anchors and NMS in the graph, dynamic batch and image size; ``fp16``: half-precision
    weights and activations (for a GPU runtime), float32 boxes and scores.

    The graph bakes in the box head's ``score_threshold`` (it keeps scores above it; default:
    the model's own, 0.05), NMS, ``max_detections`` (D, a detector's; default its
    ``detections_per_image``, 100) and ``top`` (K, an RPN's proposals per image): see
    ``export_configs``; the file's metadata records them. See docs/deploy.md for the graph's
    inputs and outputs."""
    check_not_the_checkpoint(out, checkpoint)
    check_target(out, opset)  # before the model is loaded
    network, spec, trained = load_model_and_size(checkpoint, "cpu")
    limits = export_configs(
        network, score_threshold=score_threshold, max_detections=max_detections, top=top
    )
    model = ExportableModel(network, fp16=fp16, **limits)
    metadata = {
        "rpnkit.kind": spec.kind,
        "rpnkit.preset": spec.model_config.preset,
        "rpnkit.class_names": json.dumps(list(spec.class_names or [])),
        # the resize of training (short side, max size): what the caller resizes to
        "rpnkit.input_size": json.dumps(list(trained or (DEFAULT_SHORT_SIDE, DEFAULT_MAX_SIZE))),
    }
    return save_onnx(model, out, opset=opset, metadata=metadata)
