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


def read_warned(*args, **kwargs):
    """``read_dataset``'s index and the lines it warned."""
    import warnings

    from rpnkit.data import read_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = read_dataset(*args, **kwargs)
    return index, [str(w.message) for w in caught]


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


def tiny_detector_pair():
    """rpnkit's FasterRCNN on the tiny preset (anchors rounded as torchvision's, 4 classes, a
    64-wide head) and torchvision's FasterRCNN with the same weights, both in eval mode, for
    images up to 256 px. The class layer is scaled so that many detections pass 0.05."""
    import dataclasses

    import torch

    from rpnkit.modeling.presets import DetectorConfig, build_detector, preset_config
    from rpnkit.modeling.roi_heads import RoIHeadConfig
    from rpnkit.testing import torchvision_faster_rcnn

    torch.manual_seed(0)
    model = preset_config("tiny")
    anchors = dataclasses.replace(model.rpn.anchors, round_base=True)  # as torchvision's
    model = dataclasses.replace(model, rpn=dataclasses.replace(model.rpn, anchors=anchors))
    roi = RoIHeadConfig(num_classes=5, representation_size=64)
    ours = build_detector(DetectorConfig(model=model, roi=roi, pooled_levels=3)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(ours.roi_heads.box_head.cls_score.weight, std=0.3)
    return ours, torchvision_faster_rcnn(ours, min_size=256, max_size=256).eval()


def saved_figures(monkeypatch, module=None) -> list:
    """The figures that ``module`` (``rpnkit.viz.overlays`` by default) saves from now on
    (still written)."""
    from rpnkit.viz import overlays

    module = module or overlays
    figures, save = [], module.save_figure

    def recording(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(module, "save_figure", recording)
    return figures


@pytest.fixture(scope="session")
def detector_checkpoint(tmp_path_factory) -> Path:
    """A tiny Faster R-CNN for raccoon, at 160 / 240 px: untrained and seeded, with large
    anchors on every level (96 and 160 px) and its box regressions zeroed, so that its
    detections are anchors, clipped, and some cover a raccoon (mostly large in its photo);
    its class layer scaled so that many detections pass the box head's 0.05."""
    import dataclasses

    import torch

    from rpnkit.engine.checkpoint import ModelSpec, save_model
    from rpnkit.modeling.presets import DetectorConfig, preset_config
    from rpnkit.modeling.roi_heads import RoIHeadConfig

    torch.manual_seed(0)
    model = preset_config("tiny")
    levels = [dataclasses.replace(x, sizes=(96.0, 160.0)) for x in model.rpn.anchors.levels]
    anchors = dataclasses.replace(model.rpn.anchors, levels=tuple(levels))
    model = dataclasses.replace(model, rpn=dataclasses.replace(model.rpn, anchors=anchors))
    roi = RoIHeadConfig(num_classes=2, representation_size=64)
    spec = ModelSpec("faster-rcnn", DetectorConfig(model, roi), ("raccoon",))
    model = spec.build(pretrained=False).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.roi_heads.box_head.cls_score.weight, std=0.3)
        for layer in (model.first_stage.rpn.head.bbox_pred[0], model.roi_heads.box_head.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
    path = tmp_path_factory.mktemp("frcnn") / "checkpoint.safetensors"
    return save_model(path, model, spec, input_size=(160, 240))


SHARED_NAMES = ("a/img.jpg", "b/img.jpg", "a/x.jpg", "b/y.jpg")


def shared_name_csv(root: Path) -> Path:
    """A CSV of four 64x64 images, a/img.jpg and b/img.jpg sharing a file name, a/x.jpg and
    b/y.jpg not (``SHARED_NAMES``); one box each, (8, 8, 40, 40) of class raccoon."""
    from PIL import Image

    rows = ["image_path,xmin,ymin,xmax,ymax,label"]
    for name in SHARED_NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (90, 120, 150)).save(root / name)
        rows.append(f"{name},8,8,40,40,raccoon")
    path = root / "boxes.csv"
    path.write_text("\n".join(rows) + "\n")
    return path
