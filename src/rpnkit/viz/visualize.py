"""PNG pictures of what the RPN does: anchors, sampled anchors, proposals against ground truth.

Every function takes an image as a (3, H, W) float tensor in [0, 1] (or (H, W, 3) uint8 array)
and xyxy boxes in pixels, writes a PNG of ``size_px`` and returns the number of boxes drawn.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import Tensor

from ..modeling.boxes import box_iou

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


def _chart(size_px: tuple[int, int], panels: int = 1):
    """A figure of ``panels`` side-by-side charts with room for axis labels."""
    fig, axes = plt.subplots(
        1, panels, figsize=(size_px[0] / 100, size_px[1] / 100), dpi=100, squeeze=False
    )
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
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


IGNORED_COLOUR = "#a0a0a0"


def plot_anchor_centres(
    image: Tensor | np.ndarray,
    centres: Tensor | np.ndarray,
    path: str | Path,
    *,
    title: str = "anchor centres",
    size_px: tuple[int, int] = (640, 640),
) -> int:
    """Dots at a level's anchor centres, (N, 2) (x, y), over the image."""
    fig, (ax,) = _figure(size_px)
    img = _as_hwc(image)
    ax.imshow(img)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    c = np.asarray(centres.detach().cpu() if isinstance(centres, Tensor) else centres)
    ax.plot(c[:, 0], c[:, 1], ".", color=POSITIVE_COLOUR, markersize=2)
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    _save(fig, path)
    return len(c)


def plot_anchor_labels(
    image: Tensor | np.ndarray,
    gt_boxes: Tensor,
    positive: Tensor,
    negative: Tensor,
    ignored: Tensor,
    path: str | Path,
    *,
    max_each: int = 200,
    size_px: tuple[int, int] = (640, 640),
) -> int:
    """Positive (yellow), negative (blue) and ignored (grey) anchors of one image, up to
    ``max_each`` of each (a random subset when given in random order), and the GT (green)."""
    fig, (ax,) = _figure(size_px)
    _show(
        ax,
        image,
        f"anchors: {len(positive)} positive, {len(negative)} negative, "
        f"{len(ignored)} ignored (at most {max_each} of each drawn)",
    )
    n = _draw_boxes(ax, negative[:max_each], NEGATIVE_COLOUR, width=0.5, alpha=0.5)
    n += _draw_boxes(ax, ignored[:max_each], IGNORED_COLOUR, width=0.5, alpha=0.6)
    n += _draw_boxes(ax, positive[:max_each], POSITIVE_COLOUR, width=1.0)
    _draw_boxes(ax, gt_boxes, GT_COLOUR, width=2.0)
    _save(fig, path)
    return n


def plot_objectness_maps(
    image: Tensor | np.ndarray,
    maps: Sequence[Tensor],
    path: str | Path,
    *,
    size_px: tuple[int, int] | None = None,
) -> int:
    """The image, then one heat map per level: each position's highest objectness probability
    over its anchors. ``maps``: [(H_l, W_l)] probabilities."""
    size_px = size_px or (260 * (len(maps) + 1), 300)
    fig, axes = _figure(size_px, panels=len(maps) + 1)
    img = _as_hwc(image)
    axes[0].imshow(img)
    axes[0].set_title("image", fontsize=8)
    axes[0].set_axis_off()
    for level, (ax, m) in enumerate(zip(axes[1:], maps)):
        ax.imshow(np.asarray(m.detach().cpu()), cmap="inferno", vmin=0, vmax=1)
        ax.set_title(f"level {level}: {m.shape[0]}x{m.shape[1]}", fontsize=8)
        ax.set_axis_off()
    _save(fig, path)
    return len(maps)


def plot_nms_before_after(
    image: Tensor | np.ndarray,
    before: Tensor,
    after: Tensor,
    path: str | Path,
    *,
    size_px: tuple[int, int] = (1000, 500),
) -> tuple[int, int]:
    """Two panels: the top boxes before NMS, and those kept after it."""
    fig, axes = _figure(size_px, panels=2)
    drawn = []
    for ax, boxes, title in zip(axes, (before, after), ("before NMS", "after NMS")):
        img = _as_hwc(image)
        ax.imshow(img)
        ax.set_axis_off()
        ax.set_title(f"{title}: {len(boxes)} boxes", fontsize=8)
        drawn.append(_draw_boxes(ax, boxes, PROPOSAL_COLOUR, width=0.7, alpha=0.7))
        ax.set_xlim(0, img.shape[1])
        ax.set_ylim(img.shape[0], 0)
    _save(fig, path)
    return drawn[0], drawn[1]


