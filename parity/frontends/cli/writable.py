"""Where a command will write, checked before it starts: a bad path is one line and exit
status 2 before any work is done, never a traceback after it (the numbers lost)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from parity.core.errors import NotWritable


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)


def _probe(directory: Path) -> str | None:
    """Why nothing can be created in ``directory`` (None if it can). Tried, not guessed from
    permission bits: root ignores them, a read-only file system does not."""
    try:
        probe = tempfile.mkdtemp(dir=directory, prefix=".parity-probe-")
    except OSError as error:
        return (error.strerror or type(error).__name__).lower()
    os.rmdir(probe)
    return None


def _check_creatable(directory: Path, what: str, path: Path) -> None:
    existing = _nearest_existing(directory.absolute())
    if not existing.is_dir():
        raise NotWritable(f"{what} {path}: {existing} is a file, not a directory")
    problem = _probe(existing)
    if problem:
        raise NotWritable(f"cannot write {what} {path}: {problem}")


def _check_named(path: str | Path, what: str) -> None:
    """An empty path would name the working directory: refused, not taken for it."""
    if not str(path).strip():
        raise NotWritable(f"{what} needs a path, got {str(path)!r}")


def check_directory(path: str | Path, what: str) -> None:
    """``path`` is a directory files can be written in, or one that can be created (parents
    included)."""
    _check_named(path, what)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotWritable(f"{what} {path} is a file, not a directory")
    _check_creatable(path, what, path)


def check_file(path: str | Path, what: str, *, may_create_parents: bool = False) -> None:
    """A file can be written at ``path`` (replacing one that is there); its directory must
    exist unless ``may_create_parents``."""
    _check_named(path, what)
    path = Path(path)
    if path.is_dir():
        raise NotWritable(f"{what} {path} is a directory; name a file")
    if not path.parent.exists() and not may_create_parents:
        raise NotWritable(f"{what} {path}: no such directory {path.parent}")
    _check_creatable(path.parent, what, path)
