"""Sections on what fine-tuning changed (METHODS C, D, E), from stored analyses: restoration,
category shifts, answer collapse, first-token KL, consistency, general-ability benchmarks.

An analysis's label is its run's label and checkpoint; where a study holds several analyses of
a kind, the latest few are drawn side by side."""

from __future__ import annotations

from knowshift.analysis.shift import NEGATIVE, POSITIVE
from knowshift.report import captions, svg
from knowshift.report.data import CATEGORY_NAMES, Analysis, RestoreSweep, Study
from knowshift.report.html import Section, figure, figures, fixed, heading, note, percent, table

MAX_PANELS = 6
SHORT = {"HighlyKnown": "HK", "MaybeKnown": "MK", "WeaklyKnown": "WK", "Unknown": "Unk"}
PUBLISHED_CONCENTRATION = ((0.01, 0.706), (0.2, 0.92))  # Ye et al.: the top 1% and 20% of weights
PUBLISHED_MODULES = {
    "mlp.down_proj": 28.9, "mlp.up_proj": 28.3, "mlp.gate_proj": 23.4, "self_attn.o_proj": 9.4,
    "self_attn.q_proj": 6.4, "self_attn.v_proj": 2.6, "self_attn.k_proj": 1.1,
}  # fmt: skip
MODE_COLOURS = {"top": svg.colour(1), "random": svg.colour(0), "bottom": svg.colour(2)}


def restoration_section(study: Study) -> Section:
    """Per sweep: accuracy against k, the concentration curve, module shares, and the table."""
    sweeps = study.of_kind("restore-sweep")
    if not sweeps:
        return Section(captions.RESTORATION, None)
    body = []
    for analysis in sweeps[-MAX_PANELS:]:
        sweep: RestoreSweep = analysis.result
        charts = figures(_restore_curve(sweep), _concentration_curve(sweep), _module_shares(sweep))
        body += [heading(analysis.label), charts, _sweep_table(sweep)]
    return Section(captions.RESTORATION, "".join(body))


def _fraction_axis(fractions) -> tuple[dict[float, int], list[tuple[float, str]]]:
    """Evenly spaced positions for the k values (so 1% and 60% are both readable), and labels."""
    ordered = sorted(set(fractions))
    return {f: i for i, f in enumerate(ordered)}, [
        (i, f"{100 * f:g}%") for i, f in enumerate(ordered)
    ]


def _restore_curve(sweep: RestoreSweep) -> str:
    position, ticks = _fraction_axis(p.fraction for p in sweep.points)
    # k = 0 (the tuned model) and k = 100% (the base model) are the same for every mode.
    ends = [p for p in sweep.points if p.fraction in (0.0, 1.0)]
    series = []
    for mode in dict.fromkeys(p.mode for p in sweep.points):
        points = {p.fraction: p for p in [*ends, *(q for q in sweep.points if q.mode == mode)]}
        xy = tuple((position[f], 100 * p.metrics["accuracy"])
                   for f, p in sorted(points.items()) if "accuracy" in p.metrics)  # fmt: skip
        series.append(svg.Series(f"{mode} k%", xy, MODE_COLOURS.get(mode, svg.colour(3))))
    chart = svg.line_chart(series, x_label="weights restored (k, ranked by relative update)",
                           y_label="QA accuracy (%)", x_ticks=ticks, width=460, height=300)  # fmt: skip
    return figure(chart, "0% is the fine-tuned model, 100% the base model.")


def _concentration_curve(sweep: RestoreSweep) -> str:
    curves = (("all weights", sweep.concentration, svg.colour(1), False),
              ("without base zeros", sweep.concentration_nonzero_base, svg.colour(0), False),
              ("published (Ye et al.)", PUBLISHED_CONCENTRATION, svg.MUTED, True))  # fmt: skip
    position, ticks = _fraction_axis(f for _, curve, _, _ in curves for f, _ in curve)
    series = [svg.Series(name, tuple((position[f], 100 * s) for f, s in curve), hue, dashed)
              for name, curve, hue, dashed in curves if curve]  # fmt: skip
    if len(series) == 1:
        return note("No concentration curve was stored with this sweep.")
    chart = svg.line_chart(series, x_label="top k% of weights by relative update", y_label="share of total change (%)",
                           y_range=(0, 100), x_ticks=ticks, width=460, height=300)  # fmt: skip
    zeros = (f" {sweep.n_zero_base:,} weights are exactly 0 in the base (a de-quantised GGUF has many); "
             "their r = |d| / 1e-8 swamps the sum over all weights.") if sweep.n_zero_base else ""  # fmt: skip
    return figure(
        chart, f"Share of the summed relative update carried by the top k% of weights.{zeros}"
    )


