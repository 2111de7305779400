"""Writing an inference run's results: COCO results JSON, PNG overlays of the first images
drawn as the results stream in (the images are not kept in memory), one file per image: the
image's name with its extension, then ``.png`` (``overlays.overlay_name``), and detections as
annotation files (VOC, YOLO, CSV: ``engine.label_files``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..engine.label_files import PROPOSAL_CLASS, LabelWriter
from ..engine.results import DetectionResult, ProposalResult
from ..engine.runner import Pace
from ..engine.writing import CocoResultsWriter
from .overlays import overlay_name, save_overlay


@dataclass
class Written:
    entries: int
    images: int
    overlays: int
    skipped: int = 0  # images that could not be read (each reported when it happened)
    pace: Pace | None = None  # when the results came: start-up, then the steady rate
    end: float | None = None  # when the file was in place
    labels: str | None = None  # what the label files hold (``LabelWriter.describe``)

    def describe(self, what: str, out: str | Path, overlays: str | Path | None) -> str:
        text = f"wrote {self.entries} {what} for {self.images} image(s) to {out}"
        text += f"; {self.overlays} overlays in {overlays}" if overlays else ""
        text += f"; {self.labels}" if self.labels else ""
        text += f"; {self.skipped} image(s) could not be read" if self.skipped else ""
        return text + (self.pace.summary(self.end) if self.pace is not None else "")


def export_results(
    results: Iterable[ProposalResult | DetectionResult],
    out: str | Path,
    *,
    overlays: str | Path | None = None,
    max_overlays: int = 50,
    overlay_top: int | None = None,
    labels: str | Path | None = None,
    labels_format: str = "voc",
    skipped: list[str] | None = None,
    pace: Pace | None = None,
) -> Written:
    """Consume ``results``: every entry into the COCO results JSON ``out`` as it comes
    (``CocoResultsWriter``, in the background: renamed into place at the end), and the first
    ``max_overlays`` images drawn into ``overlays``, each into a file of its own
    (``a.jpg`` -> ``a.jpg.png``; a name met again in the run -> ``a.jpg-2.png``), so that
    the count is the files written. ``labels``: a folder where each result is also written
    as annotations in ``labels_format`` (``"voc"``, ``"yolo"`` or ``"csv"``:
    ``engine.label_files.LabelWriter``), proposals as detections of the one class
    ``object``, by the JSON's writing process too. ``skipped``: the runtime's list of
    unreadable images, filled as the results stream (for the count); ``pace``: the runtime's
    record of when its batches came (for the start-up and the steady rate, to the file in
    place; without it, the results are timed as they come here)."""
    if pace is None:
        pace = Pace()
        results = (result for _, result in pace.track(([None], r) for r in results))
    images, drawn, taken = 0, 0, set()
    label_writer = None
    if labels is not None:
        label_writer = LabelWriter(labels, format=labels_format, proposal_class=PROPOSAL_CLASS)
    # the labels too are written by the results' writing process, not by this thread
    with CocoResultsWriter(out, background=True, also=label_writer) as written:
        for result in results:
            written.add(result)
            images += 1
            if overlays is not None and drawn < max_overlays:
                name = overlay_name(result.file_name, taken)
                save_overlay(result, overlays, top=overlay_top, name=name)
                drawn += 1
    done = time.perf_counter()
    described = label_writer.describe() if label_writer is not None else None
    return Written(written.entries, images, drawn, len(skipped or []), pace, done, described)
