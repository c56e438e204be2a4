"""`knowshift probe | facts | models | export`: which facts a model knows, the fact sources, the
embedded models, and stored probe results as a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from knowshift.cli.common import flags_named, model_args
from knowshift.errors import KnowshiftError
from knowshift.paths import default_workspace


def add_commands(commands) -> None:
    """Register `probe`, `facts`, `models` and `export`."""
    probe = commands.add_parser("probe", help="which facts does a model know (SliCK categories)")
    model_args(probe)
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
    flags_named(ProbeRequest.validate, request)
    if args.out and Path(args.out).suffix not in EXPORT_FORMATS:
        raise KnowshiftError(f"--out {args.out}: use a file ending in .jsonl or .parquet")
    bars = []  # the progress bar, made once the model is loaded and the facts are known

    def loaded(model, targets) -> None:
        print(f"probing {len(targets)} facts of {request.facts} with {args.model} "
              f"({request.estimator}, {args.backend} on {model.device}, "
              f"{str(model.dtype).removeprefix('torch.')})", file=sys.stderr)  # fmt: skip
        bars.append(tqdm(total=len(targets), unit="fact", dynamic_ncols=True))

    try:
        probed = flags_named(
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
