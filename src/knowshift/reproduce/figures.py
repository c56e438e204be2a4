"""RESULTS.md's figures, drawn from the exported study data and the verdicts alone (SVG files:
the same data gives the same bytes).

Per model: every part's statistic with its 95% interval and the paper's figure where it gives a
number (the verdicts), and one chart per study of the means behind the statistics.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from knowshift.report import svg
from knowshift.reproduce.data import StudyData
from knowshift.reproduce.findings import NOT_REPRODUCED, REPRODUCED, get_finding
from knowshift.reproduce.results_md import ModelResults
from knowshift.reproduce.statistics import INTERVENTION_GROUPS, SINGLE_CATEGORIES
from knowshift.reproduce.stored import StudyRun, fact_scores, is_idk

VERDICT_COLOURS = {REPRODUCED: "#1a9850", NOT_REPRODUCED: "#d73027"}  # else grey
_PUBLISHED_NUMBER = re.compile(r"^\s*([+-]\d+(?:\.\d+)?)")


def suite_figures(models: Sequence[ModelResults], found: Mapping[str, Sequence[StudyData]]) -> dict[str, tuple[str, str]]:  # fmt: skip
    """name -> (caption, standalone SVG), in page order."""
    figures = {}
    for m in models:
        if chart := _verdicts_chart(m):
            figures[f"{m.model}-verdicts"] = (
                f"{m.model}: each statistic with its 95% interval (green: reproduced, red: not "
                "reproduced, grey: inconclusive; diamonds: the paper's figure)",
                chart,
            )
        by_study = {d.study: d for d in found.get(m.model, ())}
        for figure, study, caption, draw in _STUDY_CHARTS:
            if study in by_study and (chart := draw(by_study[study])):
                figures[f"{m.model}-{figure}"] = (f"{m.model}: {caption}", chart)
    return {name: (caption, _standalone(chart)) for name, (caption, chart) in figures.items()}


def _standalone(chart: str) -> str:
    """An inline chart as an SVG file of its own (with its namespace)."""
    return chart.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)


def _verdicts_chart(m: ModelResults) -> str | None:
    rows, references = [], []
    for v in m.verdicts:
        for part in get_finding(v.finding_id).parts:
            estimate, interval = v.statistics.get(part.name), v.intervals.get(part.name)
            if estimate is None or interval is None or not all(np.isfinite(interval)):
                continue
            colour = VERDICT_COLOURS.get(v.part_verdicts.get(part.name), svg.MUTED)
            rows.append((f"{v.finding_id} {part.name}", estimate, *interval, colour))
            if match := _PUBLISHED_NUMBER.match(part.published):
                references.append((len(rows) - 1, float(match.group(1))))
    if not rows:
        return None
    return svg.interval_chart(
        rows, x_label="statistic (points; F9 distinct answers: count)", references=references,
        width=640,
    )  # fmt: skip


# --- the means behind each study's statistics ---------------------------------------------------


def _accuracy(data: StudyData, run: StudyRun, checkpoint: str, metric: str, subset: str) -> float | None:  # fmt: skip
    scores = fact_scores(data.evaluation(run.run_id, checkpoint), metric, subset)
    if isinstance(scores, dict):
        return 100 * float(np.mean(list(scores.values()))) if scores else None
    return None if scores is None else 100 * scores


def _mean_by(data: StudyData, key_of, checkpoint: str, metric: str, subset: str) -> dict:
    """Mean accuracy (points) over runs (all seeds) per key_of(run) (None: left out)."""
    values = defaultdict(list)
    for run in data.runs:
        key = key_of(run)
        if key is not None and (value := _accuracy(data, run, checkpoint, metric, subset)) is not None:  # fmt: skip
            values[key].append(value)
    return {key: float(np.mean(v)) for key, v in values.items()}


def _unknown_ratio(data: StudyData) -> str | None:
    def share(run):
        frac = run.variant.get("build.frac_unknown")
        return None if frac is None or is_idk(run) else 100 * float(frac)

    series = []
    for i, checkpoint in enumerate(("early_stop", "last")):
        means = _mean_by(data, share, checkpoint, "exact", "in")
        points = tuple(sorted(means.items()))
        if points:
            series.append(svg.Series(checkpoint.replace("_", " "), points, svg.colour(i)))
    if not series:
        return None
    return svg.line_chart(series, x_label="Unknown examples in the training set (%)",
                          y_label="test accuracy, in distribution (%)")  # fmt: skip


def _fitted(data: StudyData) -> str | None:
    by_epoch = {"Known": defaultdict(list), "Unknown": defaultdict(list)}
    for run in data.runs:
        if is_idk(run):
            continue
        for record in data.train_records(run.run_id):
            for group, values in by_epoch.items():
                if f"train/{group}" in record["accuracy"]:
                    values[record["epoch"]].append(100 * record["accuracy"][f"train/{group}"])
    series = [
        svg.Series(f"{group} examples", tuple((e, float(np.mean(v))) for e, v in sorted(values.items())),
                   svg.CATEGORY_COLOURS["HighlyKnown" if group == "Known" else "Unknown"])
        for group, values in by_epoch.items() if values
    ]  # fmt: skip
    if not series:
        return None
    return svg.line_chart(series, x_label="epoch", y_label="training examples fitted (%)",
                          y_range=(0, 100))  # fmt: skip


def _bars(groups: Sequence[str], means: Mapping, y_label: str, name: str) -> str | None:
    values = [means.get(g) for g in groups]
    if all(v is None for v in values):
        return None
    return svg.grouped_bars(list(groups), [(name, svg.colour(0), values)], y_label=y_label)


def _categories(data: StudyData) -> str | None:
    means = _mean_by(data, lambda r: r.variant.get("build.category"), "last", "exact", "in")
    return _bars(SINGLE_CATEGORIES, means, "test accuracy at the last epoch (%)", "D_category")


def _size_mastery(data: StudyData) -> str | None:
    def key(run):
        level, size = run.variant.get("build.mastery_level"), run.variant.get("build.size")
        return None if level is None or size is None else (int(size), int(level))

    means = _mean_by(data, key, "last", "contains", "in")
    if not means:
        return None
    levels = sorted({level for _, level in means})
    series = [(f"{size} examples", svg.colour(i), [means.get((size, v)) for v in levels])
              for i, size in enumerate(sorted({s for s, _ in means}))]  # fmt: skip
    return svg.grouped_bars([f"level {v}" for v in levels], series,
                            y_label="test accuracy (answer contained, %)")  # fmt: skip


def _intervention(data: StudyData) -> str | None:
    means = _mean_by(data, lambda r: r.variant.get("build.group"), "last", "exact", "all")
    return _bars(INTERVENTION_GROUPS, means, "test accuracy (%)", "group")


def _packing(data: StudyData) -> str | None:
    shares = defaultdict(lambda: defaultdict(list))
    for run in data.runs:
        shift = data.analysis("shift", f"{run.run_id}:last")
        n = run.variant.get("build.n_unknown")
        if shift and n is not None:
            shares[int(n)]["negative"].append(100 * shift["negative_share"])
            shares[int(n)]["positive"].append(100 * shift["positive_share"])
    if not shares:
        return None
    sizes = sorted(shares)
    series = [(f"{kind} shifts", svg.colour(i), [float(np.mean(shares[n][kind])) for n in sizes])
              for i, kind in enumerate(("negative", "positive"))]  # fmt: skip
    return svg.grouped_bars([f"{n} facts packed" for n in sizes], series,
                            y_label="held-out facts shifted (%)")  # fmt: skip


# (figure, the study it reads, caption, drawing)
_STUDY_CHARTS = (
    ("unknown-ratio", "unknown-ratio",
     "test accuracy against the share of Unknown examples (F2)", _unknown_ratio),
    ("fitted", "unknown-ratio", "training examples fitted per epoch (F1)", _fitted),
    ("categories", "categories", "accuracy after training on one category (F4)", _categories),
    ("size-mastery", "size-mastery", "accuracy by set size and mastery level (F6)", _size_mastery),
    ("intervention", "intervention", "accuracy by training group (F8)", _intervention),
    ("lora-packing", "lora-packing", "category shifts of held-out facts (F9)", _packing),
)  # fmt: skip
