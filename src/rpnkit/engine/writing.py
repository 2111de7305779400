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

Other files written from each result (``also``: ``label_files.LabelWriter``, ``detect
--labels``) go the same way: the caller's thread makes each result's small job, sent with its
entries, and the process writes it after them, in order (``Sidecar``). An error of the
process (a file that cannot be written) is sent back and raised in the caller's thread at its
next result or at the end: a ``ValueError`` as it was raised, anything else a
``RuntimeError`` naming the results file.
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
from typing import Any, Protocol

from .paths import output_file, temporary_beside
from .results import DetectionResult, ProposalResult, each_result

PIPE_BYTES = 1 << 20  # the pipe to the process holds ~50 images of 1,000 boxes (Linux's limit)
_F_SETPIPE_SZ = 1031  # Linux's fcntl command to resize a pipe
ERROR_CHARS = 2000  # what of the process's error comes back: well under a pipe's 64 KiB


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


class Sidecar(Protocol):
    """Files that a ``CocoResultsWriter`` writes from each result too, after its entries:
    ``prepare`` (checks, before any work) and ``job`` (per result, in order: small and
    picklable) run in the caller's thread; ``open``, ``write`` and ``close`` (``whole``: the
    run ended without an error) where the entries are written, the writing process's copy of
    the object or the caller's thread; ``close(False)`` also in the caller's thread after an
    error (what the process left half-written removed)."""

    def prepare(self) -> None: ...
    def job(self, result: ProposalResult | DetectionResult) -> Any: ...
    def open(self) -> None: ...
    def write(self, job: Any) -> None: ...
    def close(self, whole: bool = True) -> None: ...


class CocoResultsWriter:
    """``with CocoResultsWriter(path) as out: out.add(result)``: the COCO results JSON of
    every result added, ``json.dumps`` of their ``to_coco_results`` lists joined, written as
    they come (module docstring); ``entries`` counts them. ``also``: other files written
    from each result by the same writer (``Sidecar``)."""

    def __init__(
        self, path: str | Path, *, background: bool = False, also: Sidecar | None = None
    ) -> None:
        self.path = Path(path)
        self.background = background
        self.also = also
        self.entries = 0
        self._tmp: Path | None = None
        self._file: JsonListFile | None = None
        self._sender = self._errors = None
        self._process = None

    def __enter__(self) -> CocoResultsWriter:
        if self.also is not None:  # its checks before anything is made
            self.also.prepare()
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
            if self.also is not None:
                try:
                    self.also.open()
                except BaseException:
                    self.__exit__(*sys.exc_info())
                    raise
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
        job = self.also.job(result) if self.also is not None else None
        self.entries += len(encoded)
        if self._file is not None:
            self._file.add(encoded.text())
            if job is not None:
                self.also.write(job)
        elif len(encoded) or job is not None:  # pickled here: an error is the caller's
            self._send(pickle.dumps((encoded, job), protocol=pickle.HIGHEST_PROTOCOL))

    def __exit__(self, kind, error, trace) -> None:
        whole = kind is None
        try:
            if self._file is not None:
                self._file.close(whole=whole)
            elif self._process is not None:
                self._end_process(whole)  # the process has closed its copy of ``also``
            if self.also is not None:
                self.also.close(whole)  # in this thread, its files; else nothing open here
            if whole:
                self._tmp.replace(self.path)
        except BaseException:
            if self.also is not None:
                self.also.close(False)  # what was left half-written removed
            raise
        finally:
            self._tmp.unlink(missing_ok=True)  # gone already once renamed
            if self._errors is not None:
                self._errors.close()
            self._tmp = self._file = self._sender = self._errors = self._process = None

    def _start_process(self) -> None:
        import fcntl  # Linux only, as the process

        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        errors, error_sender = context.Pipe(duplex=False)  # the process's error, back
        with contextlib.suppress(OSError):  # a larger pipe where the system allows it
            fcntl.fcntl(sender.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
        process = context.Process(
            target=_write_received,
            args=(receiver, sender, error_sender, str(self._tmp), self.also),
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            errors.close()
            raise
        finally:
            receiver.close()  # the process's end: it alone reads
            error_sender.close()  # and it alone writes there
        self._sender, self._errors, self._process = sender, errors, process

    def _send(self, data: bytes) -> None:
        try:
            self._sender.send_bytes(data)  # waits while the pipe is full
        except OSError as err:  # the process has ended: nobody reads
            self._process.join()
            raise self._failure() from err

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
            raise self._failure()

    def _failure(self) -> Exception:
        """The process's error as the caller's: a ValueError (a file it could not write) as
        it was raised, another one a RuntimeError naming the results file and it; without
        one (the process killed), its exit code."""
        error = None
        with contextlib.suppress(Exception):  # nothing sent (the process killed): the code
            if self._errors.poll():
                error = self._errors.recv()
        if isinstance(error, tuple) and len(error) == 2:  # (the error's type, its text)
            kind, text = error
            if kind == "ValueError":
                return ValueError(text)
            return RuntimeError(
                f"{self.path}: the process writing the results failed ({kind}: {text}); the "
                "file is not written"
            )
        return RuntimeError(
            f"{self.path}: the process writing the results ended with code "
            f"{self._process.exitcode} (its error is printed above); the file is not written"
        )


def _can_fork() -> bool:
    return sys.platform == "linux" and not multiprocessing.current_process().daemon


def _write_received(receiver, sender, errors, tmp: str, also: Sidecar | None) -> None:
    """The writing process: each image's entries as text, then its job for ``also``, until
    an empty message. At the pipe's end (the parent gone without finishing), or on an error
    (sent to the parent through ``errors``), the temporary files removed, exit code 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    sender.close()  # this process's copy of the parent's end, so that the end can come
    out = JsonListFile(tmp)
    try:
        if also is not None:
            also.open()
        while data := receiver.recv_bytes():
            encoded, job = pickle.loads(data)
            out.add(encoded.text())
            if job is not None:
                also.write(job)
        out.close()
        if also is not None:
            also.close(True)
    except Exception as err:  # EOFError: the parent is gone, nobody to tell
        if not isinstance(err, EOFError):  # as text, short: the pipe never fills, and a
            text = " ".join(str(err).split())  # message always unpickles
            text = text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + " ..."
            with contextlib.suppress(Exception):
                errors.send((type(err).__name__, text))
        out.close(whole=False)
        Path(tmp).unlink(missing_ok=True)
        if also is not None:
            with contextlib.suppress(Exception):
                also.close(False)
        raise SystemExit(1) from None


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
