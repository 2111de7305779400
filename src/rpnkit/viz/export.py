"""Writing an inference run's results: COCO results JSON, and PNG overlays of the first images
drawn as the results stream in (the images are not kept in memory)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..engine.results import DetectionResult, ProposalResult
from ..engine.runner import Pace
from ..engine.writing import CocoResultsWriter
from .overlays import save_overlay


@dataclass
class Written:
    entries: int
    images: int
    overlays: int
    skipped: int = 0  # images that could not be read (each reported when it happened)
    first_result_s: float | None = None  # from the call to the first batch's results
    steady_s: float | None = None  # from the first batch's results to the file in place
    steady_images: int = 0  # the images after the first batch

    @property
    def steady_images_per_s(self) -> float | None:
        """The images after the first batch over the time they took, writing included: the
        run's rate with its start-up (workers, the device's first batches) left out."""
        if self.steady_images < 1 or not self.steady_s:
            return None
        return self.steady_images / self.steady_s

    def describe(self, what: str, out: str | Path, overlays: str | Path | None) -> str:
        text = f"wrote {self.entries} {what} for {self.images} image(s) to {out}"
        text += f"; {self.overlays} overlays in {overlays}" if overlays else ""
        text += f"; {self.skipped} image(s) could not be read" if self.skipped else ""
        if self.first_result_s is not None:
            text += f" (first results after {self.first_result_s:.2f} s"
            rate = self.steady_images_per_s
            text += f", then {rate:.1f} images/s)" if rate is not None else ")"
        return text


def export_results(
    results: Iterable[ProposalResult | DetectionResult],
    out: str | Path,
    *,
    overlays: str | Path | None = None,
    max_overlays: int = 50,
    overlay_top: int | None = None,
    skipped: list[str] | None = None,
    pace: Pace | None = None,
) -> Written:
    """Consume ``results``: every entry into the COCO results JSON ``out`` as it comes
    (``CocoResultsWriter``, in the background: renamed into place at the end), and the first
    ``max_overlays`` images drawn into ``overlays``. ``skipped``: the runtime's list of
    unreadable images, filled as the results stream (for the count); ``pace``: the runtime's
    record of when its batches came (for the start-up and the steady rate; without it, when
    the results came here)."""
    images, drawn, start, first = 0, 0, time.perf_counter(), None
    with CocoResultsWriter(out, background=True) as written:
        for result in results:
            first = time.perf_counter() if first is None else first
            written.add(result)
            images += 1
            if overlays is not None and drawn < max_overlays:
                save_overlay(result, overlays, top=overlay_top)
                drawn += 1
    end, done = time.perf_counter(), (written.entries, images, drawn, len(skipped or []))
    if pace is not None and pace.first is not None:  # the batches' own times
        first, later = pace.first, pace.later
    elif first is None:  # no result
        return Written(*done)
    else:  # when the results came here
        later = images - 1
    return Written(*done, first_result_s=first - start, steady_s=end - first, steady_images=later)
