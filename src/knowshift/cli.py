"""The `knowshift` command line. Only the commands that need torch import it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.paths import default_workspace


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a user-fixable problem prints one line and exits with status 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except KnowshiftError as error:
        _print_error(str(error))
        return 2
    except KeyboardInterrupt:
        print(
            "knowshift: interrupted; finished batches are stored, rerun to resume", file=sys.stderr
        )
        return 130


def _print_error(message: str) -> None:
    # One line whatever the message holds, so scripts can grep it and users see it whole.
    print(f"knowshift: error: {' '.join(message.splitlines())}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (still exit status 2)."""

    def error(self, message: str):
        _print_error(f"{message} (see {self.prog} --help)")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="knowshift", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    probe = commands.add_parser("probe", help="which facts does a model know (SliCK categories)")
    _model_args(probe)
    probe.add_argument(
        "--facts",
        default="geo",
        help="fact source: geo, entity-questions:DIR, popqa:FILE, jsonl:FILE, csv:FILE",
    )
    probe.add_argument("--relations", nargs="+", help="only these relations")
    probe.add_argument("--split", default="test", help="train, dev, test or all (default test)")
    probe.add_argument(
        "--estimator", default="exact", help="exact (default), sampling, greedy, mastery"
    )
    probe.add_argument(
        "--n-exemplar-sets", type=int, default=10, help="Nex few-shot prompts per fact (10)"
    )
    probe.add_argument("--k-shot", type=int, default=4, help="exemplars per prompt (4)")
    probe.add_argument("--n-samples", type=int, help="samples per prompt (sampling 16, mastery 10)")
    probe.add_argument("--temperature", type=float, help="sampling temperature (0.5; mastery 0.7)")
    probe.add_argument("--top-k", type=int, help="top-k for sampling (40; mastery 50)")
    probe.add_argument("--max-new-tokens", type=int, help="answer length cap (16; mastery 32)")
    probe.add_argument(
        "--prompt-format", default="plain", help="plain (Q:/A:) or chat (the model's chat template)"
    )
    probe.add_argument("--seed", type=int, default=0, help="seed of exemplar sets and samples")
    probe.add_argument("--limit", type=int, help="probe at most N facts, spread over relations")
    probe.add_argument("--out", help="also write the results to FILE (.jsonl or .parquet)")
    probe.set_defaults(handler=_probe)

    facts = commands.add_parser("facts", help="summarise a fact source")
    facts.add_argument("source", nargs="?", default="geo")
    facts.set_defaults(handler=_facts)

    models = commands.add_parser("models", help="list the embedded models")
    models.set_defaults(handler=_models)

    export = commands.add_parser("export", help="export stored probe results")
    export.add_argument("--workspace", default=str(default_workspace()))
    export.add_argument("--model-fingerprint")
    export.add_argument("--params-key")
    export.add_argument("--out", required=True, help="FILE.jsonl or FILE.parquet")
    export.set_defaults(handler=_export)
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
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


def _probe(args: argparse.Namespace) -> int:
    from knowshift.facts import load_facts
    from knowshift.facts.select import select_facts
    from knowshift.probe.estimators import ProbeConfig
    from knowshift.probe.prompts import PROMPT_FORMATS, exemplar_sets
    from knowshift.probe.run import validate_config
    from knowshift.store.export import EXPORT_FORMATS

    # Check everything that needs no model first, so bad input fails in a second.
    config = ProbeConfig.for_estimator(
        args.estimator,
        n_exemplar_sets=args.n_exemplar_sets,
        k_shot=args.k_shot,
        n_samples=args.n_samples,
        temperature=args.temperature,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        prompt_format=args.prompt_format,
        seed=args.seed,
    )
    validate_config(config)
    if config.prompt_format not in PROMPT_FORMATS:
        raise unknown_name("prompt format", config.prompt_format, PROMPT_FORMATS)
    if args.out and Path(args.out).suffix not in EXPORT_FORMATS:
        raise KnowshiftError(f"--out {args.out}: use a file ending in .jsonl or .parquet")
    if args.limit is not None and args.limit < 1:
        raise KnowshiftError("--limit must be at least 1")
    facts = load_facts(args.facts)
    targets = select_facts(facts, args.relations, args.split, args.limit)
    for relation in sorted({f.relation for f in targets}):
        exemplar_sets(facts, relation, 1, config.k_shot, config.seed)  # enough dev facts?
    return _run_probe(args, config, facts, targets)


def _run_probe(args, config, facts, targets) -> int:
    from tqdm import tqdm

    from knowshift.models import load_model
    from knowshift.probe.prompts import prompt_format
    from knowshift.probe.run import category_table, probe
    from knowshift.store import Store
    from knowshift.store.export import export_rows

    _quiet_transformers()
    with Store.for_workspace(args.workspace) as store:
        loaded = load_model(
            args.model, device=args.device, dtype=args.dtype, adapter=args.adapter,
            trust_remote_code=args.trust_remote_code,
        )  # fmt: skip
        prompt_format(config.prompt_format, loaded.tokenizer)  # chat needs a template: fail now
        print(f"probing {len(targets)} facts of {facts.source} with {args.model} "
              f"({config.estimator}, {loaded.device}, {str(loaded.dtype).removeprefix('torch.')})", file=sys.stderr)  # fmt: skip
        with tqdm(total=len(targets), unit="fact", dynamic_ncols=True) as bar:
            results = probe(loaded, facts, targets, config, store, progress=bar.update)
        by_id = {f.id: f for f in targets}
        print(category_table(results, by_id))
        if args.out:
            rows = [
                r
                for r in store.probe_rows(loaded.fingerprint, results[0].params_key)
                if r["fact_id"] in by_id
            ]
            print(f"wrote {export_rows(rows, args.out)}", file=sys.stderr)
    return 0


def _facts(args: argparse.Namespace) -> int:
    from collections import Counter

    from knowshift.facts import load_facts

    facts = load_facts(args.source)
    counts = Counter((f.relation, f.split.value) for f in facts.facts)
    print(f"{facts.source}: {len(facts.facts)} facts, {len(facts.relations)} relations")
    print(f"{'relation':<24} {'train':>7} {'dev':>7} {'test':>7}  question")
    for name, relation in sorted(facts.relations.items()):
        row = " ".join(f"{counts[(name, s)]:>7}" for s in ("train", "dev", "test"))
        print(f"{name:<24} {row}  {relation.question_templates[0]}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from knowshift.models.embedded import EMBEDDED_MODELS

    for model in EMBEDDED_MODELS.values():
        print(f"{model.name:<16} {model.description}\n{'':<16} install: {model.install}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from knowshift.store import Store, database_path
    from knowshift.store.export import EXPORT_FORMATS, export_rows

    if Path(args.out).suffix not in EXPORT_FORMATS:
        raise KnowshiftError(f"--out {args.out}: use a file ending in .jsonl or .parquet")
    path = database_path(args.workspace)
    if not path.is_file():  # do not leave an empty database behind a mistyped workspace
        raise KnowshiftError(
            f"no results database {path}; check --workspace or run knowshift probe"
        )
    with Store(path) as store:
        rows = store.probe_rows(args.model_fingerprint, args.params_key)
    if not rows:
        raise KnowshiftError(
            f"no probe results in {path} for that selection; run knowshift probe first"
        )
    print(f"wrote {len(rows)} rows to {export_rows(rows, args.out)}")
    return 0


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
