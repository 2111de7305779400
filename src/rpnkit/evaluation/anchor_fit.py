"""``rpnkit anchors``: the report on a model's anchors over a dataset (``anchor_report``,
``AnchorReport``): their coverage of its boxes at training scale (``anchor_coverage``), the
boxes none covers, scale advice and, when asked, anchors fitted to it (``anchor_search``) at
the RPN's positive IoU (``match_threshold``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..config import config_to_dict
from ..data.config import none_readable
from ..data.records import DatasetIndex
from ..data.transforms import DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE
from ..modeling.anchors import AnchorConfig
from ..modeling.presets import ModelConfig
from ..modeling.rpn import RPNConfig
from .anchor_coverage import (
    THRESHOLDS,
    best_anchor_iou,
    collect_gt,
    coverage_table,
    format_coverage,
    scale_advice,
    unmatched,
)
from .anchor_search import fit_anchors


def match_threshold(rpn: RPNConfig) -> float:
    """The IoU at which the RPN makes an anchor a positive: ``fg_iou_threshold``, or OLN's
    ``localization.iou_threshold``."""
    if rpn.objectness_mode == "localization":
        return rpn.localization.iou_threshold
    return rpn.fg_iou_threshold


def describe_anchors(config: AnchorConfig) -> str:
    """One line per level: its sizes and ratios (h / w), then every anchor's width x height."""
    lines = []
    for lv in config.levels:
        if lv.shapes:
            shapes = ", ".join(f"{w:g}x{h:g}" for w, h in lv.shapes)
        else:
            shapes = ", ".join(
                f"{s / math.sqrt(r):.0f}x{s * math.sqrt(r):.0f}"
                for r in lv.ratios
                for s in lv.sizes
            )
            size = "size" if len(lv.sizes) == 1 else "sizes"
            sizes, ratios = (
                ", ".join(f"{v:g}" for v in values) for values in (lv.sizes, lv.ratios)
            )
            shapes = f"{size} {sizes} at ratios {ratios}: {shapes}"
        lines.append(f"  stride {lv.stride:>3}: {shapes}")
    return "\n".join(lines)


@dataclass
class AnchorReport:
    """``rpnkit anchors``: a preset's anchor coverage of a dataset at training scale, the boxes
    no anchor covers, and optionally anchors fitted to the dataset with their coverage."""

    model: ModelConfig
    short_side: int
    threshold: float
    num_boxes: int
    coverage: dict
    unmatched: list[dict]
    fitted: AnchorConfig | None = None
    coverage_fitted: dict | None = None
    advice: str | None = None  # scale_advice: the objects are too small for the anchors
    tile_size: int | None = None  # images larger than this were taken at native resolution
    max_size: int | None = None  # the cap on the longer side of the resize
    source: str | None = None  # the config file the anchors come from (None: the preset's)
    fit_iou: float | None = None  # the RPN's positive IoU, which the fit maximises the boxes at
    matched: dict | None = None  # boxes at fit_iou: {"preset": n, "fitted": n}

    @property
    def fit_improved(self) -> bool:
        """Whether the fit beat the anchors checked (else ``fitted`` is them, unchanged)."""
        return self.fitted is not None and self.fitted != self.model.rpn.anchors

    def fitted_model(self) -> ModelConfig:
        """The preset's config with the fitted anchors (for ``rpnkit train --config``)."""
        if self.fitted is None:
            raise ValueError("no fitted anchors: build the report with fit=True")
        rpn = dataclasses.replace(self.model.rpn, anchors=self.fitted)
        return dataclasses.replace(self.model, rpn=rpn)

    def to_dict(self) -> dict:
        out = {"preset": self.model.preset, "coverage": self.coverage, "unmatched": self.unmatched}
        out["advice"] = self.advice
        if self.fitted is not None:
            out["fitted_anchors"] = config_to_dict(self.fitted)
            out["coverage_fitted"] = self.coverage_fitted
            out["fit"] = {"iou": self.fit_iou, "boxes_matched": self.matched}
            out["fit"]["improved"] = self.fit_improved
        return out

    def format(self, show: int = 20) -> str:
        anchors = self.model.rpn.anchors
        whose = f"preset {self.model.preset}"
        whose = f"{self.source} ({whose})" if self.source is not None else whose
        lines = [
            f"\nanchors of {whose}:\n{describe_anchors(anchors)}",
            f"\nbest-anchor IoU of {self.num_boxes} GT boxes at training scale (shorter side "
            f"{self.short_side}"
            + (f", longer side at most {self.max_size}" if self.max_size else "")
            + (f"; native in images over {self.tile_size} px, tiled" if self.tile_size else "")
            + "): the upper bound of what the RPN can be taught",
            format_coverage(self.coverage),
            f"\n{len(self.unmatched)} box(es) with no anchor at IoU >= {self.threshold}"
            + (":" if self.unmatched else ""),
        ]
        for row in self.unmatched[:show]:
            lines.append(
                f"  {row['file']}: box {row['box_at_training_scale']} best IoU {row['best_iou']}"
            )
        if len(self.unmatched) > show:
            lines.append(f"  ... and {len(self.unmatched) - show} more (all in --json)")
        if self.advice is not None:
            lines.append(f"\n{self.advice}")
        if self.fitted is not None:
            lines += self._format_fit()
        return "\n".join(lines)

    def _format_fit(self) -> list[str]:
        n, iou = self.num_boxes, f"IoU >= {self.fit_iou:g} (the RPN's positive IoU)"
        before, after = self.matched["preset"], self.matched["fitted"]
        levels = ", ".join(f"{t:g}" for t in sorted(set(THRESHOLDS) | {self.fit_iou}))
        kept = f"no size range with fewer boxes at IoU >= {levels}"
        if not self.fit_improved:
            return [
                f"\nno fitted anchors beat the ones above: none found match more than their "
                f"{before} of {n} boxes at {iou} with {kept}. Keeping them."
            ]
        return [
            f"\nfitted anchors: {after} of {n} boxes at {iou}, against {before} for the ones "
            f"above, {kept}; in their layout (sizes increasing with the stride, "
            "ratios h / w shared by the levels):",
            describe_anchors(self.fitted),
            format_coverage(self.coverage_fitted),
        ]


