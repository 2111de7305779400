"""PNG charts of how well a model does and how its training went.

Recall against the number of proposals and against the IoU threshold, precision against
recall, and the training losses (with the gradient norm where the run clipped it). Each
function writes a PNG of ``size_px`` to ``path`` and returns the number of curves drawn; the
panels stand side by side, each with labelled axes, a faint grid and a legend of its curves.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .figures import chart_figure, save_figure, style_chart


def plot_recall_curves(
    by_proposals: dict[str, dict[str, list[float]]],
    path: str | Path,
    *,
    by_iou: dict[str, dict[str, list[float]]] | None = None,
    size_px: tuple[int, int] = (1000, 420),
) -> int:
    """Recall against the number of proposals (AR and recall@0.5 per model), and, given
    ``by_iou``, recall against the IoU threshold. Keys are model names."""
    fig, axes = chart_figure(size_px, 2 if by_iou else 1)
    ax = axes[0]
    lines = 0
    for name, curve in by_proposals.items():
        ax.plot(curve["k"], curve["AR"], marker="o", label=f"{name} AR 0.5:0.95")
        ax.plot(
            curve["k"], curve["recall@0.5"], marker=".", linestyle="--", label=f"{name} recall@0.5"
        )
        lines += 2
    style_chart(
        ax,
        xlabel="proposals per image",
        ylabel="recall",
        title="recall against the number of proposals",
        ylim=(0, 1),
        log_x=True,
    )
    if by_iou:
        ax = axes[1]
        for name, curve in by_iou.items():
            for key in (k for k in curve if k.startswith("recall@")):
                ax.plot(curve["iou"], curve[key], label=f"{name} {key}")
                lines += 1
        style_chart(
            ax, xlabel="IoU threshold", ylabel="recall", title="recall against IoU", ylim=(0, 1)
        )
    save_figure(fig, path)
    return lines


def plot_loss_curves(
    csv_path: str | Path, path: str | Path, *, size_px: tuple[int, int] = (900, 420)
) -> int:
    """Training losses from a ``train_log.csv`` against the step (log scale) and, where the
    run clipped gradients, the gradient norm before clipping beside them: a spike there is
    where a run that goes wrong usually starts. Returns the number of curves."""
    if not Path(csv_path).is_file():
        steps = sorted(Path(csv_path).parent.glob("step*/train_log.csv"))  # the alternating's
        hint = f"; an alternating run logs each step apart: {steps[0].parent}" if steps else ""
        raise ValueError(f"{csv_path}: no training log here (a run folder's train_log.csv){hint}")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in rows[0] if k.startswith("loss")] if rows else []
    if not keys or "step" not in rows[0]:
        raise ValueError(f"{csv_path}: no losses to plot (expected a run's train_log.csv)")
    norms = [(int(r["step"]), float(r["grad_norm"])) for r in rows if r.get("grad_norm")]
    fig, axes = chart_figure(size_px, panels=2 if norms else 1)
    steps = [int(r["step"]) for r in rows]
    for key in keys:
        axes[0].plot(steps, [float(r[key]) for r in rows], label=key)
    style_chart(
        axes[0],
        xlabel="step",
        ylabel="loss",
        title=f"training losses ({Path(csv_path).parent.name})",
        log_y=True,
        legend_fontsize=8,
    )
    if norms:
        axes[1].plot(*zip(*norms), color="tab:gray")  # one curve, no legend
        style_chart(
            axes[1],
            xlabel="step",
            ylabel="gradient norm",
            title="gradient norm before clipping",
            log_y=True,
        )
    save_figure(fig, path)
    return len(keys) + bool(norms)


def plot_precision_recall(
    curves: dict, path: str | Path, *, max_classes: int = 10, size_px: tuple[int, int] = (1000, 420)
) -> int:
    """Precision against recall (COCO's 101 recall points): the class average at IoU 0.5 and
    0.75, and up to ``max_classes`` classes at IoU 0.5 (the best by area under the curve)."""
    fig, axes = chart_figure(size_px, 2)
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
        style_chart(
            ax, xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02)
        )
    save_figure(fig, path)
    return lines
