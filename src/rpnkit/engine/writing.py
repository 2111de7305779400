"""COCO results JSON written while the model runs: ``CocoResultsWriter`` takes each image's
results as they come and writes them into a temporary file of its own, renamed into place at
the end (removed on an error), so a file at the path is always whole.

In the background (``background=True``) a forked process rounds, formats and writes the text,
sent each image's boxes and scores as they are (``EncodedEntries``, pickled, 20 bytes a
float32 box) through a pipe: the thread that launches the model only hands over (12 us an
image of 1,000 boxes on the 2-core CPU; rounding there too held effnet's ``propose --top
1000`` at 0.73 of its RPN on the H200, docs/performance.md, session 12). A thousand proposals
per image is 8,000 entries per batch of 8: about 5 ms of the process's time on the 2-core
CPU, where the model takes 25 on the H200. The process is forked when the writer
opens, before the inference loop starts its threads; only on Linux (elsewhere forking a
process that has loaded system frameworks is not safe) and not from a daemonic process
(which may not have children): otherwise the caller's thread writes. The parent gone, the
process sees the pipe end, removes the temporary file and exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

from .paths import output_file, temporary_beside
from .results import DetectionResult, ProposalResult, each_result

PIPE_BYTES = 1 << 20  # the pipe to the process holds ~50 images of 1,000 boxes (Linux's limit)
_F_SETPIPE_SZ = 1031  # Linux's fcntl command to resize a pipe


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
        self.background = background
        self.entries = 0
        self._tmp: Path | None = None
        self._file: JsonListFile | None = None
        self._sender = None
        self._process = None

    def __enter__(self) -> CocoResultsWriter:
        output_file(self.path, what="JSON")  # its folders made; a folder or file in the way
        # hidden: a folder of images being read while this is written there ignores it
        tmp = temporary_beside(self.path)
        try:  # a folder that cannot be written to says so before any inference
            open(tmp, "x").close()
        except OSError as err:
            raise ValueError(f"{self.path}: cannot write the results there ({err})") from err
        self._tmp, self.entries = tmp, 0
        started = False
        if self.background and _can_fork():
            with contextlib.suppress(OSError):  # no process to be had: write in this thread
                self._start_process()
                started = True
        if not started:
            self._file = JsonListFile(tmp)
        return self

    def add(self, result: ProposalResult | DetectionResult) -> None:
        if self._tmp is None:
            raise RuntimeError("CocoResultsWriter.add is for inside its with block")
        if not isinstance(result, (ProposalResult, DetectionResult)):
            raise TypeError(
                "write_coco_results takes ProposalResult and DetectionResult objects (what "
                f"propose and detect return), got {type(result).__name__}"
            )
        encoded = result.encoded()
        self.entries += len(encoded)
        if self._file is not None:
            self._file.add(encoded.text())
        elif len(encoded):  # pickled here: an error is the caller's, not lost in a thread
            self._send(pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL))

    def __exit__(self, kind, error, trace) -> None:
        whole = kind is None
        try:
            if self._file is not None:
                self._file.close(whole=whole)
            elif self._process is not None:
                self._end_process(whole)
            if whole:
                self._tmp.replace(self.path)
        finally:
            self._tmp.unlink(missing_ok=True)  # gone already once renamed
            self._tmp = self._file = self._sender = self._process = None

    def _start_process(self) -> None:
        import fcntl  # Linux only, as the process

        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        with contextlib.suppress(OSError):  # a larger pipe where the system allows it
            fcntl.fcntl(sender.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
        process = context.Process(
            target=_write_received, args=(receiver, sender, str(self._tmp)), daemon=True
        )
        try:
            process.start()
        finally:
            receiver.close()  # the process's end: it alone reads
        self._sender, self._process = sender, process

    def _send(self, data: bytes) -> None:
        try:
            self._sender.send_bytes(data)  # waits while the pipe is full
        except OSError as err:  # the process has ended: nobody reads
            self._process.join()
            raise RuntimeError(self._failure()) from err

    def _end_process(self, whole: bool) -> None:
        """Let the process write the end and exit (``whole``), or stop it (an error)."""
        process = self._process
        try:
            if whole:
                self._send(b"")  # the end
                process.join()
        finally:
            self._sender.close()  # on an error the process sees the pipe end
            if process.is_alive() and not whole:
                process.terminate()
            process.join()
        if whole and process.exitcode != 0:
            raise RuntimeError(self._failure())

    def _failure(self) -> str:
        return (
            f"{self.path}: the process writing the results ended with code "
            f"{self._process.exitcode} (its error is printed above); the file is not written"
        )


def _can_fork() -> bool:
    return sys.platform == "linux" and not multiprocessing.current_process().daemon


def _write_received(receiver, sender, tmp: str) -> None:
    """The writing process: each image's entries as text until an empty message; at the
    pipe's end (the parent gone without finishing) the temporary file removed, exit code 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    sender.close()  # this process's copy of the parent's end, so that the end can come
    out = JsonListFile(tmp)
    try:
        while data := receiver.recv_bytes():
            out.add(pickle.loads(data).text())
    except EOFError:
        out.close(whole=False)
        Path(tmp).unlink(missing_ok=True)
        raise SystemExit(1) from None
    out.close()


def write_coco_results(
    path: str | Path,
    results: Iterable[ProposalResult | DetectionResult],
    *,
    background: bool = True,
) -> Path:
    """Every result's entries into the COCO results JSON ``path`` as they come (one result
    alone too); ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"write_coco_results(path, results): path must be a file's path, got "
            f"{type(path).__name__} (the results come second)"
        )
    results = each_result(results, "write_coco_results")
    with CocoResultsWriter(path, background=background) as out:
        for result in results:
            out.add(result)
    return out.path
