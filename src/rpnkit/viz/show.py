"""The pictures behind ``rpnkit show``: each loads what it needs, runs the model or the anchor
machinery on one image as training or inference would see it, and writes a PNG."""

from __future__ import annotations

import torch

from ..data import DetectionDataset, collate
from ..data.transforms import Compose, ResizeShortest
from ..engine.runtime import index_for_input, load_model
from ..modeling.anchors import visible_anchors
from ..modeling.matching import IGNORE, NEGATIVE, POSITIVE
from ..modeling.presets import ModelConfig, build_model
from ..modeling.proposal_model import normalize
from ..modeling.rpn import select_proposals
from . import visualize as vis


def _item(path, *, index: int = 0, short: int = 800, max_size: int = 1333, **data_options):
    """One image (and its GT, for datasets) resized as the model sees it."""
    dataset_index = index_for_input(path, **data_options)
    if not 0 <= index < len(dataset_index.records):
        raise ValueError(
            f"{path}: index {index} out of range ({len(dataset_index.records)} images)"
        )
    dataset = DetectionDataset(dataset_index, Compose((ResizeShortest(short, max_size),)))
    item = dataset[index]
    if item is None:
        raise ValueError(f"{dataset_index.records[index].path}: unreadable image")
    return item


def _feature_sizes(config: ModelConfig, item) -> list[tuple[int, int]]:
    h, w = item["image"].shape[1:]
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    return [(-(-hp // s), -(-wp // s)) for s in config.rpn.anchors.strides]


def show_anchors(
    config: ModelConfig, image, out, *, x: float | None = None, y: float | None = None, **opts
) -> int:
    """All anchors of every level at the position nearest (x, y) (default: the centre)."""
    item = _item(image, **opts)
    model = build_model(_bare(config))
    gen = model.rpn.anchor_generator
    h, w = item["image"].shape[1:]
    x = w / 2 if x is None else x
    y = h / 2 if y is None else y
    chosen = []
    for level, ((fh, fw), lv) in enumerate(
        zip(_feature_sizes(config, item), config.rpn.anchors.levels)
    ):
        grid = gen.grid_anchors(level, fh, fw).view(fh, fw, lv.num_anchors, 4)
        i = min(fh - 1, max(0, round(y / lv.stride - config.rpn.anchors.offset)))
        j = min(fw - 1, max(0, round(x / lv.stride - config.rpn.anchors.offset)))
        chosen.append(grid[i, j])
    return vis.plot_anchors_at_position(
        item["image"], torch.cat(chosen), out, title=f"anchors at ({x:.0f}, {y:.0f}), every level"
    )


def show_grid(config: ModelConfig, image, out, *, level: int = 0, **opts) -> int:
    """A level's anchor centres over the image."""
    item = _item(image, **opts)
    sizes = _feature_sizes(config, item)
    if not 0 <= level < len(sizes):
        raise ValueError(f"level {level} out of range: the preset has {len(sizes)} levels")
    lv = config.rpn.anchors.levels[level]
    fh, fw = sizes[level]
    ys, xs = torch.meshgrid(torch.arange(fh), torch.arange(fw), indexing="ij")
    centres = (torch.stack([xs, ys], -1).reshape(-1, 2) + config.rpn.anchors.offset) * lv.stride
    h, w = item["image"].shape[1:]
    inside = (centres[:, 0] < w) & (centres[:, 1] < h)
    return vis.plot_anchor_centres(
        item["image"],
        centres[inside],
        out,
        title=f"level {level}: stride {lv.stride}, {fh}x{fw} positions",
    )


def show_labels(config: ModelConfig, data, out, *, index: int = 0, **opts) -> int:
    """Positive, negative and ignored anchors of one training image, as the matcher labels them."""
    item = _item(data, index=index, **opts)
    model = build_model(_bare(config))
    batch = collate([item])
    anchors = model.rpn.anchor_generator(_feature_sizes(config, item))
    visible = visible_anchors(anchors, batch.image_sizes, config.rpn.allowed_border)
    t = batch.targets
    labels = model.rpn.matcher(anchors, t.boxes, t.mask, t.ignore, visible).labels()[0]
    order = torch.randperm(len(anchors), generator=torch.Generator().manual_seed(0))
    pick = {
        name: anchors[order[labels[order] == v]]
        for name, v in (("pos", POSITIVE), ("neg", NEGATIVE), ("ign", IGNORE))
    }
    return vis.plot_anchor_labels(
        item["image"], item["boxes"], pick["pos"], pick["neg"], pick["ign"], out
    )


@torch.no_grad()
def _forward(checkpoint, image, **opts):
    model, config = load_model(checkpoint)
    item = _item(image, **opts)
    batch = collate([item])
    features = model.backbone(
        normalize(batch.images, batch.image_sizes, model.pixel_mean, model.pixel_std)
    )
    out = model.rpn(features, batch.image_sizes)
    return model, config, item, batch, features, out


def show_objectness(checkpoint, image, out, **opts) -> int:
    """Per level, each position's highest objectness probability."""
    _, config, item, _, features, output = _forward(checkpoint, image, **opts)
    maps, start = [], 0
    for f, lv in zip(features, config.rpn.anchors.levels):
        fh, fw = f.shape[-2:]
        n = fh * fw * lv.num_anchors
        probs = output.pred_objectness[0, start : start + n].sigmoid()
        maps.append(probs.view(fh, fw, lv.num_anchors).amax(-1))  # (H*W*A,) -> (H, W)
        start += n
    return vis.plot_objectness_maps(item["image"], maps, out)


def show_nms(checkpoint, image, out, *, top: int = 300, **opts) -> tuple[int, int]:
    """The top boxes before NMS and the proposals kept after it (at most ``top`` each)."""
    model, config, item, batch, features, output = _forward(checkpoint, image, **opts)
    fs = [(f.shape[-2], f.shape[-1]) for f in features]
    no_nms = config.rpn.test_proposals.__class__(
        pre_nms_top_n=config.rpn.test_proposals.pre_nms_top_n,
        post_nms_top_n=top,
        nms_threshold=1.0,
        min_size=config.rpn.test_proposals.min_size,
    )
    before = select_proposals(
        output.pred_objectness,
        output.pred_deltas,
        output.anchors,
        model.rpn.anchor_generator.level_sizes(fs),
        batch.image_sizes,
        no_nms,
    ).per_image()[0][0]
    after = output.proposals.per_image()[0][0][:top]
    return vis.plot_nms_before_after(item["image"], before, after, out)


def show_proposals(checkpoint, data, out, *, index: int = 0, top: int = 10, **opts) -> int:
    """Top proposals against the GT of a dataset image: found GT green, missed red."""
    _, _, item, _, _, output = _forward(checkpoint, data, index=index, **opts)
    boxes = output.proposals.per_image()[0][0]
    return vis.plot_proposals_vs_gt(
        [item["image"]],
        [boxes],
        [item["boxes"][~item["ignore"]]],
        out,
        top_k=top,
        size_px=(640, 640),
    )


def _bare(config: ModelConfig) -> ModelConfig:
    """The config without pretrained weights to load: pictures of anchors need none."""
    import dataclasses

    return dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, weights=None))
