"""PNG pictures of what the RPN does: anchors, sampled anchors, proposals against ground truth.

Every function takes an image as a (3, H, W) float tensor in [0, 1] (or (H, W, 3) uint8 array)
and xyxy boxes in pixels, writes a PNG of ``size_px`` and returns the number of boxes drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import Tensor

from .boxes import box_iou

GT_COLOUR = "#00e000"
MISSED_COLOUR = "#ff2020"
POSITIVE_COLOUR = "#ffd000"
NEGATIVE_COLOUR = "#3090ff"
PROPOSAL_COLOUR = "#ff40ff"


def _as_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, Tensor):
        return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    return np.asarray(image)


def _figure(size_px: tuple[int, int], panels: int = 1):
    dpi = 100
    fig, axes = plt.subplots(
        1, panels, figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi, squeeze=False
    )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.03)
    return fig, list(axes[0])


def _draw_boxes(ax, boxes: Tensor | np.ndarray, colour: str, width: float = 1.2, **kw) -> int:
    boxes = np.asarray(boxes.detach().cpu() if isinstance(boxes, Tensor) else boxes)
    for x1, y1, x2, y2 in boxes.reshape(-1, 4):
        ax.add_patch(
            Rectangle(
                (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=width, **kw
            )
        )
    return len(boxes.reshape(-1, 4))


def _show(ax, image: Tensor | np.ndarray, title: str) -> None:
    img = _as_hwc(image)
    ax.imshow(img)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    # anchors reach past the border: show some margin around the image
    h, w = img.shape[:2]
    ax.set_xlim(-0.25 * w, 1.25 * w)
    ax.set_ylim(1.25 * h, -0.25 * h)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_anchors_at_position(
    image: Tensor | np.ndarray,
    anchors: Tensor,
    path: str | Path,
    *,
    title: str = "anchors at one position",
    size_px: tuple[int, int] = (640, 640),
) -> int:
    """Draw the (A, 4) anchors of one feature-map position over the image."""
    fig, (ax,) = _figure(size_px)
    _show(ax, image, title)
    n = _draw_boxes(ax, anchors, POSITIVE_COLOUR, width=1.5)
    centre = ((anchors[:, :2] + anchors[:, 2:]) / 2).mean(0).cpu().numpy()
    ax.plot(centre[0], centre[1], "+", color="red", markersize=12)
    _save(fig, path)
    return n


def plot_sampled_anchors(
    image: Tensor | np.ndarray,
    gt_boxes: Tensor,
    positive: Tensor,
    negative: Tensor,
    path: str | Path,
    *,
    max_negatives: int = 64,
    size_px: tuple[int, int] = (640, 640),
) -> int:
    """Draw GT boxes, the sampled positive anchors, and up to ``max_negatives`` negatives."""
    fig, (ax,) = _figure(size_px)
    _show(
        ax,
        image,
        f"sampled anchors: {len(positive)} positive (yellow), "
        f"{len(negative)} negative (blue, {min(len(negative), max_negatives)} shown), GT green",
    )
    n = _draw_boxes(ax, negative[:max_negatives], NEGATIVE_COLOUR, width=0.6, alpha=0.7)
    n += _draw_boxes(ax, positive, POSITIVE_COLOUR, width=1.0)
    _draw_boxes(ax, gt_boxes, GT_COLOUR, width=2.0)
    _save(fig, path)
    return n


def plot_proposals_vs_gt(
    images: Sequence[Tensor | np.ndarray],
    proposals: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    path: str | Path,
    *,
    top_k: int = 10,
    iou_threshold: float = 0.5,
    size_px: tuple[int, int] | None = None,
) -> int:
    """One panel per image: its top ``top_k`` proposals (magenta), GT boxes found by some
    proposal among its top 100 at IoU >= ``iou_threshold`` (green) and missed ones (red)."""
    size_px = size_px or (320 * len(images), 360)
    fig, axes = _figure(size_px, panels=len(images))
    drawn = 0
    for ax, image, props, gts in zip(axes, images, proposals, gt_boxes):
        props, gts = props.detach().cpu(), gts.detach().cpu()
        if len(gts) and len(props):
            found = box_iou(gts, props[:100]).max(dim=1).values >= iou_threshold
        else:
            found = torch.zeros(len(gts), dtype=torch.bool)
        _show(ax, image, f"top {top_k} proposals; GT found {int(found.sum())}/{len(gts)}")
        h, w = _as_hwc(image).shape[:2]
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        drawn += _draw_boxes(ax, props[:top_k], PROPOSAL_COLOUR, width=1.0)
        _draw_boxes(ax, gts[found], GT_COLOUR, width=2.0, linestyle="--")
        _draw_boxes(ax, gts[~found], MISSED_COLOUR, width=2.0, linestyle="--")
    _save(fig, path)
    return drawn


def plot_proposals(
    image: Tensor | np.ndarray,
    boxes: Tensor | np.ndarray,
    scores: Tensor | np.ndarray,
    path: str | Path,
    *,
    size_px: tuple[int, int] = (800, 600),
) -> int:
    """Draw proposals with their scores, the best first and brightest."""
    fig, (ax,) = _figure(size_px)
    img = _as_hwc(image)
    ax.imshow(img)
    ax.set_axis_off()
    ax.set_title(f"top {len(boxes)} proposals", fontsize=8)
    boxes, scores = np.asarray(boxes).reshape(-1, 4), np.asarray(scores).reshape(-1)
    for rank, ((x1, y1, x2, y2), s) in enumerate(zip(boxes, scores)):
        alpha = 1.0 - 0.7 * rank / max(1, len(boxes) - 1)
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=PROPOSAL_COLOUR,
                linewidth=1.2,
                alpha=alpha,
            )
        )
        if rank < 10:
            ax.text(
                x1,
                y1,
                f"{s:.2f}",
                color="white",
                fontsize=6,
                bbox={"facecolor": PROPOSAL_COLOUR, "alpha": 0.6, "pad": 0.5},
            )
    _save(fig, path)
    return len(boxes)
