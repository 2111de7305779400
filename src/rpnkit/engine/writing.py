"""COCO results JSON written while the model runs: ``CocoResultsWriter`` takes each image's
results as they come and writes them into a temporary file renamed into place at the end
(removed on an error), so a file at the path is always whole.

In the background (``background=True``) a forked process formats and writes the text, fed
the rounded numbers (``EncodedEntries``, 40 bytes a box) through a bounded queue: the thread
that launches the model only rounds and hands over. A thousand proposals per image is 8,000
entries per batch of 8: 9-13 ms of formatting on a fast core, 37 ms on the H200 host's, where
the model takes 25 (docs/performance.md, session 11). The process is forked when the writer
opens, before the inference loop starts its threads; on Linux only (elsewhere forking a
process that has loaded system frameworks is not safe: the caller's thread writes).
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

from .results import DetectionResult, EncodedEntries, ProposalResult

QUEUED_IMAGES = 64  # images handed over and not yet written, at most


class JsonListFile:
    """A JSON list written piece by piece: "[", the non-empty pieces joined by ", ", "]"."""

    def __init__(self, path: str | Path) -> None:
        self.file = open(path, "w")  # noqa: SIM115 (closed by ``close``)
        self.file.write("[")
        self.empty = True

    def add(self, text: str) -> None:
        if text:
            self.file.write(text if self.empty else ", " + text)
            self.empty = False

    def close(self, whole: bool = True) -> None:
        if whole:
            self.file.write("]")
        self.file.close()


class CocoResultsWriter:
    """``with CocoResultsWriter(path) as out: out.add(result)``: the COCO results JSON of
    every result added, ``json.dumps`` of their ``to_coco_results`` lists joined, written as
    they come (module docstring); ``entries`` counts them."""

    def __init__(self, path: str | Path, *, background: bool = False) -> None:
        self.path = Path(path)
        self.entries = 0
        self.background = background and sys.platform == "linux"  # forking elsewhere is unsafe
        self._tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        self._file: JsonListFile | None = None
        self._queue = None
        self._process = None

    def __enter__(self) -> CocoResultsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.background:
            self._file = JsonListFile(self._tmp)
            return self
        context = multiprocessing.get_context("fork")
        self._queue = context.Queue(maxsize=QUEUED_IMAGES)
        self._process = context.Process(
            target=_write_queued, args=(self._queue, str(self._tmp)), daemon=True
        )
        self._process.start()
        return self

    def add(self, result: ProposalResult | DetectionResult) -> None:
        encoded = result.encoded()
        self.entries += len(encoded)
        if self._file is not None:
            self._file.add(encoded.text())
        elif len(encoded):
            self._put(encoded)

    def __exit__(self, kind, error, trace) -> None:
        whole = kind is None
        try:
            if self._file is not None:
                self._file.close(whole=whole)
            else:
                self._end_process(whole)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        if whole:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def _put(self, item: EncodedEntries | None) -> None:
        """Hand ``item`` over, waiting while the queue is full, unless the process has died."""
        while True:
            try:
                self._queue.put(item, timeout=1.0)
                return
            except queue.Full:
                if not self._process.is_alive():
                    raise RuntimeError(self._failure()) from None

    def _end_process(self, whole: bool) -> None:
        """Let the process write the end and exit (``whole``), or stop it at once (an error)."""
        process = self._process
        try:
            if whole:
                self._put(None)
                process.join()
        finally:
            if process.is_alive():
                process.terminate()
                process.join()
            if not whole or process.exitcode != 0:
                self._queue.cancel_join_thread()  # what is still queued may be dropped
            self._queue.close()
        if process.exitcode != 0 and whole:
            raise RuntimeError(self._failure())

    def _failure(self) -> str:
        return (
            f"{self.path}: the process writing the results ended with code "
            f"{self._process.exitcode} (its error is printed above); the file is not written"
        )


def _write_queued(items: multiprocessing.Queue, tmp: str) -> None:
    """The writing process: each queued image's entries as text, until None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    out = JsonListFile(tmp)
    while (encoded := items.get()) is not None:
        out.add(encoded.text())
    out.close()


def write_coco_results(
    path: str | Path,
    results: Iterable[ProposalResult | DetectionResult],
    *,
    background: bool = True,
) -> Path:
    """Every result's entries into the COCO results JSON ``path`` as they come; ``path``."""
    with CocoResultsWriter(path, background=background) as out:
        for result in results:
            out.add(result)
    return out.path
