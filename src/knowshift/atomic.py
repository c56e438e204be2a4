"""Crash-safe files and folders: a finished artefact appears whole or not at all.

A process can be killed at any instant (SIGKILL, the OOM killer, a closed laptop). Every
artefact a rerun reads as complete (a run's config, a stage log, a checkpoint, an export) is
therefore written under a temporary name beginning with a dot and renamed into place with
`os.replace`, which POSIX makes atomic: a reader sees the old version or the new one, never
half of one. Folders (checkpoints, resume state) are swapped in with two renames, and
`recover_dir` puts the previous folder back when a kill falls between them.

`folder_lock` keeps a second process out of a folder whose work is in progress (two trainings
writing one run folder would interleave their checkpoints and metrics). The lock is an advisory
`flock`, which the kernel releases when its holder dies, so a killed run never leaves a stale
lock behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from knowshift.errors import KnowshiftError

LOCK_FILE = ".lock"


class FolderInUseError(KnowshiftError):
    """Another process holds the folder's lock. The folder is that process's work in progress:
    whoever catches this must leave the folder alone."""


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path`, private to this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; on success it replaces `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (flushed to disk before the rename); returns `path`."""
    with writing(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def write_json(path: str | Path, value: Any, **dumps: Any) -> Path:
    """Write `value` as JSON to `path` atomically; `dumps` are json.dumps options."""
    return write_text(path, json.dumps(value, **dumps))


def _previous(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap the finished folder `tmp` in as `target` (a folder cannot be renamed over a
    non-empty one, so the old one is moved aside first and removed last)."""
    recover_dir(target)
    previous = _previous(target)
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        os.replace(target, previous)
    os.replace(tmp, target)
    shutil.rmtree(previous, ignore_errors=True)


def recover_dir(target: Path) -> None:
    """Undo a `replace_dir` that a kill cut between its two renames: the previous folder,
    complete, goes back in place (the new one was never committed)."""
    previous = _previous(target)
    if previous.is_dir() and not target.exists():
        os.replace(previous, target)


@contextmanager
def folder_lock(folder: str | Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold `folder`'s lock while the block runs; another holder raises FolderInUseError, or,
    with `wait`, is waited for (for short critical sections such as a rename into a cache).

    `what` names the work in the message ("study run", "training run"). Where the platform has
    no `flock` (Windows) this only creates the folder.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. the path names a file
        raise KnowshiftError(f"cannot create the folder {folder} ({error.strerror})") from None
    try:
        import fcntl
    except ImportError:  # no advisory locks here: run without one
        yield
        return
    with (folder / LOCK_FILE).open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderInUseError(
                f"{folder} is in use by another knowshift {what} ({holder}); "
                "wait for it to finish, or use another folder"
            ) from None
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
