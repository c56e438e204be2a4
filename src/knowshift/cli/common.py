"""What several commands share: the output-folder and workspace checks of the commands that
train or probe, and the arguments, pair resolution and result storing of `knowshift analyze` and
`knowshift restore`. Imports nothing from the command modules (cli, cli_*), so each can use it."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from knowshift.errors import KnowshiftError
from knowshift.folders import check_workspace, removed_if_failed  # noqa: F401 - the commands' too
from knowshift.paths import default_workspace


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


def model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="smollm2-135m", help="embedded name, local path or hub id"
    )
    parser.add_argument("--adapter", help="a PEFT adapter directory to apply")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bf16 where fast), float32, bfloat16, float16"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow a model's own code to run"
    )
    parser.add_argument(
        "--workspace", default=str(default_workspace()), help="folder of the results database"
    )


# Options of `build` that go into the recipe's spec (the flag of `frac_unknown` is --frac-unknown).


FLAGS = {"vllm_args": "--vllm-arg", "facts": "--facts", "backend": "--backend"}


def flags_named(function, request):
    """`function(request)`, its FieldErrors naming the command line's flag."""
    from knowshift.api import FieldError

    try:
        return function(request)
    except FieldError as error:
        flag = FLAGS.get(error.field, "--" + error.field.replace("_", "-"))
        raise error.named(flag) from None
