"""The figure plumbing that the overlay pictures and the charts share, written once.

A picture is a matplotlib figure of one or more side-by-side panels (Agg backend, 100 dpi, so
``size_px`` is the PNG's size in pixels): :func:`image_figure` for images, with thin margins
(and a band below the panels for their legends when asked),
:func:`fitted_image_figure` for one image at its own aspect (:func:`fitted_size`), and
:func:`chart_figure` for charts, with room for axis labels. :func:`image_panel` shows an image
in a panel (pixel j over [j, j + 1), the boxes' edge coordinates; a strip too thin to see
stretched across, :func:`stretch_thin_view`, its title saying so), :func:`draw_boxes` draws
xyxy pixel boxes over it (a :class:`BoxStyle` says how
one kind of box is drawn), :func:`box_legend` keys those kinds below the panel,
:func:`style_chart` labels a chart's axes, and :func:`save_figure` writes the PNG and closes
the figure (at :func:`png_path`: a name without a suffix gets ``.png``, as matplotlib would
give it).

Images are (3, H, W) tensors (uint8, as datasets give them, or float in [0, 1]) or (H, W, 3)
uint8 arrays; :func:`as_hwc` turns
either into an (H, W, 3) array for ``imshow``. The colour constants keep one meaning in every
picture: green GT, red missed GT, yellow positive anchors, blue negative, grey ignored, magenta
proposals. A picture draws each kind of box and keys it in its legend from one
:class:`BoxStyle`, so that the legend shows the colours drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # PNG files only: no display needed, works on headless machines
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.legend_handler import HandlerTuple
from matplotlib.patches import Patch, Rectangle
from torch import Tensor

GT_COLOUR = "#00e000"
MISSED_COLOUR = "#ff2020"
POSITIVE_COLOUR = "#ffd000"
NEGATIVE_COLOUR = "#3090ff"
IGNORED_COLOUR = "#a0a0a0"
PROPOSAL_COLOUR = "#ff40ff"

DPI = 100
TITLE_PX = 24  # the band above a fitted picture's image, for its title
MIN_FITTED_SIDE = 32  # a fitted picture's image is never thinner (a 10000 x 10 strip)
LEGEND_PX = 22  # the band below an image figure's panels kept for their legends (one row)
LEGEND_MIN_WIDTH = 1.5  # a legend key's line width, at least: a 0.5 px faint key does not read
# an image panel is drawn at most this many times longer than thick: a thinner view (a
# 4000 x 50 strip) is stretched across, and its title says so (stretch_thin_view)
MAX_SHOWN_ASPECT = 4.0


def as_numpy(values: Tensor | np.ndarray) -> np.ndarray:
    """A tensor (on any device, with or without grad) or array-like as a numpy array."""
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def as_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """A (3, H, W) tensor (uint8, or float in [0, 1]) or an (H, W, 3) array as an (H, W, 3)
    array."""
    if isinstance(image, Tensor):
        image = image.detach().cpu().permute(1, 2, 0)
        return image.numpy() if image.dtype == torch.uint8 else image.clamp(0, 1).numpy()
    return np.asarray(image)


def _subplots(size_px: tuple[int, int], panels: int) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(
        1, panels, figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI, squeeze=False
    )
    return fig, list(axes[0])


def image_figure(
    size_px: tuple[int, int], panels: int = 1, *, legend: bool = False
) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` side-by-side image panels with thin margins, room for a title;
    ``legend``: a band of LEGEND_PX pixels below them too, for :func:`box_legend`."""
    fig, axes = _subplots(size_px, panels)
    bottom = 0.01 + (LEGEND_PX / size_px[1] if legend else 0.0)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=bottom, top=0.93, wspace=0.03)
    return fig, axes


def fitted_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """(width, height) in pixels of an image of ``height`` x ``width`` scaled to ``longest``
    pixels on its longest side, keeping its aspect (neither side below MIN_FITTED_SIDE)."""
    scale = longest / max(height, width)
    return max(MIN_FITTED_SIDE, round(width * scale)), max(MIN_FITTED_SIDE, round(height * scale))


