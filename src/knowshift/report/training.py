"""Sections on what the model knew and how training went (METHODS A, B; C's data sizes).

Each section function takes the study and returns one `Section`; accuracies are drawn in percent.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean

from knowshift.report import captions, svg
from knowshift.report.data import CATEGORY_NAMES, Epoch, Run, Study
from knowshift.report.html import Section, figure, figures, fixed, note, percent, table

SHORT = {"HighlyKnown": "HK", "MaybeKnown": "MK", "WeaklyKnown": "WK", "Unknown": "Unk"}
PUBLISHED_SPLIT = (24, 23, 17, 36)  # Gekhman et al., PaLM 2-M on EntityQuestions, % per category
# Gekhman et al., in-distribution accuracy (Full, HK, MK, WK, Unk): EARLY_STOP, CONVERGENCE.
PUBLISHED_TABLE = (
    ("D_HighlyKnown", (40.5, 98.7, 60.1, 9.0, 0.6), (40.0, 98.4, 58.8, 8.5, 0.7)),
    ("D_MaybeKnown", (43.6, 98.4, 69.9, 12.1, 1.0), (43.2, 97.5, 68.2, 12.9, 1.3)),
    ("D_WeaklyKnown", (39.2, 95.0, 59.2, 8.6, 0.4), (35.4, 73.5, 55.8, 17.2, 2.2)),
    ("D_Unknown", (37.5, 95.6, 52.9, 6.5, 0.6), (25.8, 55.8, 36.6, 12.2, 3.2)),
    ("D_Natural", (43.5, 98.0, 67.6, 14.1, 1.8), (41.8, 95.5, 61.7, 14.8, 2.5)),
)
PUBLISHED_FITS = {"in": (36.9, 7.3, -8.3, 0.86), "out": (36.2, 3.2, -3.0, 0.95)}  # b0, kn, unk, R²
TARGETS = {"in": "in distribution", "out": "out of distribution", "all": "all test facts"}
TARGET_COLOURS = {"in": svg.colour(0), "out": svg.colour(4), "all": svg.colour(3)}
MAX_PANELS = 12


def accuracy_of(epoch: Epoch | None, where: str, category: str | None = None) -> float | None:
    """Test accuracy (0-1) "in" or "out" of distribution or over "all" test facts, optionally of
    one category. A run that measured no in/out split (every relation trained) counts all its
    test facts as in distribution."""
    if epoch is None:
        return None
    suffix = f"/{category}" if category else ""
    if where == "all" or (where == "in" and "test/in" not in epoch.accuracy):
        return epoch.accuracy.get(f"test{suffix}")
    return epoch.accuracy.get(f"test/{where}{suffix}")


def categories_section(study: Study) -> Section:
    """Stacked category shares per relation, one chart per probe (model and settings)."""
    if not study.categories:
        return Section(captions.CATEGORIES, None)
    colours = [svg.CATEGORY_COLOURS[c] for c in CATEGORY_NAMES]
    items = []
    for counts in study.categories[:4]:
        rows = [(relation, [by.get(c, 0) for c in CATEGORY_NAMES], None)
                for relation, by in sorted(counts.counts.items())]  # fmt: skip
        total = [sum(row[1][i] for row in rows) for i in range(len(CATEGORY_NAMES))]
        rows += [("all relations", total, None), ("published (PaLM 2-M)", PUBLISHED_SPLIT, "")]
        caption = f"{counts.model}, {counts.estimator} estimator, settings {counts.params_key}: {sum(total)} facts"
        if not counts.is_base:
            caption += " (not the base model of a stored run: e.g. a fine-tuned model re-probed)"
        items.append(figure(svg.stacked_bars(rows, CATEGORY_NAMES, colours), caption))
    return Section(captions.CATEGORIES, figures(*items))


def dynamics_section(study: Study) -> Section:
    """Per run: Known and Unknown examples fitted, and test accuracy, by epoch."""
    lines = (("Known fitted", "train/Known", svg.CATEGORY_COLOURS["HighlyKnown"], False),
             ("Unknown fitted", "train/Unknown", svg.CATEGORY_COLOURS["Unknown"], False),
             ("test accuracy", "test", svg.colour(0), True))  # fmt: skip
    runs = [r for r in study.runs if any(_measured(r, key) for _, key, _, _ in lines[:2])]
    if not runs:
        return Section(captions.DYNAMICS, None)
    items = []
    for run in runs[:MAX_PANELS]:
        series = [svg.Series(name, _measured(run, key), colour, dashed)
                  for name, key, colour, dashed in lines if _measured(run, key)]  # fmt: skip
        epochs = sorted({e.epoch for e in run.epochs})
        x_ticks = [(e, f"{e:g}") for e in epochs] if len(epochs) <= 12 else None
        chart = svg.line_chart(series, x_label="epoch", y_label="%", y_range=(0, 100),
                               x_ticks=x_ticks, width=380, height=250)  # fmt: skip
        stop = f", EARLY_STOP at epoch {run.early_stop.epoch:g}" if run.early_stop else ""
        items.append(figure(chart, f"{run.label}: {run.n_train} examples{stop}"))
    more = len(runs) - MAX_PANELS
    return Section(
        captions.DYNAMICS,
        figures(*items) + (note(f"{more} more runs not drawn.") if more > 0 else ""),
    )


def unknown_share_section(study: Study) -> Section:
    """Test accuracy against %Unknown at both stopping points, in and out of distribution, with
    D_Known (the set without its Unknown examples) as flat reference lines where it was run."""
    runs = sorted((r for r in study.runs if r.varies_unknown_share and r.epochs),
                  key=lambda r: (r.frac_unknown, r.label))  # fmt: skip
    if not runs:
        return Section(captions.UNKNOWN_SHARE, None)
    known_only = [r for r in study.runs if r.known_only and r.epochs]
    series = []
    for stop, dashed in (("EARLY_STOP", False), ("CONVERGENCE", True)):
        for where, hue in (("in", svg.colour(0)), ("out", svg.colour(4))):
            points = _mean_by_share(runs, where, stop)
            if points:
                series.append(svg.Series(f"{stop}, {TARGETS[where]}", points, hue, dashed))
        reference = [accuracy_of(_stop(r, stop), "in") for r in known_only]
        if points and any(v is not None for v in reference):
            level = 100 * mean(v for v in reference if v is not None)
            ends = ((points[0][0], level), (points[-1][0], level))
            series.append(svg.Series(f"D_Known, {stop}, in distribution", ends, svg.MUTED, dashed))
    chart = svg.line_chart(series, x_label="Unknown examples in the set (%)",
                           y_label="test accuracy (%)", width=600, height=340, markers=True)  # fmt: skip
    rows = [[r.label, percent(r.frac_unknown, 0), _epoch(r.early_stop),
             percent(accuracy_of(r.early_stop, "in")), percent(accuracy_of(r.early_stop, "out")),
             _epoch(r.convergence), percent(accuracy_of(r.convergence, "in")),
             percent(accuracy_of(r.convergence, "out"))] for r in [*runs, *known_only]]  # fmt: skip
    header = ["run", "% Unknown", "EARLY_STOP epoch", "in", "out", "CONVERGENCE epoch", "in", "out"]
    caption = "Mean over the runs with the same share; grey: D_Known. Accuracy in percent."
    return Section(captions.UNKNOWN_SHARE, figures(figure(chart, caption), table(header, rows)))


def _stop(run: Run, stop: str) -> Epoch | None:
    return run.early_stop if stop == "EARLY_STOP" else run.convergence


def regression_section(study: Study) -> Section:
    """The latest stored fit: coefficients beside the published ones, slopes, observed vs fit."""
    fits = study.of_kind("regression")
    if not fits:
        return Section(captions.REGRESSION, None)
    result = fits[-1].result
    rows, published, intervals, marks = [], [], [], []
    for target in [t for t in TARGETS if t in result.fits]:
        fit = result.fits[target]
        cells = [f"{c.estimate:+.2f} [{c.ci_low:.2f}, {c.ci_high:.2f}]" for c in fit.coefficients]
        rows.append([TARGETS[target], fit.n_points, *cells, fixed(fit.r_squared, 3)])
        for c, reference in zip(
            fit.coefficients[1:], PUBLISHED_FITS.get(target, (0, None, None))[1:3], strict=True
        ):
            if reference is not None:
                marks.append((len(intervals), reference))
            intervals.append(
                (f"{target}: {c.name}", c.estimate, c.ci_low, c.ci_high, TARGET_COLOURS[target])
            )
        if target in PUBLISHED_FITS:
            b0, kn, unk, r2 = PUBLISHED_FITS[target]
            published.append(
                [
                    f"published, {TARGETS[target]}",
                    "",
                    f"{b0:+.1f}",
                    f"{kn:+.1f}",
                    f"{unk:+.1f}",
                    f"{r2:.2f}",
                ]
            )
    level = round(100 * next(iter(result.fits.values())).confidence)
    header = [
        "target",
        "points",
        f"b0 [{level}% CI]",
        "b_kn (known_fitted)",
        "b_unk (unknown_fitted)",
        "R²",
    ]
    slopes = svg.interval_chart(
        intervals, x_label="accuracy points per whole set fitted", references=marks
    )
    body = table(header, rows, published) + figures(
        figure(slopes, "Slopes with their confidence intervals; diamonds: published."),
        _fit_scatter(result, study),
    )
    return Section(captions.REGRESSION, body)


def _fit_scatter(result, study: Study) -> str:
    """Observed accuracy of every (run, epoch) against the fit's prediction, coloured by run."""
    target = "in" if "in" in result.fits else next(iter(result.fits))
    b0, b_kn, b_unk = (c.estimate for c in result.fits[target].coefficients)
    labels = {r.run_id: r.label for r in study.runs}
    colours = {run_id: svg.colour(i) for i, run_id in enumerate(result.runs)}
    points = [(b0 + b_kn * p.known_fitted + b_unk * p.unknown_fitted, p.accuracy[target], colours[p.run_id],
               f"{labels.get(p.run_id, p.run_id)}, epoch {p.epoch:g}: {p.accuracy[target]:.1f}%")
              for p in result.points if target in p.accuracy]  # fmt: skip
    legend = [(labels.get(r, r), colours[r]) for r in result.runs[:8]]
    chart = svg.scatter_chart(points, x_label="predicted by the fit (%)", y_label="observed (%)",
                              legend=legend, diagonal=True, width=460, height=360)  # fmt: skip
    return figure(chart, f"{TARGETS[target].capitalize()}; on the dashed line the fit is exact.")


