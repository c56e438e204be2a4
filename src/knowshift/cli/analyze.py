"""The `knowshift analyze ...` commands (registered by the cli package): each loads what it compares,
runs one analysis of knowshift.analysis, prints a table and stores the result."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from knowshift.analysis.pair import checked_pair, load_pair, probe_config  # noqa: F401 - used by handlers
from knowshift.cli.common import common_params, pair_arguments, resolve, store_result
from knowshift.errors import KnowshiftError
from knowshift.paths import default_workspace

DEFAULT_FRACTIONS = (1, 3, 5, 10, 20, 40, 60)


def add_commands(commands) -> None:
    """Register `analyze` and its analyses on the CLI's sub-command parser."""
    analyze = commands.add_parser("analyze", help="knowledge-shift analyses of a fine-tuned model")
    kinds = analyze.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    shift = kinds.add_parser("shift", help="re-probe held-out facts: category transition matrix")
    pair_arguments(shift)
    shift.add_argument(
        "--estimator", help="probe estimator (default: the one the run's set was built from)"
    )
    shift.set_defaults(handler=_shift)
    consistency = kinds.add_parser(
        "consistency", help="consistency with the base model on held-out facts"
    )
    pair_arguments(consistency)
    consistency.add_argument("--n-options", type=int, default=4, help="answer options per question")
    consistency.set_defaults(handler=_consistency)
    collapse = kinds.add_parser(
        "collapse", help="distinct, exploded answers and refusals, before vs after"
    )
    pair_arguments(collapse)
    collapse.add_argument("--explode-share", type=float, default=0.1,
                          help="an answer explodes above this share of a relation's questions")  # fmt: skip
    collapse.set_defaults(handler=_collapse)
    token = kinds.add_parser("token-kl", help="first-answer-token KL on the best-mastered facts")
    pair_arguments(token, limit=300)
    token.add_argument("--top-k", type=int, default=10)
    token.add_argument(
        "--pool", type=int, default=2000, help="held-out facts to choose the best-mastered from"
    )
    token.set_defaults(handler=_token_kl)
    regression = kinds.add_parser(
        "regression", help="accuracy ~ fitted Known + fitted Unknown shares"
    )
    regression.add_argument(
        "--runs", nargs="+", help="run ids (default: every run in the workspace)"
    )
    regression.add_argument("--confidence", type=float, default=0.95)
    regression.add_argument("--workspace", default=str(default_workspace()))
    regression.set_defaults(handler=_regression)
    from knowshift.cli.restore import add_analyses

    add_analyses(kinds, pair_arguments)