def plot_recall_curves(
    by_proposals: dict[str, dict[str, list[float]]],
    path: str | Path,
    *,
    by_iou: dict[str, dict[str, list[float]]] | None = None,
    size_px: tuple[int, int] = (1000, 420),
) -> int:
    """Recall against the number of proposals (AR and recall@0.5 per model), and, given
    ``by_iou``, recall against the IoU threshold. Keys are model names."""
    panels = 2 if by_iou else 1
    fig, axes = _chart(size_px, panels)
    ax = axes[0]
    lines = 0
    for name, curve in by_proposals.items():
        ax.plot(curve["k"], curve["AR"], marker="o", label=f"{name} AR 0.5:0.95")
        ax.plot(
            curve["k"], curve["recall@0.5"], marker=".", linestyle="--", label=f"{name} recall@0.5"
        )
        lines += 2
    ax.set_xscale("log")
    ax.set_xlabel("proposals per image")
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("recall against the number of proposals", fontsize=9)
    if by_iou:
        ax = axes[1]
        for name, curve in by_iou.items():
            for key in (k for k in curve if k.startswith("recall@")):
                ax.plot(curve["iou"], curve[key], label=f"{name} {key}")
                lines += 1
        ax.set_xlabel("IoU threshold")
        ax.set_ylabel("recall")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title("recall against IoU", fontsize=9)
    _save(fig, path)
    return lines


def plot_loss_curves(
    csv_path: str | Path, path: str | Path, *, size_px: tuple[int, int] = (900, 420)
) -> int:
    """Training losses from a ``train_log.csv`` against the step (log scale) and, where the
    run clipped gradients, the gradient norm before clipping beside them: a spike there is
    where a run that goes wrong usually starts. Returns the number of curves."""
    import csv

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path}: no rows to plot")
    keys = [k for k in rows[0] if k.startswith("loss")]
    norms = [(int(r["step"]), float(r["grad_norm"])) for r in rows if r.get("grad_norm")]
    fig, axes = _chart(size_px, panels=2 if norms else 1)
    ax = axes[0]
    steps = [int(r["step"]) for r in rows]
    for key in keys:
        ax.plot(steps, [float(r[key]) for r in rows], label=key)
    ax.legend(fontsize=8)
    panels = [(ax, "loss", f"training losses ({Path(csv_path).parent.name})")]
    if norms:
        axes[1].plot(*zip(*norms), color="tab:gray")
        panels.append((axes[1], "gradient norm", "gradient norm before clipping"))
    for ax, ylabel, title in panels:
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=9)
    _save(fig, path)
    return len(keys) + bool(norms)


def plot_detections(
    image: Tensor | np.ndarray,
    boxes: Tensor | np.ndarray,
    scores: Tensor | np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    size_px: tuple[int, int] = (800, 600),
) -> int:
    """Detections with their class names and scores."""
    fig, (ax,) = _figure(size_px)
    img = _as_hwc(image)
    ax.imshow(img)
    ax.set_axis_off()
    ax.set_title(f"{len(names)} detections", fontsize=8)
    colours = plt.get_cmap("tab10")
    for (x1, y1, x2, y2), s, name in zip(
        np.asarray(boxes).reshape(-1, 4), np.asarray(scores), names
    ):
        colour = colours(zlib.crc32(name.encode()) % 10)  # the same colour in every run
        ax.add_patch(
            Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5)
        )
        ax.text(
            x1,
            y1,
            f"{name} {s:.2f}",
            color="white",
            fontsize=7,
            bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.5},
        )
    _save(fig, path)
    return len(names)


def plot_precision_recall(
    curves: dict, path: str | Path, *, max_classes: int = 10, size_px: tuple[int, int] = (1000, 420)
) -> int:
    """Precision against recall (COCO's 101 recall points): the class average at IoU 0.5 and
    0.75, and up to ``max_classes`` classes at IoU 0.5 (the best by area under the curve)."""
    fig, axes = _chart(size_px, 2)
    recall = curves["recall"]
    lines = 0
    for key in ("precision@0.5", "precision@0.75"):
        if curves.get(key):
            axes[0].plot(recall, curves[key], label=f"all classes, IoU {key.split('@')[1]}")
            lines += 1
    per_class = sorted(curves.get("per_class@0.5", {}).items(), key=lambda kv: -sum(kv[1]))
    for name, precision in per_class[:max_classes]:
        axes[1].plot(recall, precision, label=name)
        lines += 1
    for ax, title in zip(axes, ("mean over classes", "per class, IoU 0.5")):
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=9)
        if ax.lines:
            ax.legend(fontsize=7)
    _save(fig, path)
    return lines