def anchor_report(
    model: ModelConfig,
    index: DatasetIndex,
    *,
    short: int = DEFAULT_SHORT_SIDE,
    max_size: int = DEFAULT_MAX_SIZE,
    threshold: float = 0.3,
    fit: bool = False,
    seed: int = 0,
    tile_size: int | None = None,
    source: str | None = None,
) -> AnchorReport:
    """Coverage of ``index``'s boxes by ``model``'s anchors (at native resolution in the
    images larger than ``tile_size``, when tiled) and, with ``fit``, by anchors fitted to
    them; advice when the objects are too small for the anchors at that scale. ``source``:
    the config file ``model`` was read from, named in the report. A ValueError naming the
    dataset when it has no box to measure (no readable image, or none with a box)."""
    sample = collect_gt(index, short=short, max_size=max_size, tile_size=tile_size)
    if len(sample.boxes) == 0:
        raise ValueError(_no_boxes(index))
    best = best_anchor_iou(model.rpn.anchors, sample)
    report = AnchorReport(
        model,
        short,
        threshold,
        len(best),
        coverage_table(sample, best),
        unmatched(sample, best, threshold),
        advice=scale_advice(
            model.rpn.anchors, sample, short=short, max_size=max_size, tile_size=tile_size
        ),
        tile_size=tile_size,
        max_size=max_size,
        source=source,
    )
    if fit:
        iou = match_threshold(model.rpn)
        report.fitted = fit_anchors(
            model.rpn.anchors,
            sample,
            threshold=iou,
            seed=seed,
            same_scale=model.cascade is not None,
        )
        fitted = best_anchor_iou(report.fitted, sample)
        report.coverage_fitted = coverage_table(sample, fitted)
        report.fit_iou = iou
        report.matched = {"preset": int((best >= iou).sum()), "fitted": int((fitted >= iou).sum())}
    return report


def _no_boxes(index: DatasetIndex) -> str:
    """Why a dataset gives no box to measure the anchors on: no image was read (the first
    skip, and where a CSV's images are looked for), or its images have no (usable) box."""
    if not index.records:
        return none_readable(index, None) + " (no box to check the anchors on)"
    return (
        f"{index.source}: none of its {len(index.records)} image(s) has a box (crowd regions "
        "not counted): no box to check the anchors on"
    )
