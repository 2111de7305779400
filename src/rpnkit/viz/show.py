"""The pictures behind ``rpnkit show``: each takes one image as training or inference sees it
(resized, and with its GT for a dataset), runs the anchor machinery or the model's own forward
on it, and writes a PNG through ``overlays``. The size is the options' ``short`` and
``max_size``; None (their default) is the checkpoint's training size where a checkpoint is
given, as ``load`` gives ``propose``, ``detect`` and ``eval``, else 800 and 1333. A
checkpoint runs on ``device`` ('auto', 'cpu', 'cuda', 'cuda:N'), as ``load`` takes it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from ..data import (
    DatasetIndex,
    DetectionDataset,
    Unreadable,
    collate,
    eval_transforms,
    index_for_input,
)
from ..data.transforms import DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE
from ..engine import runner
from ..engine.runtime import Predictor, load
from ..modeling.anchors import AnchorGenerator, visible_anchors
from ..modeling.matching import IGNORE, NEGATIVE, POSITIVE
from ..modeling.presets import ModelConfig, build_model
from ..modeling.rpn import RPNOutput, rpn_matcher, select_proposals
from ..modeling.sizes import feature_sizes
from . import overlays

LABELS_DRAWN = 200  # anchors of each label drawn by show labels (a random subset of many)


def _item(path, *, index: int = 0, **opts):
    """One image (and its GT, for datasets) resized as the model sees it (None: 800, 1333)."""
    return _indexed_item(path, index=index, **opts)[1]


def _indexed_item(
    path, *, index: int = 0, short: int | None = None, max_size: int | None = None, **data_options
) -> tuple[DatasetIndex, dict]:
    """What ``path`` holds (a dataset's index, or plain images without classes) and its image
    ``index`` as ``_item`` gives it."""
    short = DEFAULT_SHORT_SIDE if short is None else short
    max_size = DEFAULT_MAX_SIZE if max_size is None else max_size
    dataset_index = index_for_input(path, **data_options)
    if not dataset_index.records:  # each image left out was said in its line
        raise ValueError(f"{path}: none of its images could be read (the lines above say why)")
    if not 0 <= index < len(dataset_index.records):
        raise ValueError(
            f"{path}: index {index} out of range ({len(dataset_index.records)} images)"
        )
    item = DetectionDataset(dataset_index, eval_transforms(short, max_size))[index]
    if isinstance(item, Unreadable):  # the marker names the file and what was wrong
        raise ValueError(str(item))
    return dataset_index, item


def _labelled_item(data, *, index: int = 0, **opts) -> dict:
    """A dataset image with its boxes, as ``_item`` gives it; a ValueError when it has none:
    the matcher would call every anchor negative, which says nothing about the anchors."""
    dataset_index, item = _indexed_item(data, index=index, **opts)
    if len(item["boxes"]):
        return item
    if not dataset_index.class_names:  # plain images: no annotations at all
        plain = "a folder of images" if Path(data).is_dir() else "an image"
        why = f"{data}: {plain} without annotations"
    else:
        why = f"{data}: image {index} ({item['file_name']}) has no box"
    raise ValueError(
        f"{why}: nothing to label; rpnkit show labels needs a dataset image with boxes (a COCO "
        "JSON, VOC folder, YOLO data.yaml or CSV, and --index to pick the image)"
    )


def _loaded(checkpoint, device, opts: dict) -> tuple[Predictor, dict]:
    """The checkpoint on ``device``, its batch norms unfolded (show draws the raw network's
    outputs), and ``opts`` with its size: the ``short`` and ``max_size`` given, else the
    checkpoint's training size (``load``'s rule, as every other command)."""
    short, max_size = opts.get("short"), opts.get("max_size")
    predictor = load(checkpoint, device, fold_bn=False, short_side=short, max_size=max_size)
    return predictor, {**opts, "short": predictor.short_side, "max_size": predictor.max_size}


def _sizes(config: ModelConfig, item: dict) -> list[tuple[int, int]]:
    h, w = item["image"].shape[1:]
    return feature_sizes(h, w, config.rpn.anchors.strides)


def show_anchors(
    config: ModelConfig, image, out, *, x: float | None = None, y: float | None = None, **opts
) -> int:
    """All anchors of every level at the position nearest (x, y), in the image's own pixels
    (default: the centre), drawn on the image resized as the network sees it."""
    item = _item(image, **opts)
    anchors = config.rpn.anchors
    gen = AnchorGenerator(anchors)
    orig_h, orig_w = item["orig_size"]
    for name, value, side, extent in (("x", x, "width", orig_w), ("y", y, "height", orig_h)):
        if value is not None and not 0 <= value < extent:
            raise ValueError(f"{name} {value:g} is outside the image ({side} {extent} px)")
    x = orig_w / 2 if x is None else x
    y = orig_h / 2 if y is None else y
    title = f"anchors at ({x:.0f}, {y:.0f}), every level"
    x, y = x * item["scale"], y * item["scale"]  # the network's pixels (transforms' resize)
    chosen = []
    for level, ((fh, fw), lv) in enumerate(zip(_sizes(config, item), anchors.levels)):
        grid = gen.grid_anchors(level, fh, fw).view(fh, fw, lv.num_anchors, 4)
        i = min(fh - 1, max(0, round(y / lv.stride - anchors.offset)))
        j = min(fw - 1, max(0, round(x / lv.stride - anchors.offset)))
        chosen.append(grid[i, j])
    levels = [(f"stride {lv.stride}", lv.num_anchors) for lv in anchors.levels]
    return overlays.plot_anchors_at_position(
        item["image"], torch.cat(chosen), out, levels=levels, title=title
    )


GRID_PICTURE_PX = 640  # the grid picture's side (plot_anchor_centres' default)
GRID_SPACING_PX = 8  # at least this many of its pixels between two centres, else a crop


def show_grid(config: ModelConfig, image, out, *, level: int = 0, **opts) -> int:
    """A level's anchor centres over the image."""
    item = _item(image, **opts)
    sizes = _sizes(config, item)
    if not 0 <= level < len(sizes):
        raise ValueError(f"level {level} out of range: the preset has {len(sizes)} levels")
    lv = config.rpn.anchors.levels[level]
    fh, fw = sizes[level]
    ys, xs = torch.meshgrid(torch.arange(fh), torch.arange(fw), indexing="ij")
    centres = (torch.stack([xs, ys], -1).reshape(-1, 2) + config.rpn.anchors.offset) * lv.stride
    image = item["image"]
    h, w = image.shape[1:]
    title = f"level {level}: stride {lv.stride}, {fw} wide x {fh} high positions"
    title += f", {overlays.input_size(image)}"  # the crop below: a part of that input
    side = lv.stride * GRID_PICTURE_PX // GRID_SPACING_PX  # the image pixels that fit
    if side < max(h, w):  # too dense to see whole (a solid sheet): the centre, magnified
        y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
        image = image[:, y0 : y0 + side, x0 : x0 + side]
        centres = centres - torch.tensor([x0, y0])
        title += f"; the middle {image.shape[2]}x{image.shape[1]} px shown"
        h, w = image.shape[1:]
    inside = (centres >= 0).all(1) & (centres[:, 0] < w) & (centres[:, 1] < h)
    return overlays.plot_anchor_centres(image, centres[inside], out, title=title)