def category_table_section(study: Study) -> Section:
    """Full/HK/MK/WK/Unk accuracy, EARLY_STOP → CONVERGENCE, beside the published table."""
    runs = [
        r
        for r in study.runs
        if r.early_stop and accuracy_of(r.convergence, "in", "HighlyKnown") is not None
    ]
    if not runs:
        return Section(captions.CATEGORY_ACCURACY, None)
    columns = ("Full", *(SHORT[c] for c in CATEGORY_NAMES))
    rows, changes = [], []
    for run in runs:
        early, last = _category_row(run.early_stop), _category_row(run.convergence)
        rows.append(
            [
                run.label,
                *(f"{fixed(a, 1)} → {fixed(b, 1)}" for a, b in zip(early, last, strict=True)),
            ]
        )
        changes.append(
            [None if a is None or b is None else b - a for a, b in zip(early, last, strict=True)]
        )
    published = [[f"published {name}", *(f"{a:.1f} → {b:.1f}" for a, b in zip(early, last, strict=True))]
                 for name, early, last in PUBLISHED_TABLE]  # fmt: skip
    series = [
        (r.label, svg.colour(i), c) for i, (r, c) in enumerate(zip(runs[:8], changes, strict=False))
    ]
    chart = svg.grouped_bars(
        columns, series, y_label="CONVERGENCE − EARLY_STOP (points)", width=620
    )
    caption = "Change from EARLY_STOP to CONVERGENCE in percentage points (first 8 runs)."
    return Section(
        captions.CATEGORY_ACCURACY,
        table(["set", *columns], rows, published) + figures(figure(chart, caption)),
    )


