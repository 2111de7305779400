"""PNG pictures drawn over an image: what the RPN does at each stage, and its results.

Anchors (at one position, their centres, their labels, those sampled for the loss), the
objectness maps, proposals before and after NMS, proposals against the ground truth, and the
final proposals or detections of one image (:func:`save_overlay` draws an inference result).

Images are (3, H, W) float tensors in [0, 1] or (H, W, 3) uint8 arrays; boxes are (N, 4) xyxy
in the image's pixels. Each function writes a PNG of ``size_px`` to ``path`` and returns the
number of boxes drawn (points for the anchor centres, maps for the objectness); the pictures of
one result (proposals, detections, overlays) are by default the image's own shape, its longest
side between OVERLAY_MIN_SIDE and OVERLAY_MAX_SIDE pixels; their labels (:func:`place_labels`)
stay inside the image and never cover one another. The anchor pictures show a margin around the
image, as anchors reach past its border; the others show the image only. An image or map more
than MAX_SHOWN_ASPECT times longer than thick (a 512x6 input, whose anchors ran together) is
drawn stretched across to that aspect, its title saying ``drawn Nx taller`` (or ``wider``). The
pictures of the network's own stages (anchors, labels, objectness, NMS) are of its input, the
image resized: their titles say its size (``input WxH``). Colours: green GT, red missed GT,
yellow positive anchors, blue negative, grey ignored, magenta proposals. The pictures of
several kinds of box (sampled anchors, anchor labels, proposals against the GT) key them in a
legend below each panel, with their counts; each kind is drawn and keyed from one ``*_STYLE``
constant.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps, patheffects
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from torch import Tensor

from ..data import load_rgb
from ..engine.results import DetectionResult, ProposalResult
from ..modeling.boxes import box_iou
from .figures import (
    GT_COLOUR,
    IGNORED_COLOUR,
    LEGEND_PX,
    MISSED_COLOUR,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    PROPOSAL_COLOUR,
    BoxStyle,
    as_numpy,
    box_legend,
    draw_boxes,
    fitted_image_figure,
    image_figure,
    image_panel,
    noted,
    save_figure,
    stretch_thin_view,
)

ANCHOR_MARGIN = 0.25  # of the image's size, on every side of the anchor pictures
# a result's picture: the image's longest side in the PNG. Never above the maximum, whatever
# the image (a 180 Mpx scan is decoded shrunk, not drawn whole); small images are enlarged to
# the minimum, so that the scores stay readable
OVERLAY_MAX_SIDE = 1600
OVERLAY_MIN_SIDE = 640

# how each kind of box is drawn, and keyed in the legends: one style per kind, in every picture
GT_STYLE = BoxStyle(GT_COLOUR, width=2.0)
POSITIVE_STYLE = BoxStyle(POSITIVE_COLOUR, width=1.0)
# negatives and ignored anchors come by the hundred: thin and faint, so the image shows through
NEGATIVE_STYLE = BoxStyle(NEGATIVE_COLOUR, width=0.5, alpha=0.5)
IGNORED_STYLE = BoxStyle(IGNORED_COLOUR, width=0.5, alpha=0.6)
PROPOSAL_STYLE = BoxStyle(PROPOSAL_COLOUR, width=1.0)
NMS_KEPT_STYLE = BoxStyle(PROPOSAL_COLOUR, width=1.0)
SUPPRESSED_STYLE = BoxStyle(NEGATIVE_COLOUR, width=0.7, alpha=0.7, linestyle=":")
# dashed: a proposal lying on its GT box stays visible
FOUND_GT_STYLE = BoxStyle(GT_COLOUR, width=2.0, linestyle="--")
MISSED_GT_STYLE = BoxStyle(MISSED_COLOUR, width=2.0, linestyle="--")
# a crowded image has hundreds of positive anchors, whose outlines make a solid block: a
# sample of them is outlined, and every one's centre dotted
POSITIVES_OUTLINED = 40
PROPOSAL_SCORES = 10  # the best proposals that get their score written: more would cover it


def image_size(image: Tensor | np.ndarray) -> tuple[int, int]:
    """(height, width) of a (3, H, W) tensor or an (H, W, 3) array."""
    h, w = image.shape[-2:] if isinstance(image, Tensor) else np.shape(image)[:2]
    return int(h), int(w)


def input_size(image: Tensor | np.ndarray) -> str:
    """``input WxH``, the size of ``image`` as the network takes it (resized), for a title."""
    h, w = image_size(image)
    return f"input {w}x{h}"


def with_input_size(title: str, image: Tensor | np.ndarray) -> str:
    """``title`` with ``input_size(image)`` at the end of its first line."""
    first, *rest = title.split("\n")
    return "\n".join([f"{first}; {input_size(image)}", *rest])


def counted(name: str, total: int, drawn: int) -> str:
    """A legend's label: ``positive (12)``, or ``negative (216124, 200 drawn)`` when only some
    of them are drawn."""
    return f"{name} ({total})" if drawn == total else f"{name} ({total}, {drawn} drawn)"


def plot_anchors_at_position(
    image: Tensor | np.ndarray,
    anchors: Tensor,
    path: str | Path,
    *,
    levels: Sequence[tuple[str, int]] | None = None,
    title: str = "anchors at one position",
    size_px: tuple[int, int] = (640, 640),
) -> int:
    """Draw the (A, 4) anchors of one position over the image, a colour per level: ``levels``
    names each level and counts its anchors, in the order of ``anchors`` (None: one kind).
    The legend below keys the levels and the position's mark (the anchors' mean centre)."""
    fig, (ax,) = image_figure(size_px, legend=True)
    image_panel(ax, image, with_input_size(title, image), margin=ANCHOR_MARGIN)
    levels = levels if levels is not None else [("anchors", len(anchors))]
    if sum(n for _, n in levels) != len(anchors):
        raise ValueError(f"levels count {sum(n for _, n in levels)} anchors, got {len(anchors)}")
    colours = colormaps["tab10"] if len(levels) > 1 else (lambda _: POSITIVE_COLOUR)
    entries, start = [], 0
    for i, (name, count) in enumerate(levels):
        # thin: the smallest level's anchors, a dozen picture pixels wide, stay apart
        style = BoxStyle(to_hex(colours(i % 10)), width=1.0)
        style.draw(ax, anchors[start : start + count])
        entries.append((style, f"{name} ({count})"))
        start += count
    centre = ((anchors[:, :2] + anchors[:, 2:]) / 2).mean(0).cpu().numpy()
    outlined = [patheffects.withStroke(linewidth=2.5, foreground="black")]  # on any image
    # small and under the anchors (patches are at zorder 1): the smallest level's anchors,
    # a few picture pixels wide, were hidden under the mark
    (mark,) = ax.plot(*centre, "+", color="white", markersize=7, path_effects=outlined, zorder=0.5)
    box_legend(ax, entries, extra=[(mark, "position")])
    save_figure(fig, path)
    return len(anchors)


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
    """Draw GT boxes, the sampled positive anchors, and up to ``max_negatives`` negatives,
    keyed with their counts in a legend below the image."""
    fig, (ax,) = image_figure(size_px, legend=True)
    title = with_input_size("anchors sampled for the loss", image)
    image_panel(ax, image, title, margin=ANCHOR_MARGIN)
    shown = NEGATIVE_STYLE.draw(ax, negative[:max_negatives])
    n = shown + POSITIVE_STYLE.draw(ax, positive)
    gt = GT_STYLE.draw(ax, gt_boxes)
    box_legend(
        ax,
        [
            (POSITIVE_STYLE, counted("positive", len(positive), len(positive))),
            (NEGATIVE_STYLE, counted("negative", len(negative), shown)),
            (GT_STYLE, counted("GT", gt, gt)),
        ],
    )
    save_figure(fig, path)
    return n


def plot_anchor_centres(
    image: Tensor | np.ndarray,
    centres: Tensor | np.ndarray,
    path: str | Path,
    *,
    title: str = "anchor centres",
    size_px: tuple[int, int] = (640, 640),
) -> int:
    """Dots at a level's anchor centres, (N, 2) (x, y), over the image."""
    fig, (ax,) = image_figure(size_px)
    image_panel(ax, image, title)
    c = as_numpy(centres)
    ax.plot(c[:, 0], c[:, 1], ".", color=POSITIVE_COLOUR, markersize=2)
    save_figure(fig, path)
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
    ``max_each`` of each (POSITIVES_OUTLINED of the positives, with every positive's centre
    dotted; a random subset when given in random order), and the GT (green), keyed with
    their counts in a legend below the image."""
    panel = LabelPanel("anchors as the matcher labels them", positive, negative, ignored)
    return plot_label_panels(image, gt_boxes, [panel], path, max_each=max_each, size_px=size_px)


@dataclass
class LabelPanel:
    """One panel of labelled boxes: its title and the (N, 4) xyxy positive, negative and
    ignored boxes (anchors, or a Cascade RPN's stage-1 boxes). ``has_negatives`` False: the
    assignment labels no box negative (a Cascade RPN's stage 1, whose other anchors are
    unused), and the legend leaves the kind out rather than count 0 of it."""

    title: str
    positive: Tensor
    negative: Tensor
    ignored: Tensor
    has_negatives: bool = True


def plot_label_panels(
    image: Tensor | np.ndarray,
    gt_boxes: Tensor,
    panels: Sequence[LabelPanel],
    path: str | Path,
    *,
    max_each: int = 200,
    size_px: tuple[int, int] | None = None,
) -> int:
    """One panel per ``LabelPanel`` side by side, each as ``plot_anchor_labels`` draws its
    boxes (up to ``max_each`` of each label, POSITIVES_OUTLINED of the positives, whose
    centres are all dotted) over the image with the GT (green), and a legend below it: each
    label's colour and count; returns the boxes drawn, GT left out."""
    size_px = size_px or (640 * len(panels), 640)
    fig, axes = image_figure(size_px, panels=len(panels), legend=True)
    n = 0
    for ax, panel in zip(axes, panels):
        image_panel(ax, image, with_input_size(panel.title, image), margin=ANCHOR_MARGIN)
        n += _draw_labels(ax, gt_boxes, panel, max_each)
    save_figure(fig, path)
    return n


def _draw_labels(ax: Axes, gt_boxes: Tensor, panel: LabelPanel, max_each: int) -> int:
    """One ``plot_label_panels`` panel's boxes and legend (positive, negative, ignored, GT);
    returns the boxes drawn, GT left out."""
    kinds = [("negative", panel.negative, NEGATIVE_STYLE)] if panel.has_negatives else []
    keys, n = {}, 0
    for name, boxes, style in [*kinds, ("ignored", panel.ignored, IGNORED_STYLE)]:
        drawn = style.draw(ax, boxes[:max_each])  # the least interesting first: under the rest
        keys[name] = (style, counted(name, len(boxes), drawn))
        n += drawn
    positive, marks = panel.positive, {}
    drawn = POSITIVE_STYLE.draw(ax, positive[: min(max_each, POSITIVES_OUTLINED)])
    label = counted("positive", len(positive), drawn)
    if drawn < len(positive):  # a sample outlined: every centre dotted, the dot on the key
        centres = as_numpy(positive[:, :2] + positive[:, 2:]).reshape(-1, 2) / 2
        (marks[0],) = ax.plot(
            *centres.T, "o", color=POSITIVE_COLOUR, markersize=3, mec="black", mew=0.5
        )
        label = f"positive ({len(positive)}, {drawn} drawn, all dotted)"
    keys["positive"] = (POSITIVE_STYLE, label)
    gt = GT_STYLE.draw(ax, gt_boxes)
    order = [keys[name] for name in ("positive", "negative", "ignored") if name in keys]
    box_legend(ax, [*order, (GT_STYLE, counted("GT", gt, gt))], marks=marks)
    return n + drawn


def plot_objectness_maps(
    image: Tensor | np.ndarray,
    maps: Sequence[Tensor],
    path: str | Path,
    *,
    size_px: tuple[int, int] | None = None,
) -> int:
    """The image (titled with its size, the network's input), then one heat map per level:
    each position's highest objectness probability over its anchors. ``maps``: [(H_l, W_l)]
    probabilities."""
    size_px = size_px or (260 * (len(maps) + 1), 300)
    fig, axes = image_figure(size_px, panels=len(maps) + 1, legend=True)
    image_panel(axes[0], image, input_size(image))
    shown = None
    for level, (ax, m) in enumerate(zip(axes[1:], maps)):
        (fh, fw) = m.shape
        # position j covers [j, j + 1), as image_panel's pixels do
        shown = ax.imshow(as_numpy(m), cmap="inferno", vmin=0, vmax=1, extent=(0, fw, fh, 0))
        high = float(m.max()) if m.numel() else 0.0
        title = f"level {level}: {fh}x{fw}, max {high:.2f}"
        ax.set_title(noted(title, stretch_thin_view(ax, fw, fh)), fontsize=8)
        ax.set_axis_off()
    if shown is not None:
        _colour_key(fig, shown, size_px, "objectness (a position's best anchor)")
    save_figure(fig, path)
    return len(maps)


def _colour_key(fig: Figure, shown, size_px: tuple[int, int], what: str) -> None:
    """A horizontal colour bar in the band below the panels (``image_figure(legend=True)``),
    0 and 1 at its ends and ``what`` it measures on its left."""
    band = LEGEND_PX / size_px[1]
    key = fig.add_axes((0.45, band * 0.35, 0.25, band * 0.4))
    fig.colorbar(shown, cax=key, orientation="horizontal", ticks=[])
    for x, text, side in ((-0.01, f"{what}  0", "right"), (1.01, "1", "left")):
        key.text(x, 0.5, text, ha=side, va="center", fontsize=7, transform=key.transAxes)


def plot_nms_before_after(
    image: Tensor | np.ndarray,
    before: Tensor,
    after: Tensor,
    path: str | Path,
    *,
    kept: Tensor | None = None,
    size_px: tuple[int, int] = (1000, 500),
) -> tuple[int, int]:
    """Two panels: the top boxes before NMS, and those kept after it. ``kept``: which of
    ``before`` NMS keeps (a bool per box; None: all), drawn apart from those it suppresses,
    each keyed with its count below the panel."""
    fig, axes = image_figure(size_px, panels=2, legend=True)
    before, after = before.detach().cpu(), after.detach().cpu()
    kept = torch.ones(len(before), dtype=torch.bool) if kept is None else kept.cpu()
    image_panel(axes[0], image, with_input_size(f"before NMS: the top {len(before)} boxes", image))
    # suppressed first, under the kept: a kept box stays visible on the boxes it removed
    gone = SUPPRESSED_STYLE.draw(axes[0], before[~kept])
    stays = NMS_KEPT_STYLE.draw(axes[0], before[kept])
    entries = [(NMS_KEPT_STYLE, f"kept ({stays})"), (SUPPRESSED_STYLE, f"suppressed ({gone})")]
    box_legend(axes[0], entries)
    image_panel(axes[1], image, f"after NMS: the top {len(after)} kept")
    box_legend(axes[1], [(NMS_KEPT_STYLE, f"kept ({NMS_KEPT_STYLE.draw(axes[1], after)})")])
    save_figure(fig, path)
    return len(before), len(after)


def plot_proposals_vs_gt(
    images: Sequence[Tensor | np.ndarray],
    proposals: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    path: str | Path,
    *,
    top_k: int = 10,
    found_within: int = 100,
    iou_threshold: float = 0.5,
    network_input: bool = False,
    size_px: tuple[int, int] | None = None,
) -> int:
    """One panel per image: its top ``top_k`` proposals (magenta), GT boxes found by some
    proposal among its top ``found_within`` at IoU >= ``iou_threshold`` (green) and missed
    ones (red), keyed with their counts in a legend below the panel; the title says both
    counts (a GT box found by the 57th proposal has no drawn proposal on it), and the
    image's size where it is the ``network_input`` (resized)."""
    size_px = size_px or (320 * len(images), 360)
    fig, axes = image_figure(size_px, panels=len(images), legend=True)
    drawn = 0
    for ax, image, props, gts in zip(axes, images, proposals, gt_boxes):
        props, gts = props.detach().cpu(), gts.detach().cpu()
        if len(gts) and len(props):
            found = box_iou(gts, props[:found_within]).max(dim=1).values >= iou_threshold
        else:
            found = torch.zeros(len(gts), dtype=torch.bool)
        title = f"top {top_k} drawn; GT found in top {found_within}: {int(found.sum())}/{len(gts)}"
        image_panel(ax, image, with_input_size(title, image) if network_input else title)
        shown = PROPOSAL_STYLE.draw(ax, props[:top_k])
        hit, missed = FOUND_GT_STYLE.draw(ax, gts[found]), MISSED_GT_STYLE.draw(ax, gts[~found])
        box_legend(
            ax,
            [
                (PROPOSAL_STYLE, counted("proposals", shown, shown)),
                (FOUND_GT_STYLE, counted("GT found", hit, hit)),
                (MISSED_GT_STYLE, counted("GT missed", missed, missed)),
            ],
        )
        drawn += shown
    save_figure(fig, path)
    return drawn


def place_labels(
    boxes: np.ndarray, sizes: np.ndarray, width: float, height: float
) -> list[tuple[float, float] | None]:
    """Where the label of each of the (N, 4) xyxy ``boxes`` goes, in their order (the best
    first): the top-left corner (x, y) of a label of ``sizes`` (N, 2) (w, h), in the pixels of
    an image of ``width`` x ``height`` (y down). Above the box's top-left corner, else inside
    its top, else below it, else inside its bottom, each moved into the image (a box at the
    image's top gets its label inside); None where all four would cover a label placed
    before (the box is drawn without one)."""
    placed, spots = [], []  # placed: the xyxy of each label placed
    for (x1, y1, _, y2), (w, h) in zip(boxes, sizes):
        x = float(min(max(x1, 0), max(width - w, 0)))
        tries = [float(min(max(y, 0), max(height - h, 0))) for y in (y1 - h, y1, y2, y2 - h)]
        frames = [(x, y, x + w, y + h) for y in tries]
        frame = next((f for f in frames if not any(_overlap(f, p) for p in placed)), None)
        if frame is not None:
            placed.append(frame)
        spots.append(None if frame is None else frame[:2])
    return spots


def _overlap(a: tuple, b: tuple) -> bool:
    """Whether xyxy rectangles ``a`` and ``b`` share more than an edge."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _write_labels(
    ax: Axes, boxes: np.ndarray, texts: Sequence[str], colours, *, fontsize: float, alpha: float
) -> int:
    """White text on a box of its colour naming each of the (N, 4) xyxy ``boxes`` of the image
    in ``ax`` (after ``image_panel``), in their order (the best first), where
    ``place_labels`` finds room; returns the labels written."""
    labels = [
        ax.text(
            0,
            0,
            text,
            color="white",
            fontsize=fontsize,
            va="top",
            bbox={"facecolor": colour, "alpha": alpha, "pad": 0.5},
        )
        for text, colour in zip(texts, colours)
    ]
    ax.apply_aspect()  # the panel's final place: how many of its pixels per image pixel
    renderer, to_image = ax.figure.canvas.get_renderer(), ax.transData.inverted()
    frames = []  # each label's coloured box, in image pixels from its anchor at (0, 0)
    for label in labels:
        label.update_bbox_position_size(renderer)
        f = label.get_bbox_patch().get_window_extent(renderer).transformed(to_image)
        frames.append((f.xmin, f.ymin, f.xmax - f.xmin, f.ymax - f.ymin))
    x_max, y_max = max(ax.get_xlim()), max(ax.get_ylim())  # the image (y down)
    spots = place_labels(boxes, np.array([f[2:] for f in frames]).reshape(-1, 2), x_max, y_max)
    for label, (dx, dy, _, _), spot in zip(labels, frames, spots):
        if spot is None:
            label.remove()
        else:
            label.set_position((spot[0] - dx, spot[1] - dy))
    return sum(spot is not None for spot in spots)


def _labelled(total: int, written: int, what: str) -> str:
    """A title's note of the boxes left without a label, if any."""
    return "" if written == total else f"; {what} on {written}, the best first, none over another"


def result_figure(
    image: Tensor | np.ndarray, size_px: tuple[int, int] | None
) -> tuple[Figure, list[Axes]]:
    """A one-panel figure for one image's result: ``size_px``, else the image's own aspect
    with its longest side clamped to [OVERLAY_MIN_SIDE, OVERLAY_MAX_SIDE] pixels."""
    if size_px is not None:
        return image_figure(size_px)
    h, w = image_size(image)
    longest = min(OVERLAY_MAX_SIDE, max(OVERLAY_MIN_SIDE, h, w))
    return fitted_image_figure(h, w, longest)


def plot_proposals(
    image: Tensor | np.ndarray,
    boxes: Tensor | np.ndarray,
    scores: Tensor | np.ndarray,
    path: str | Path,
    *,
    size_px: tuple[int, int] | None = None,
) -> int:
    """Draw proposals with their scores, the best first and brightest; ``size_px`` None: the
    image's shape (``result_figure``)."""
    fig, (ax,) = result_figure(image, size_px)
    stretched = image_panel(ax, image, f"top {len(boxes)} proposals")
    boxes, scores = as_numpy(boxes).reshape(-1, 4), as_numpy(scores).reshape(-1)
    for rank, box in enumerate(boxes):
        # fading down the ranking: the weak ones stay visible without hiding the best
        alpha = 1.0 - 0.7 * rank / max(1, len(boxes) - 1)
        draw_boxes(ax, box, PROPOSAL_COLOUR, width=1.2, alpha=alpha)
    scored = min(len(boxes), PROPOSAL_SCORES)
    texts = [f"{score:.2f}" for score in scores[:scored]]
    written = _write_labels(
        ax, boxes[:scored], texts, [PROPOSAL_COLOUR] * scored, fontsize=6, alpha=0.6
    )
    note = _labelled(len(boxes), written, "scores")
    ax.set_title(noted(f"top {len(boxes)} proposals{note}", stretched), fontsize=8)
    save_figure(fig, path)
    return len(boxes)


def plot_detections(
    image: Tensor | np.ndarray,
    boxes: Tensor | np.ndarray,
    scores: Tensor | np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    size_px: tuple[int, int] | None = None,
) -> int:
    """Detections with their class names and scores, the labels inside the image and none
    over another (``place_labels``: the best placed first; the title says how many were left
    out); ``size_px`` None: the image's shape (``result_figure``)."""
    fig, (ax,) = result_figure(image, size_px)
    stretched = image_panel(ax, image, f"{len(names)} detections")
    boxes, scores = as_numpy(boxes).reshape(-1, 4), as_numpy(scores).reshape(-1)
    tab10 = colormaps["tab10"]
    colours = [tab10(zlib.crc32(name.encode()) % 10) for name in names]  # alike in every run
    for box, colour in zip(boxes, colours):
        draw_boxes(ax, box, colour, width=1.5)
    best = np.argsort(-scores, kind="stable")  # placed first, the best keep their place
    texts = [f"{names[i]} {scores[i]:.2f}" for i in best]
    written = _write_labels(
        ax, boxes[best], texts, [colours[i] for i in best], fontsize=7, alpha=0.7
    )
    title = f"{len(names)} detections{_labelled(len(names), written, 'labels')}"
    ax.set_title(noted(title, stretched), fontsize=8)
    save_figure(fig, path)
    return len(names)


def overlay_name(file_name: str, taken: set[str] | None = None) -> str:
    """The overlay's file name for the image ``file_name``: its name, extension kept, then
    ``.png`` (``a.jpg`` -> ``a.jpg.png``, ``a.png`` -> ``a.png.png``), so that images that
    differ only in their extension keep apart. ``taken``: the names written so far in a run
    (compared without case, as macOS and Windows do); a name met again (images of one name
    in two folders of a dataset) becomes ``a.jpg-2.png``, ``a.jpg-3.png``... in input order,
    and the name given is added to it."""
    base = Path(file_name).name or "image"
    name, n = f"{base}.png", 1
    while taken is not None and name.casefold() in taken:
        n += 1
        name = f"{base}-{n}.png"
    if taken is not None:
        taken.add(name.casefold())
    return name


def save_overlay(
    result: ProposalResult | DetectionResult,
    folder: str | Path,
    *,
    top: int | None = None,
    name: str | None = None,
) -> Path:
    """Draw one inference result over its image into ``folder/name`` (default
    ``overlay_name(result.file_name)``: ``a.jpg`` -> ``a.jpg.png``): proposals (the best
    ``top`` of them, all when None) with :func:`plot_proposals`, detections (all) with
    :func:`plot_detections`. The image is drawn shrunk to at most OVERLAY_MAX_SIDE pixels
    (``load_rgb``'s ``max_side``), the boxes scaled with it, and the PNG has its shape. Returns
    the PNG's path."""
    if not isinstance(result, (ProposalResult, DetectionResult)):
        raise TypeError(f"expected a ProposalResult or DetectionResult, got {type(result)}")
    if result.source is None:
        raise ValueError(
            f"{result.file_name}: the image was given in memory: draw it with "
            "plot_proposals/plot_detections"
        )
    image = load_rgb(result.source, max_side=OVERLAY_MAX_SIDE)
    # result boxes are in the original image's pixels: into the shrunk copy's
    (orig_h, orig_w), (h, w) = result.image_size, image.shape[:2]
    scale = torch.tensor([w / orig_w, h / orig_h] * 2)
    path = Path(folder) / (name or overlay_name(result.file_name))
    if isinstance(result, DetectionResult):
        plot_detections(
            image, result.boxes.detach().cpu().float() * scale, result.scores, result.names, path
        )
    else:
        boxes = result.boxes[:top].detach().cpu().float() * scale
        plot_proposals(image, boxes, result.scores[:top], path)
    return path