def show_labels(
    config: ModelConfig | None,
    data,
    out,
    *,
    index: int = 0,
    checkpoint=None,
    device: str = "auto",
    **opts,
) -> int:
    """Positive, negative and ignored anchors of one training image, as the matcher labels
    them; ``checkpoint`` (else ``config``) says which model, and its training size the
    image's. A legend below the image keys each label's colour with its count (at most
    LABELS_DRAWN of each drawn). A Cascade RPN has assignments of its own:
    ``show_cascade_labels``. An image without a box (a plain image, or a dataset's image
    without one) is a ValueError."""
    network = None
    if checkpoint is not None:
        predictor, opts = _loaded(checkpoint, device, opts)
        network, config = predictor.network, predictor.spec.model_config
    if config.cascade is not None:
        return show_cascade_labels(config, data, out, index=index, network=network, **opts)
    item = _labelled_item(data, index=index, **opts)
    rpn = config.rpn
    batch = collate([item])
    anchors = AnchorGenerator(rpn.anchors)(_sizes(config, item))
    visible = visible_anchors(anchors, batch.image_sizes, rpn.allowed_border)
    matcher = rpn_matcher(rpn)
    t = batch.targets
    labels = matcher(anchors, t.boxes, t.mask, t.ignore, visible).labels()[0]
    pick = _by_label(anchors, labels)
    # the colours and counts are the legend's (overlays.plot_label_panels)
    panel = overlays.LabelPanel(
        f"{item['file_name']}: anchors as the matcher labels them",
        pick[POSITIVE],
        pick[NEGATIVE],
        pick[IGNORE],
    )
    return overlays.plot_label_panels(
        item["image"], item["boxes"], [panel], out, max_each=LABELS_DRAWN, size_px=(640, 640)
    )


def _by_label(boxes: Tensor, labels: Tensor) -> dict[int, Tensor]:
    """(N, 4) boxes and their (N,) labels -> the boxes of each label (POSITIVE, NEGATIVE,
    IGNORE), in one seeded random order: what a picture draws of each is a random subset."""
    order = torch.randperm(len(boxes), generator=torch.Generator().manual_seed(0))
    return {v: boxes[order[labels[order] == v]] for v in (POSITIVE, NEGATIVE, IGNORE)}


