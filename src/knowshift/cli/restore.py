"""`knowshift restore`, `knowshift analyze restore-sweep` and `knowshift analyze benchmarks`
(registered by cli and cli.analyze)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from knowshift.errors import KnowshiftError
from knowshift.paths import default_workspace

MODES = ("top", "bottom", "random")
REGIONS = ("layers", "mlp", "attention", "all")
DEFAULT_PERCENTS = (1, 3, 5, 10, 20, 40, 60)


def add_commands(commands) -> None:
    """Register the top-level `restore` command."""
    restore = commands.add_parser(
        "restore", help="reset part of a fine-tuning update to the base weights; write the model"
    )
    restore.add_argument("--base", help="the base model (default: the run's)")
    restore.add_argument(
        "--tuned", required=True, help="a run folder, model folder or LoRA adapter folder"
    )
    restore.add_argument("--checkpoint", default="last", help="of a run: last or early_stop")
    restore.add_argument(
        "--fraction",
        type=float,
        required=True,
        help="share of the ranked weights to reset, e.g. 0.2",
    )
    restore.add_argument(
        "--mode", default="top", help="top (largest relative change), bottom, random"
    )
    restore.add_argument("--region", default="layers", help="layers (default), mlp, attention, all")
    restore.add_argument("--seed", type=int, default=0, help="of the random mode")
    restore.add_argument("--out", required=True, help="folder for the restored model")
    restore.add_argument("--workspace", default=str(default_workspace()))
    restore.set_defaults(handler=_restore)


def add_analyses(kinds, pair_arguments) -> None:
    """Register `analyze restore-sweep` and `analyze benchmarks`."""
    sweep = kinds.add_parser(
        "restore-sweep", help="restore the top/bottom/random k%% of the update; QA at each k"
    )
    pair_arguments(sweep)
    sweep.add_argument("--percents", type=float, nargs="+", default=list(DEFAULT_PERCENTS),
                       help="k values in percent (default 1 3 5 10 20 40 60)")  # fmt: skip
    sweep.add_argument("--modes", nargs="+", default=["top"], help="top, bottom, random")
    sweep.add_argument("--region", default="layers")
    sweep.set_defaults(handler=_sweep)
    bench = kinds.add_parser("benchmarks", help="lm-evaluation-harness tasks, base vs fine-tuned")
    pair_arguments(bench)
    bench.add_argument(
        "--tasks", nargs="+", required=True, help="lm-eval task names (mmlu, truthfulqa_mc1, ...)"
    )
    bench.add_argument("--include-path", help="a folder of your own lm-eval task YAMLs")
    bench.add_argument(
        "--also", nargs="+", default=[], help="more models to score, e.g. restored folders"
    )
    bench.add_argument("--num-fewshot", type=int)
    bench.add_argument("--batch-size", type=int, default=8)
    bench.set_defaults(handler=_benchmarks)


def _check_choice(kind: str, value: str, valid) -> None:
    from knowshift.errors import unknown_name

    if value not in valid:
        raise unknown_name(kind, value, valid)


def tuned_directory(pair) -> Path:
    """The folder holding the fine-tuned weights: the adapter, the checkpoint or model folder."""
    from knowshift.models.loader import model_directory

    return Path(pair.adapter) if pair.adapter else Path(model_directory(pair.tuned))


def _restore(args: argparse.Namespace) -> int:
    from knowshift.analysis.deltas import delta_stats
    from knowshift.analysis.pair import checked_pair
    from knowshift.analysis.restore import format_concentration, format_report, restore_model
    from knowshift.models.loader import model_directory

    _check_choice("mode", args.mode, MODES)
    _check_choice("region", args.region, REGIONS)
    if not 0 < args.fraction <= 1:
        raise KnowshiftError(
            f"--fraction {args.fraction}: give a share in (0, 1], e.g. 0.2 for 20%"
        )
    pair = checked_pair(None, base=args.base, tuned=args.tuned, checkpoint=args.checkpoint)
    base_dir, tuned_dir = model_directory(pair.base), tuned_directory(pair)
    stats = delta_stats(base_dir, tuned_dir, args.region)
    report = restore_model(base_dir, tuned_dir, args.out, args.fraction, args.mode, args.region,
                           args.seed, stats=stats)  # fmt: skip
    print(format_concentration(stats))
    print(format_report(report))
    print(f"wrote {args.out}; load it like any model (--model {args.out})", file=sys.stderr)
    from knowshift.cli.common import store_result

    params = {"base": pair.base, "tuned": str(tuned_directory(pair)), "fraction": args.fraction,
              "mode": args.mode, "region": args.region, "seed": args.seed, "out": str(Path(args.out).resolve())}  # fmt: skip
    store_result(args, "restore", pair.subject, params, report)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from knowshift.analysis.deltas import delta_stats
    from knowshift.analysis.restore import format_concentration, format_sweep, restore_sweep
    from knowshift.cli.common import common_params, resolve, store_result
    from knowshift.models.loader import model_directory, quiet_transformers

    for mode in args.modes:
        _check_choice("mode", mode, MODES)
    _check_choice("region", args.region, REGIONS)
    if not all(0 < k <= 100 for k in args.percents):
        raise KnowshiftError("--percents must lie in (0, 100], e.g. 1 3 5 10 20 40 60")
    pair, _, targets = resolve(args)
    categories = _base_categories(pair, targets, args.workspace)
    quiet_transformers()
    evaluate = _qa_metrics(targets, categories, pair)
    points = [(k / 100, mode) for mode in args.modes for k in sorted(args.percents)]
    base_dir, tuned_dir = model_directory(pair.base), tuned_directory(pair)
    stats = delta_stats(base_dir, tuned_dir, args.region)
    print(format_concentration(stats))
    result = restore_sweep(base_dir, tuned_dir, points, evaluate, region=args.region, seed=args.seed,
                           device=args.device, endpoints=True, stats=stats)  # fmt: skip
    print(format_sweep(result))
    params = {**common_params(args, pair), "percents": sorted(args.percents), "modes": args.modes,
              "region": args.region}  # fmt: skip
    record = {"points": [asdict(p) for p in result],
              "stats": {k: v for k, v in asdict(stats).items() if k != "histogram"}}  # fmt: skip
    store_result(args, "restore-sweep", pair.subject, params, record)
    return 0


def _base_categories(pair, targets, workspace: str) -> dict:
    """The base model's stored categories of the targets (the run's probe settings), if any."""
    from knowshift.models.resolve import model_fingerprint
    from knowshift.store import Store, database_path

    key = pair.probe_key
    if database_path(workspace).is_file():  # else nothing is stored: create no workspace here
        with Store.for_workspace(workspace) as store:
            fingerprint = model_fingerprint(pair.base)
            keys = (
                [key] if key else [k for k, _ in store.settings_with_results(fingerprint, "exact")]
            )
            for k in keys:
                results = store.probe_results(fingerprint, k, [f.id for f in targets])
                if results:
                    return {r.fact_id: r.category for r in results}
    print(f"note: no stored categories of {pair.base} for these facts; accuracy is reported overall only",
          file=sys.stderr)  # fmt: skip
    return {}


def _qa_metrics(targets, categories, pair):
    """Closed-book QA accuracy (alias containment, as Ye et al.) overall, per category and
    in/out of distribution: what each point of a sweep is scored by."""
    from knowshift.evaluate.qa import predict, summarise

    relations = set(pair.train_relations) if pair.train_relations else None

    def evaluate(loaded) -> dict[str, float]:
        summary = summarise(predict(loaded, targets, categories, relations, template=pair.template))
        metrics = {"accuracy": summary["all"]["all"].contains}
        metrics.update({f"category/{k}": b.contains for k, b in summary["category"].items()})
        metrics.update(
            {f"distribution/{k}": b.contains for k, b in summary["distribution"].items()}
        )
        return metrics

    return evaluate


def _benchmarks(args: argparse.Namespace) -> int:
    from knowshift.analysis.benchmarks import format_benchmarks, run_benchmarks
    from knowshift.analysis.pair import checked_pair
    from knowshift.cli.common import store_result
    from knowshift.models import load_model
    from knowshift.models.loader import quiet_transformers

    if args.limit is not None and args.limit < 1:
        raise KnowshiftError("--limit must be at least 1")
    pair = checked_pair(args.run, base=args.base, tuned=args.tuned, adapter=args.adapter,
                        checkpoint=args.checkpoint, facts_spec=args.facts, data=args.data)  # fmt: skip
    quiet_transformers()
    models = [("base", pair.base, None), ("tuned", pair.tuned, pair.adapter)]
    models += [(f"also:{m}", m, None) for m in args.also]
    results = []
    for role, name, adapter in models:
        loaded = load_model(name, device=args.device, adapter=adapter)
        result = run_benchmarks(loaded, args.tasks, include_path=args.include_path, limit=args.limit,
                                num_fewshot=args.num_fewshot, batch_size=args.batch_size, seed=args.seed)  # fmt: skip
        results.append(result)
        params = {"tasks": args.tasks, "limit": args.limit, "num_fewshot": args.num_fewshot, "role": role,
                  "model": name, "adapter": adapter, "include_path": args.include_path}  # fmt: skip
        store_result(args, "benchmarks", pair.subject, params, result)
        del loaded
    print(format_benchmarks(results))
    return 0
