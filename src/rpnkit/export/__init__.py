"""Export of rpnkit's models: ONNX and ``torch.export``, every export workaround in this room.

- ``graph_ops``: the graph twins of the inference steps whose sizes rpnkit reads on the host
  (anchors from symbolic feature sizes, per-level top-k, NMS as the op ``rpnkit::nms_mask`` /
  ONNX ``NonMaxSuppression``, RoI pooling by level), and the ONNX translations they need. The
  module docstring says what each replaces and why.
- ``model``: ``ExportableModel``, a loaded ``ProposalModel`` or ``FasterRCNN`` (batch norms
  folded) with inputs ``images`` (B, 3, H, W) uint8 and ``image_sizes`` (B, 2) int64 and
  fixed-shape padded outputs.
- ``exporters``: ``export_program`` (``torch.export``), ``save_onnx`` and ``export_onnx`` (a
  checkpoint to an ONNX file), with a dynamic batch and image size; the settings baked into
  the graph (``export_configs``: score threshold, D, K) recorded in its metadata.
- ``verify``: ``verify_onnx``, the ONNX file in ONNX Runtime against its checkpoint in
  PyTorch on a few images (``rpnkit export --verify``).

Nothing here imports onnx, onnxscript or onnxruntime until an export or a verification runs.

docs/deploy.md shows how to run the ONNX file.
"""

from .exporters import (
    DEFAULT_OPSET,
    MIN_OPSET,
    dynamic_shapes,
    example_inputs,
    export_onnx,
    export_program,
    save_onnx,
)
from .model import (
    DETECTOR_OUTPUT_NAMES,
    INPUT_NAMES,
    RPN_OUTPUT_NAMES,
    ExportableModel,
    export_configs,
)
from .verify import Verification, verify_onnx

__all__ = [
    "DEFAULT_OPSET",
    "DETECTOR_OUTPUT_NAMES",
    "INPUT_NAMES",
    "MIN_OPSET",
    "RPN_OUTPUT_NAMES",
    "ExportableModel",
    "Verification",
    "dynamic_shapes",
    "example_inputs",
    "export_configs",
    "export_onnx",
    "export_program",
    "save_onnx",
    "verify_onnx",
]