def fitted_image_figure(height: int, width: int, longest: int) -> tuple[Figure, list[Axes]]:
    """One image panel at the image's own aspect: the image fills a ``fitted_size`` area of
    the PNG, with a ``TITLE_PX`` band above it for the title (no other margin), so that pixel
    (x, y) of the panel lies at PNG pixel (x, y + TITLE_PX)."""
    w_px, h_px = fitted_size(height, width, longest)
    fig, axes = _subplots((w_px, h_px + TITLE_PX), 1)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=h_px / (h_px + TITLE_PX))
    return fig, axes


def chart_figure(size_px: tuple[int, int], panels: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` side-by-side charts with room for axis labels."""
    fig, axes = _subplots(size_px, panels)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    return fig, axes


def png_path(path: str | Path) -> Path:
    """The file a picture given ``path`` is written to: ``path``, with ``.png`` added when it
    has no suffix (matplotlib would add it, unseen by whoever names the file)."""
    path = Path(path)
    return path if path.suffix else path.with_name(path.name + ".png")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG of its pixel size (creating the folder) and close it; returns
    the file written (``png_path``: ``.png`` added to a name without a suffix)."""
    path = png_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)  # pyplot keeps every open figure alive otherwise
    return path


def image_panel(ax: Axes, image: Tensor | np.ndarray, title: str, *, margin: float = 0.0) -> str:
    """Show ``image`` in ``ax`` without axes, titled, the view limited to the image plus
    ``margin`` (a fraction of its size) on every side. Pixel (i, j) covers [j, j + 1) x
    [i, i + 1), the edge coordinates of xyxy boxes: a box (0, 0, w, h) lies on the image's
    border. A view too thin to see is stretched (``stretch_thin_view``); returns its note
    (``""`` if none), which the title's first line ends with."""
    img = as_hwc(image)
    h, w = img.shape[:2]
    # extent: imshow's default centres pixel j on j, half a pixel off the boxes' edges
    ax.imshow(img, extent=(0, w, h, 0))
    ax.set_axis_off()
    # fixed limits: boxes past the border would otherwise stretch the view (anchors reach
    # past it, hence the anchor pictures' margin of 0.25)
    ax.set_xlim(-margin * w, (1 + margin) * w)
    ax.set_ylim((1 + margin) * h, -margin * h)
    note = stretch_thin_view(ax, w * (1 + 2 * margin), h * (1 + 2 * margin))
    ax.set_title(noted(title, note), fontsize=8)
    return note


def noted(title: str, note: str) -> str:
    """``title`` with ``note`` (if any) at the end of its first line."""
    if not note:
        return title
    first, *rest = title.split("\n")
    return "\n".join([f"{first}; {note}", *rest])


def stretch_thin_view(ax: Axes, view_w: float, view_h: float) -> str:
    """Stretch the thin side of ``ax``'s view of ``view_w`` x ``view_h`` data units when, at
    equal scales, it would be drawn thinner than 1/MAX_SHOWN_ASPECT of its long side (or of
    the panel's thickness, if less): a 512 x 6 input in a square panel is a thin band whose
    anchors run together, a 1 x 512 one is not drawn at all. Returns the note for the title
    (``drawn 21x taller``), ``""`` when the view is drawn at equal scales."""
    fig_w, fig_h = ax.figure.get_size_inches() * ax.figure.dpi
    box = ax.get_position(original=True)
    box_w, box_h = box.width * fig_w, box.height * fig_h  # the panel's room, in PNG pixels
    scale = min(box_w / view_w, box_h / view_h)  # PNG pixels per data unit at equal scales
    long_px, thin_px = sorted((view_w * scale, view_h * scale), reverse=True)
    wide = view_w >= view_h
    wanted = min(long_px / MAX_SHOWN_ASPECT, box_h if wide else box_w)
    if thin_px >= wanted - 1:  # within a pixel: equal scales
        return ""
    factor = wanted / thin_px
    ax.set_aspect(factor if wide else 1 / factor)  # the y unit's length over the x unit's
    shown = f"{factor:.2g}" if factor < 10 else f"{factor:.0f}"
    return f"drawn {shown}x {'taller' if wide else 'wider'}"


def draw_boxes(ax: Axes, boxes: Tensor | np.ndarray, colour, width: float = 1.2, **kw) -> int:
    """Outline (N, 4) xyxy pixel boxes; ``kw`` goes to the patches (alpha, linestyle).
    Returns N."""
    boxes = as_numpy(boxes).reshape(-1, 4)
    for x1, y1, x2, y2 in boxes:
        ax.add_patch(
            Rectangle(
                (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=width, **kw
            )
        )
    return len(boxes)


@dataclass(frozen=True)
class BoxStyle:
    """How one kind of box is outlined: its colour (one of the ``*_COLOUR`` constants), line
    width, opacity and line style. A picture draws the kind (:meth:`draw`) and keys it in its
    legend (:meth:`key`) from the same style, so that the two never disagree."""

    colour: str
    width: float = 1.2
    alpha: float = 1.0
    linestyle: str = "-"

    def draw(self, ax: Axes, boxes: Tensor | np.ndarray) -> int:
        """Outline (N, 4) xyxy pixel boxes in this style; returns N."""
        return draw_boxes(
            ax, boxes, self.colour, width=self.width, alpha=self.alpha, linestyle=self.linestyle
        )

    def key(self, label: str) -> Patch:
        """The legend's key for this kind: an unfilled box of its colour and line style, opaque
        and at least LEGEND_MIN_WIDTH wide (the boxes of 0.5 px at half opacity, drawn by the
        hundred, read as a colour; one key drawn so would not)."""
        return Patch(
            facecolor="none",
            edgecolor=self.colour,
            linewidth=max(self.width, LEGEND_MIN_WIDTH),
            linestyle=self.linestyle,
            label=label,
        )


def box_legend(
    ax: Axes,
    entries: Sequence[tuple[BoxStyle, str]],
    *,
    extra: Sequence[tuple[Artist, str]] = (),
    marks: dict[int, Artist] | None = None,
) -> Legend:
    """A legend of the (style, label) ``entries`` in one row centred just below the panel
    ``ax``: outside the image, in the band that ``image_figure(..., legend=True)`` keeps.
    ``extra``: (artist, label) pairs keyed after them as drawn (a marker, say); ``marks``:
    a marker drawn on entry i's key (the boxes' centres, say), as drawn."""
    marks = marks or {}
    handles = [style.key(label) for style, label in entries]
    handles = [(key, marks[i]) if i in marks else key for i, key in enumerate(handles)]
    legend = ax.legend(
        handles=handles + [artist for artist, _ in extra],
        labels=[label for _, label in entries] + [label for _, label in extra],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),  # the panel's bottom edge, once its aspect is applied
        ncol=len(entries) + len(extra),
        fontsize=7,
        frameon=False,
        handlelength=1.8,
        handletextpad=0.4,
        columnspacing=1.0,
        borderaxespad=0.2,
        handler_map={tuple: HandlerTuple(ndivide=1)},  # a mark on its box's key
    )
    # the legend's keys are copies that keep the dashes but not the style's name ('solid'):
    # named again, so that a key says the style it draws (a marked key's first copy: its box)
    for key, (style, _) in zip(legend.legend_handles, entries):
        key.set_linestyle(style.linestyle)
    return legend


def style_chart(
    ax: Axes,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    log_x: bool = False,
    log_y: bool = False,
    legend_fontsize: float = 7,
) -> None:
    """Label a chart's axes, title it, grid it faintly, set the limits and log scales given,
    and add a legend when it has labelled lines (an empty legend would draw an empty box)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_fontsize)
