"""What several commands share: the output-folder and workspace checks of the commands that
train or probe, and the arguments, pair resolution and result storing of `knowshift analyze` and
`knowshift restore`. Imports nothing from the command modules (cli, cli_*), so each can use it."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from knowshift.atomic import FolderInUseError
from knowshift.errors import KnowshiftError
from knowshift.paths import default_workspace


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


def pair_arguments(parser: argparse.ArgumentParser, limit: int = 500) -> None:
    """What to compare and on which held-out facts."""
    parser.add_argument(
        "--run", help="a run folder (knowshift train --out): its base, checkpoint, facts and set"
    )
    parser.add_argument("--base", help="the base model (default: the run's, else smollm2-135m)")
    parser.add_argument(
        "--tuned", help="the fine-tuned model: a model folder, hub id or run folder"
    )
    parser.add_argument(
        "--adapter", help="a LoRA adapter folder on the base, as the fine-tuned model"
    )
    parser.add_argument("--checkpoint", default="last", help="of a run: last or early_stop")
    parser.add_argument(
        "--data", help="the run's training set folder (default: recorded in the run)"
    )
    parser.add_argument("--facts", help="fact source (default: the run's, else geo)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--relations", nargs="+")
    parser.add_argument("--limit", type=int, default=limit, help="held-out facts to use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workspace", default=str(default_workspace()))


def resolve(args: argparse.Namespace):
    """The pair, the facts and the held-out targets the arguments name."""
    from knowshift.facts import load_facts
    from knowshift.facts.select import select_facts

    if args.limit is not None and args.limit < 1:
        raise KnowshiftError("--limit must be at least 1")
    from knowshift.analysis.pair import checked_pair

    pair = checked_pair(args.run, base=args.base, tuned=args.tuned, adapter=args.adapter,
                        checkpoint=args.checkpoint, facts_spec=args.facts, data=args.data)  # fmt: skip
    facts = load_facts(pair.facts_spec)
    limit = getattr(args, "pool", None) or args.limit
    targets = select_facts(facts, args.relations, args.split, limit)
    return pair, facts, targets


def common_params(args: argparse.Namespace, pair) -> dict:
    return {"facts": pair.facts_spec, "split": args.split, "relations": args.relations,
            "limit": args.limit, "seed": args.seed, "base": pair.base, "tuned": pair.tuned,
            "adapter": pair.adapter}  # fmt: skip


def store_result(args, kind: str, subject: str, params: dict, result) -> None:
    """Store an analysis result (a dataclass or a plain dict) in the workspace's database."""
    from knowshift.store import Store

    record = result if isinstance(result, dict) else asdict(result)
    with Store.for_workspace(args.workspace) as store:
        analysis_id = store.put_analysis(kind, subject, params, record)
    print(f"stored as analysis {analysis_id} ({kind}, {subject})", file=sys.stderr)