def _module_shares(sweep: RestoreSweep) -> str:
    """Where the restored weights sit, at the top-mode point nearest 20%, beside the published."""
    top = [p for p in sweep.points if p.mode == "top" and 0 < p.fraction < 1 and p.by_module]
    if not top:
        return ""
    point = min(top, key=lambda p: abs(p.fraction - 0.2))
    modules = sorted(
        set(point.by_module) | set(PUBLISHED_MODULES), key=lambda m: -PUBLISHED_MODULES.get(m, 0)
    )
    series = [(f"this run, top {100 * point.fraction:g}%", svg.colour(1), [100 * point.by_module.get(m, 0.0) for m in modules]),
              ("published", svg.MUTED, [PUBLISHED_MODULES.get(m) for m in modules])]  # fmt: skip
    chart = svg.grouped_bars([m.split(".")[-1] for m in modules], series, y_label="% of restored weights",
                             width=520, height=300, value_format="{:.0f}")  # fmt: skip
    return figure(chart, "Share of the restored weights per module type.")


def _sweep_table(sweep: RestoreSweep) -> str:
    header = [
        "k",
        "mode",
        "% of the change undone",
        "accuracy %",
        *(f"{c} %" for c in CATEGORY_NAMES),
    ]
    rows = [[f"{100 * p.fraction:g}%", p.mode, percent(p.share_of_change_restored), percent(p.metrics.get("accuracy")),
             *(percent(p.metrics.get(f"category/{c}")) for c in CATEGORY_NAMES)] for p in sweep.points]  # fmt: skip
    return table(header, rows)


def shift_section(study: Study) -> Section:
    """A transition heatmap per analysis, and positive/negative shares side by side."""
    shifts = study.of_kind("shift")[-MAX_PANELS:]
    if not shifts:
        return Section(captions.SHIFT, None)
    short = [SHORT[c] for c in CATEGORY_NAMES]
    hues = [[_shift_hue(before, after) for after in CATEGORY_NAMES] for before in CATEGORY_NAMES]
    items = []
    for analysis in shifts:
        r = analysis.result
        counts = [
            [r.counts[before][after] for after in CATEGORY_NAMES] for before in CATEGORY_NAMES
        ]
        texts = [[str(n) for n in row] for row in counts]
        chart = svg.heatmap(
            short,
            short,
            counts,
            texts,
            x_label="after fine-tuning",
            y_label="base model",
            hues=hues,
        )
        reliability = "" if r.reliability is None else (
            f"; reliability {percent(r.reliability)}% of {r.n_trained_unknown} trained Unknown facts")  # fmt: skip
        items.append(figure(chart, f"{analysis.label}: {r.n_facts} facts; positive {percent(r.positive_share)}%, "
                                   f"negative {percent(r.negative_share)}%, unchanged {percent(r.unchanged_share)}%{reliability}"))  # fmt: skip
    series = [("positive shifts", svg.colour(2), [100 * a.result.positive_share for a in shifts]),
              ("negative shifts", svg.colour(1), [100 * a.result.negative_share for a in shifts])]  # fmt: skip
    shares = svg.grouped_bars(
        [a.label for a in shifts],
        series,
        y_label="% of facts",
        width=max(360, 110 * len(shifts) + 100),
    )
    return Section(
        captions.SHIFT,
        figures(*items, figure(shares, "Positive and negative shift shares per run.")),
    )


def _shift_hue(before: str, after: str) -> str:
    """Green for a positive shift, red for a negative one, blue for none, grey otherwise."""
    if before == after:
        return "#2166ac"
    if (before, after) in POSITIVE:
        return svg.colour(2)
    return svg.colour(1) if (before, after) in NEGATIVE else "#777777"


def collapse_section(study: Study) -> Section:
    """Answer variety before vs after per analysis, with the exploded answers after."""
    collapses = study.of_kind("collapse")[-MAX_PANELS:]
    if not collapses:
        return Section(captions.COLLAPSE, None)
    measures = (("distinct", lambda s: s.n_distinct / max(s.n_questions, 1)), ("top answer", lambda s: s.top1_share),
                ("top 5", lambda s: s.top5_share), ("refusals", lambda s: s.refusal_rate), ("accuracy", lambda s: s.accuracy))  # fmt: skip
    body = []
    for analysis in collapses:
        r = analysis.result
        series = [(when, hue, [100 * measure(stats) for _, measure in measures])
                  for when, hue, stats in (("before", svg.colour(0), r.before), ("after", svg.colour(1), r.after))]  # fmt: skip
        chart = svg.grouped_bars(
            [m for m, _ in measures], series, y_label="% of questions", y_range=(0, 100), width=560
        )
        caption = (f"{analysis.label}: {r.before.n_questions} questions; distinct answers (per question in the chart) "
                   f"{r.before.n_distinct} → {r.after.n_distinct}, entropy {r.before.entropy_bits:.2f} → {r.after.entropy_bits:.2f} bits")  # fmt: skip
        exploded = [
            [e.relation, e.answer, e.n_questions, percent(e.share), percent(e.correct_share)]
            for e in r.after.exploded[:8]
        ]
        listing = (table(["relation", "exploded answer (after)", "questions", "% of relation", "% right"], exploded)
                   if exploded else note("No exploded answers after fine-tuning."))  # fmt: skip
        body.append(figures(figure(chart, caption), listing))
    return Section(captions.COLLAPSE, "".join(body))