def size_mastery_section(study: Study) -> Section:
    """Accuracy by (mastery level of the set, set size): the mean over the runs in each cell."""
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    for run in study.runs:
        value = accuracy_of(run.convergence, "in")
        if run.mastery_level is not None and value is not None:
            cells[run.mastery_level, int(run.variant.get("build.size") or run.n_train)].append(
                100 * value
            )
    if not cells:
        return Section(captions.SIZE_MASTERY, None)
    levels, sizes = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    values = [[mean(cells[lv, n]) if (lv, n) in cells else None for n in sizes] for lv in levels]
    texts = [["–" if v is None else f"{v:.1f}" for v in row] for row in values]
    chart = svg.heatmap([f"D_train-{lv}" for lv in levels], [f"{n:,}" for n in sizes], values, texts,
                        x_label="training examples", y_label="mastery level of the set")  # fmt: skip
    return Section(captions.SIZE_MASTERY, figures(figure(chart, "Mean over the runs in a cell.")))


def runs_table(study: Study) -> str:
    """One row per run: label, id (a study run's folder under runs/, as the study runner names
    it; else the training id), model, set size, %Unknown, epochs, EARLY_STOP epoch."""
    if not study.runs:
        return ""
    rows = [[r.label, r.variant.get("folder") or r.run_id, r.status or "–", r.model, r.n_train,
             percent(r.frac_unknown, 0), len(r.epochs), _epoch(r.early_stop)]
            for r in study.runs]  # fmt: skip
    header = ["run", "id", "status", "model", "examples", "% Unknown", "epochs", "EARLY_STOP"]
    return table(header, rows)


def _measured(run: Run, key: str) -> tuple[tuple[float, float], ...]:
    """(epoch, percent) of one accuracy key over a run's measurements that have it."""
    return tuple((e.epoch, 100 * e.accuracy[key]) for e in run.epochs if key in e.accuracy)


def _mean_by_share(runs: list[Run], where: str, stop: str) -> tuple[tuple[float, float], ...]:
    """(% Unknown, mean accuracy %) over the runs with a measurement at that stopping point."""
    by_share: dict[float, list[float]] = defaultdict(list)
    for run in runs:
        value = accuracy_of(_stop(run, stop), where)
        if value is not None:
            by_share[100 * run.frac_unknown].append(100 * value)
    return tuple((share, mean(values)) for share, values in sorted(by_share.items()))


def _category_row(epoch: Epoch | None) -> list[float | None]:
    """Full, HK, MK, WK, Unk in-distribution accuracy in percent."""
    values = [accuracy_of(epoch, "in"), *(accuracy_of(epoch, "in", c) for c in CATEGORY_NAMES)]
    return [None if v is None else 100 * v for v in values]


def _epoch(epoch: Epoch | None) -> str:
    return "–" if epoch is None else f"{epoch.epoch:g}"
