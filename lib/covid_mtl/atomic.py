"""The one way files are replaced: a temp file in the same folder, fsynced, renamed over the target.

Readers (the MONAI Label datastore, the infer task loading a model, Slicer fetching a mask) then see either the
old file or the new one, never half of one, even if the process is killed mid-write.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

Writer = Callable[[BinaryIO], None]


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # makes the rename itself durable
    finally:
        os.close(fd)


def stage(dest: str | os.PathLike, data: bytes | Writer | None = None, source: str | os.PathLike | None = None,
          prefix: str | None = None) -> str:
    """A complete, fsynced temp file next to ``dest`` holding ``data`` (bytes, or a function that writes to the
    open file) or a copy of ``source``; :func:`commit` puts it in place. For callers that must stage several
    files before any of them becomes visible (the datastore). ``prefix`` names the temp file (default
    ``.<name>.``) so a caller can find and clean leftovers of a crash."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{dest.name}.", suffix=".tmp", dir=str(dest.parent))
    try:
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            elif callable(data):
                data(out)
            else:
                out.write(data or b"")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are as readable as the folder they land in
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def commit(staged: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Rename a file made by :func:`stage` over ``dest`` and make the rename durable."""
    os.replace(staged, dest)
    _fsync_dir(os.path.dirname(os.path.abspath(dest)))


def atomic_write(dest: str | os.PathLike, data: bytes | Writer | None = None, source: str | os.PathLike | None = None,
                 prefix: str | None = None) -> Path:
    """Write ``data`` (bytes, or a function that writes to the open file) or a copy of ``source`` to ``dest``:
    :func:`stage` then :func:`commit`."""
    tmp = stage(dest, data, source, prefix)
    try:
        commit(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(dest)
