"""PNG charts of how well a model does and how its training went.

Recall against the number of proposals and against the IoU threshold, precision against
recall, and the training losses (with the gradient norm where the run clipped it). Each
function writes a PNG of ``size_px`` to ``path`` and returns the number of curves drawn; the
panels stand side by side, each with labelled axes, a faint grid and a legend of its curves.
"""

from __future__ import annotations

import csv
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from ..data.records import listed
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
        ylim=(-0.02, 1.02),  # a curve at 0 or 1 not hidden in the frame
        log_x=True,
    )
    if by_iou:
        ax = axes[1]
        for name, curve in by_iou.items():
            for key in (k for k in curve if k.startswith("recall@")):
                ax.plot(curve["iou"], curve[key], label=f"{name} {key}")
                lines += 1
        style_chart(
            ax,
            xlabel="IoU threshold",
            ylabel="recall",
            title="recall against IoU",
            ylim=(-0.02, 1.02),
        )
    save_figure(fig, path)
    return lines


def plot_loss_curves(
    csv_path: str | Path, path: str | Path, *, size_px: tuple[int, int] = (900, 420)
) -> int:
    """Training losses from a ``train_log.csv`` against the step (log scale) and, where the
    run clipped gradients, the gradient norm before clipping beside them: a spike there is
    where a run that goes wrong usually starts. Returns the number of curves. A file that
    is not such a log is one ValueError naming it (``read_training_log``)."""
    steps, losses, norms = read_training_log(csv_path)
    fig, axes = chart_figure(size_px, panels=2 if norms else 1)
    total = {"color": "black", "linewidth": 2.2, "linestyle": "--", "zorder": 3}
    for key, values in losses.items():  # the total over its terms: seen where one term is all
        axes[0].plot(steps, values, label=key, **(total if key == "loss" else {}))
    for ax in axes:  # steps are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
    return len(losses) + bool(norms)


def read_training_log(
    csv_path: str | Path,
) -> tuple[list[int], dict[str, list[float]], list[tuple[int, float]]]:
    """A run's ``train_log.csv``: the steps, each loss column's values (``loss``,
    ``loss_*``) and the (step, gradient norm) pairs where the run logged one. Anything else
    (a missing file, a run's metrics.json, an image, a CSV without a 'step' column or a
    loss column, a row of too many fields or a value that is not a number) is a ValueError
    naming the file (and the line) and what is wrong."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        steps = sorted(csv_path.parent.glob("step*/train_log.csv"))  # the alternating's
        hint = f"; an alternating run logs each step apart: {steps[0].parent}" if steps else ""
        raise ValueError(f"{csv_path}: no training log here (a run folder's train_log.csv){hint}")
    what = f"{csv_path}: not a training log (train_log.csv)"
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            keys = [k for k in header if k.startswith("loss")]
            if "step" not in header or not keys:
                found = listed((repr(k[:24]) for k in header), 4) or "nothing"
                raise ValueError(
                    f"{what}: expected a 'step' column and loss columns, found {found}"
                )
            rows = [_log_row(row, keys, f"{csv_path} line {reader.line_num}") for row in reader]
    except UnicodeDecodeError:
        raise ValueError(f"{what}: not a text file") from None
    except csv.Error as err:
        raise ValueError(f"{what}: {err}") from None
    if not rows:
        raise ValueError(f"{what}: a header and no step logged")
    steps = [step for step, _, _ in rows]
    losses = {key: [values[i] for _, values, _ in rows] for i, key in enumerate(keys)}
    norms = [(step, norm) for step, _, norm in rows if norm is not None]
    return steps, losses, norms


def _log_row(row: dict, keys: list[str], where: str) -> tuple[int, list[float], float | None]:
    """One row of a training log as (step, the ``keys``' values, NaN where empty, the gradient
    norm or None); ``where``: the file and line, for the error."""
    what = f"{where}: not a training log (train_log.csv)"
    if None in row:  # csv.DictReader's key for the fields past the header's
        fields = len(row) - 1 + len(row[None])
        raise ValueError(f"{what}: {fields} fields, the header has {len(row) - 1}")
    try:
        step = int(row["step"])
        values = [float(row[key] or "nan") for key in keys]  # empty: a term not logged
        norm = float(row["grad_norm"]) if row.get("grad_norm") else None
    except (TypeError, ValueError) as err:  # TypeError: a short row without its step (None)
        raise ValueError(f"{what}: {err}") from None
    return step, values, norm


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
    for n, (name, precision) in enumerate(per_class[:max_classes]):
        ap = sum(precision) / max(len(precision), 1)  # COCO's AP: the mean over 101 points
        style = ("-", "--")[n % 2]  # a curve lying on another's still shows
        axes[1].plot(recall, precision, linestyle=style, label=f"{name} AP50 {ap:.2f}")
        lines += 1
    shown = min(len(per_class), max_classes)
    titles = ("mean over classes", f"per class, IoU 0.5 (the best {shown} of {len(per_class)})")
    for ax, title in zip(axes, titles):
        if not ax.lines:  # an empty frame reads as a failed drawing
            ax.text(0.5, 0.5, "no curve: no detection matched a GT box (AP 0)", ha="center",
                    va="center", transform=ax.transAxes, color="0.4", fontsize=9)  # fmt: skip
        style_chart(
            ax, xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02)
        )
    save_figure(fig, path)
    return lines