def _shift(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from knowshift.analysis.shift import category_shift, format_shift
    from knowshift.models.loader import quiet_transformers
    from knowshift.models.resolve import model_fingerprint
    from knowshift.store import Store

    pair, facts, targets = resolve(args)
    config = probe_config(pair, args.estimator)
    quiet_transformers()
    bars: dict[str, tqdm] = {}

    def progress(role: str, n: int) -> None:
        if role not in bars:
            for bar in bars.values():  # the previous model is done
                bar.close()
            bars[role] = tqdm(
                total=len(targets), desc=f"probe {role}", unit="fact", dynamic_ncols=True
            )
        bars[role].update(n)

    # Both models must resolve before the workspace is opened (and maybe created).
    model_fingerprint(pair.base)
    model_fingerprint(pair.tuned, pair.adapter)
    with Store.for_workspace(args.workspace) as store:
        result = category_shift(
            pair, store, targets, facts, config, device=args.device, progress=progress
        )
    for bar in bars.values():
        bar.close()
    print(format_shift(result))
    params = {**common_params(args, pair), "estimator": config.estimator, "probe": asdict(config)}
    store_result(args, "shift", pair.subject, params, result)
    return 0


def _consistency(args: argparse.Namespace) -> int:
    from knowshift.analysis.consistency import consistency, format_consistency

    if args.n_options < 2:
        raise KnowshiftError("--n-options must be at least 2 (the gold answer and a distractor)")
    pair, facts, targets = resolve(args)
    base, tuned = load_pair(pair, args.device)
    result = consistency(
        base,
        tuned,
        facts,
        targets,
        template=pair.template,
        n_options=args.n_options,
        seed=args.seed,
    )
    print(format_consistency(result))
    params = {**common_params(args, pair), "n_options": args.n_options, "template": pair.template}
    store_result(args, "consistency", pair.subject, params, result)
    return 0


def _collapse(args: argparse.Namespace) -> int:
    from knowshift.analysis.collapse import answer_collapse, format_collapse
    from knowshift.evaluate.qa import predict

    if not 0 < args.explode_share < 1:
        raise KnowshiftError("--explode-share must be between 0 and 1 (e.g. 0.1)")
    pair, _, targets = resolve(args)
    base, tuned = load_pair(pair, args.device)
    before = predict(base, targets, template=pair.template)
    after = predict(tuned, targets, template=pair.template)
    result = answer_collapse(before, after, args.explode_share)
    print(format_collapse(result))
    params = {**common_params(args, pair), "explode_share": args.explode_share}
    store_result(args, "collapse", pair.subject, params, result)
    return 0


def _token_kl(args: argparse.Namespace) -> int:
    from knowshift.analysis.token_kl import format_token_kl, token_kl

    if args.top_k < 2:
        raise KnowshiftError("--top-k must be at least 2")
    pair, facts, pool = resolve(args)
    base, tuned = load_pair(pair, args.device, dtype=(pair.probe_params or {}).get("dtype", "auto"))
    targets, selection = best_mastered(pair, base, facts, pool, args)
    if not targets:
        raise KnowshiftError(f"none of the {len(pool)} facts is {selection}; raise --pool")
    targets = targets[: args.limit]
    result = token_kl(
        base, tuned, targets, template=pair.template, top_k=args.top_k, selection=selection
    )
    print(format_token_kl(result))
    params = {
        **common_params(args, pair),
        "top_k": args.top_k,
        "pool": args.pool,
        "selection": selection,
    }
    store_result(args, "token-kl", pair.subject, params, result)
    return 0


def best_mastered(pair, base, facts, pool, args):
    """The pool's facts at the base model's highest stored mastery level; without mastery
    results, its HighlyKnown facts (probed now with the run's settings where not stored)."""
    from knowshift.probe.run import probe
    from knowshift.store import Store

    wanted = {f.id for f in pool}
    with Store.for_workspace(args.workspace) as store:
        best: list = []
        for key, _ in store.settings_with_results(base.fingerprint, "mastery"):
            results = [
                r
                for r in store.probe_results(base.fingerprint, key, wanted)
                if r.mastery_level is not None
            ]
            best = max(best, results, key=len)
        if best:
            top = max(r.mastery_level for r in best)
            chosen = {r.fact_id for r in best if r.mastery_level == top}
            return [f for f in pool if f.id in chosen], f"mastery level {top}"
        print(
            f"no mastery results of {pair.base} stored; using its HighlyKnown facts",
            file=sys.stderr,
        )
        results = probe(base, facts, pool, probe_config(pair, None), store)
    chosen = {
        r.fact_id for r in results if r.category is not None and r.category.value == "HighlyKnown"
    }
    return [f for f in pool if f.id in chosen], "HighlyKnown"


def _regression(args: argparse.Namespace) -> int:
    from knowshift.analysis.regression import fit_regression, format_regression, regression_points
    from knowshift.store import Store, database_path

    if not 0 < args.confidence < 1:
        raise KnowshiftError("--confidence must be between 0 and 1 (e.g. 0.95)")
    path = database_path(args.workspace)
    if not path.is_file():  # do not leave an empty database behind
        named = f"no run {args.runs[0]!r}: " if args.runs else ""
        raise KnowshiftError(
            f"{named}no results database {path}; check --workspace, or train runs first "
            "(knowshift train)"
        )
    with Store.for_workspace(args.workspace) as store:
        result = fit_regression(regression_points(store, args.runs), args.confidence)
    print(format_regression(result))
    subject = ",".join(result.runs)
    store_result(
        args,
        "regression",
        subject,
        {"runs": list(result.runs), "confidence": args.confidence},
        result,
    )
    return 0