def token_kl_section(study: Study) -> Section:
    """A row per analysis, and KL where the fine-tuned answer is right vs wrong."""
    analyses = study.of_kind("token-kl")
    if not analyses:
        return Section(captions.TOKEN_KL, None)
    rows = [[a.label, r.selection, r.n_facts, fixed(r.mean_kl, 4), fixed(r.median_kl, 4),
             f"{percent(r.base_accuracy)} → {percent(r.tuned_accuracy)}", fixed(r.mean_kl_tuned_correct, 4),
             fixed(r.mean_kl_tuned_wrong, 4), fixed(r.kl_accuracy_spearman, 3)]
            for a, r in ((a, a.result) for a in analyses)]  # fmt: skip
    header = ["run", "facts", "n", "mean KL", "median KL", "accuracy % base → tuned", "KL where right",
              "KL where wrong", "Spearman(KL, right)"]  # fmt: skip
    shown = analyses[-8:]
    series = [("mean KL where right", svg.colour(2), [a.result.mean_kl_tuned_correct for a in shown]),
              ("mean KL where wrong", svg.colour(1), [a.result.mean_kl_tuned_wrong for a in shown])]  # fmt: skip
    chart = svg.grouped_bars([a.label for a in shown], series, y_label="KL (nats)", value_format="{:.3f}",
                             width=max(360, 120 * len(shown) + 100))  # fmt: skip
    caption = "Mean first-token KL by whether the fine-tuned model's answer is right."
    return Section(captions.TOKEN_KL, table(header, rows) + figures(figure(chart, caption)))


def consistency_section(study: Study) -> Section:
    """A row per analysis with its partial correlations; identical answers and both accuracies."""
    analyses = study.of_kind("consistency")
    if not analyses:
        return Section(captions.CONSISTENCY, None)
    names = sorted({k for a in analyses for k in a.result.partial_correlation})
    rows = [[a.label, r.n_questions, percent(r.identical_answer_share), fixed(r.mean_kl, 4),
             fixed(r.mean_rank_correlation, 3), f"{percent(r.base_accuracy)} → {percent(r.tuned_accuracy)}",
             *(fixed(r.partial_correlation.get(n), 3) for n in names)]
            for a, r in ((a, a.result) for a in analyses)]  # fmt: skip
    header = ["run", "n", "identical answers %", "mean KL", "rank correlation", "accuracy % base → tuned",
              *(f"partial ρ {n}" for n in names)]  # fmt: skip
    shown = analyses[-8:]
    series = [("identical answers", svg.colour(3), [100 * a.result.identical_answer_share for a in shown]),
              ("base accuracy", svg.colour(0), [100 * a.result.base_accuracy for a in shown]),
              ("tuned accuracy", svg.colour(1), [100 * a.result.tuned_accuracy for a in shown])]  # fmt: skip
    chart = svg.grouped_bars([a.label for a in shown], series, y_label="%", y_range=(0, 100),
                             width=max(380, 140 * len(shown) + 100))  # fmt: skip
    caption = "Identical greedy answers, and the accuracy of each model."
    return Section(captions.CONSISTENCY, table(header, rows) + figures(figure(chart, caption)))


def benchmarks_section(study: Study) -> Section:
    """Per fine-tuned model: each scored model's headline metric per task."""
    analyses = study.of_kind("benchmarks")
    if not analyses:
        return Section(captions.BENCHMARKS, None)
    body = []
    for subject in dict.fromkeys(a.subject for a in analyses):
        group = [a for a in analyses if a.subject == subject]
        tasks = list(dict.fromkeys(t for a in group for t in a.result.headline))
        series = [
            (_role(a), svg.colour(i), [_score(a, t) for t in tasks]) for i, a in enumerate(group)
        ]
        rows = [[_role(a), *(fixed(_score(a, t), 3) for t in tasks)] for a in group]
        chart = svg.grouped_bars(tasks, series, y_label="score", value_format="{:.3f}",
                                 width=max(360, 130 * len(tasks) + 100))  # fmt: skip
        body.append(
            heading(group[0].label) + figures(figure(chart), table(["model", *tasks], rows))
        )
    return Section(captions.BENCHMARKS, "".join(body))


def _role(analysis: Analysis) -> str:
    return str(analysis.params.get("role") or analysis.result.model_name)


def _score(analysis: Analysis, task: str) -> float | None:
    """A task's headline metric: acc, else acc_norm, else exact_match, else the first reported."""
    scores = analysis.result.scores.get(task, {})
    for metric in ("acc", "acc_norm", "exact_match", *scores):
        if metric in scores and not metric.endswith("_stderr"):
            return scores[metric]
    return None
