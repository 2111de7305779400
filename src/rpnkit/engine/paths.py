"""Where commands write: one rule for every file and folder they write (``--out``, ``--json``,
``--plots``, ``--overlays``, a run's folder), checked before any work: a missing folder is
made; a folder where a file is to be written, or a file where a folder is (the path itself
or one of its parents), is a ``ValueError`` in one line naming both."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def writer_token() -> str:
    """A token of this process and writer, for the temporary names of its files."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def temporary_beside(path: str | Path, token: str | None = None) -> Path:
    """The hidden temporary file a writer fills before renaming it to ``path``:
    ``.<name>.<token>.tmp`` beside it (a folder of images being read while it is written
    ignores it; ``token``: the writer's, ``writer_token``, new by default)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{token or writer_token()}.tmp")


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file that stands where ``folder``, or the nearest of its parents that exists, should
    be a folder; None when ``folder`` is one or can be made."""
    folder = Path(folder)
    for entry in (folder, *folder.parents):
        if entry.exists():
            return None if entry.is_dir() else entry
    return None


def check_folder(folder: str | Path, *, name: str | None = None, to: str = "to write in") -> Path:
    """``folder`` as a folder to write in (made now or later): a file in its place, or in the
    place of one of its parents, is a ValueError naming ``name`` (how the folder was given,
    e.g. ``--plots out``; default ``folder``) and that file; ``to``: what the folder is for."""
    folder = Path(folder)
    named = name if name is not None else folder
    blocking = file_in_the_way(folder)
    if blocking == folder:
        raise ValueError(f"{named}: is a file, not a folder {to}")
    if blocking is not None:
        raise ValueError(f"{named}: {blocking} is a file, not a folder")
    return folder


def output_folder(folder: str | Path, *, name: str | None = None, to: str = "to write in") -> Path:
    """``folder`` made (with its parents) before any work, for a command to write in; a file
    in the way (``check_folder``) or a folder that cannot be made is a one-line ValueError."""
    folder = check_folder(folder, name=name, to=to)
    _make(folder, name if name is not None else folder)
    return folder


def output_file(path: str | Path, *, what: str) -> Path:
    """``path`` ready for a ``what`` file (``JSON``, ``PNG``...) to be written there after the
    work: its missing folders made now; a folder at ``path``, or a file in the place of one of
    its folders, is a one-line ValueError, said before the work rather than after it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give the {what} file to write")
    if (blocking := file_in_the_way(path.parent)) is not None:
        raise ValueError(f"{path}: {blocking} is a file, not a folder")
    _make(path.parent, path)
    return path


def _make(folder: Path, named) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # no permission, a read-only disk
        raise ValueError(f"{named}: cannot make the folder {folder} ({err.strerror})") from err