@torch.no_grad()
def show_cascade_labels(
    config: ModelConfig, data, out, *, index: int = 0, network=None, **opts
) -> int:
    """A Cascade RPN's own assignments of one training image, from its forward with the GT:
    stage 1's region assigner on the anchors (positives and ignored; it has no negatives),
    and, given the trained ``network``, stage 2's IoU matching on its stage-1 boxes. Without
    one only stage 1 is drawn: it depends on the GT and the anchors alone. Each panel's
    legend keys its labels' colours with their counts. The model runs where ``network`` is."""
    item = _labelled_item(data, index=index, **opts)
    model = build_model(config).eval() if network is None else runner.first_stage(network)
    batch = collate([item]).to(next(model.parameters()).device)
    output = model(batch.images, batch.image_sizes, batch.targets)
    stage1 = _by_label(output.anchors.cpu(), output.stage1_match.labels()[0].cpu())
    panels = [
        overlays.LabelPanel(
            "stage 1, region assigner, on the anchors",
            stage1[POSITIVE],
            stage1[NEGATIVE][:0],  # the rest of stage 1's anchors are unused, not negative
            stage1[IGNORE],
            has_negatives=False,
        )
    ]
    if network is None:
        panels[0].title += "\n(stage 2 needs a trained checkpoint)"
    else:  # stage 2's matching depends on the trained stage 1's boxes
        stage2 = _by_label(output.refined_anchors[0].cpu(), output.match.labels()[0].cpu())
        panels.append(
            overlays.LabelPanel(
                "stage 2, IoU matching, on the stage-1 boxes",
                stage2[POSITIVE],
                stage2[NEGATIVE],
                stage2[IGNORE],
            )
        )
    return overlays.plot_label_panels(item["image"], item["boxes"], panels, out)


@torch.no_grad()
def _forward(checkpoint, image, *, device: str = "auto", **opts) -> tuple:
    """The checkpoint's first stage on one image, on ``device`` at the checkpoint's size
    unless ``opts`` give one: (the first stage, the item, the batch on the device and the
    RPN's output with its raw predictions, there too)."""
    predictor, opts = _loaded(checkpoint, device, opts)
    first_stage = runner.first_stage(predictor.network)
    item = _item(image, **opts)
    batch = collate([item]).to(predictor.device)
    # image_scales: min_size in the original pixels, as the runtime's proposals have it
    output = first_stage(batch.images, batch.image_sizes, image_scales=batch.image_scales)
    return first_stage, item, batch, output


def show_objectness(checkpoint, image, out, **opts) -> int:
    """Per level, each position's highest objectness probability (``opts``: the image's
    ``index``, the size and the ``device``, as ``_forward`` takes them)."""
    model, item, _, output = _forward(checkpoint, image, **opts)
    maps = []
    levels = model.rpn.config.anchors.levels
    counts = model.rpn.anchor_generator.level_sizes(output.feature_sizes)
    per_level = output.pred_objectness[0].sigmoid().split(counts)
    for probs, (fh, fw), lv in zip(per_level, output.feature_sizes, levels):
        maps.append(probs.view(fh, fw, lv.num_anchors).amax(-1))  # (H*W*A,) -> (H, W)
    return overlays.plot_objectness_maps(item["image"], maps, out)


def show_nms(checkpoint, image, out, *, top: int = 300, **opts) -> tuple[int, int]:
    """The top boxes before NMS and the proposals kept after it (at most ``top`` each)."""
    model, item, batch, output = _forward(checkpoint, image, **opts)
    before = _without_nms(model.rpn, output, batch, top)
    kept_all = output.proposals.per_image()[0][0]
    # a box NMS keeps is among the proposals, the same numbers (one decoding of both)
    kept = (before[:, None, :] == kept_all[None, :, :]).all(-1).any(1)
    return overlays.plot_nms_before_after(item["image"], before, kept_all[:top], out, kept=kept)


def _without_nms(rpn, output: RPNOutput, batch, top: int):
    """The RPN's top ``top`` boxes with its test setting but no suppression."""
    no_nms = dataclasses.replace(rpn.config.test_proposals, post_nms_top_n=top, nms_threshold=1.0)
    # a Cascade RPN's deltas apply to its stage-1 boxes, not to the anchors
    anchors = output.anchors if output.refined_anchors is None else output.refined_anchors
    return select_proposals(
        output.pred_objectness,
        output.pred_deltas,
        anchors,
        rpn.anchor_generator.level_sizes(output.feature_sizes),
        batch.image_sizes,
        no_nms,
        box_coder=rpn.box_coder,
        image_scales=batch.image_scales,
    ).per_image()[0][0]


def show_proposals(checkpoint, data, out, *, index: int = 0, top: int = 10, **opts) -> int:
    """Top proposals against the GT of a dataset image: found GT green, missed red."""
    _, item, _, output = _forward(checkpoint, data, index=index, **opts)
    boxes = output.proposals.per_image()[0][0]
    return overlays.plot_proposals_vs_gt(
        [item["image"]],
        [boxes],
        [item["boxes"][~item["ignore"]]],
        out,
        top_k=top,
        network_input=True,
        size_px=(640, 640),
    )
