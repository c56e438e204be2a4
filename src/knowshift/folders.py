"""Output folders and workspaces, checked before work starts and cleaned up when a command
fails before doing any (the stage API and the command line both use these)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from knowshift.atomic import FolderInUseError
from knowshift.errors import KnowshiftError


@contextmanager
def removed_if_failed(
    path: Path, *, keep_if_any_but: str | None = None, when: Callable[[], bool] | None = None
) -> Iterator[None]:
    """Remove `path` if this command created it and then failed with a KnowshiftError, so a bad
    input found late (a model that does not load) still leaves nothing behind.

    keep_if_any_but: keep the folder when it holds any file besides this one and hidden ones
        (locks, temporary files): then work was done.
    when: remove only if this also holds at the time of the failure.

    A FolderInUseError is never cleaned up after: the folder, even one that did not exist when
    this command started, is another process's work in progress.
    """
    existed = path.exists()
    try:
        yield
    except FolderInUseError:
        raise
    except KnowshiftError:
        work = keep_if_any_but is not None and any(
            p.is_file() and p.name != keep_if_any_but and not p.name.startswith(".")
            for p in path.rglob("*")
        )
        if not existed and path.is_dir() and not work and (when is None or when()):
            shutil.rmtree(path, ignore_errors=True)
        raise


def check_workspace(workspace: str | Path) -> None:
    """Fail now if the workspace cannot hold a results database, without creating anything:
    commands that load a model check it first, and create it only once the model loaded."""
    from knowshift.store import Store, database_path

    path = database_path(workspace)
    if Path(workspace).exists() and not Path(workspace).is_dir():
        raise KnowshiftError(f"--workspace {workspace} is a file; point --workspace at a folder")
    if path.exists():
        Store(path).connection.close()  # raises the one-line error for a damaged database
