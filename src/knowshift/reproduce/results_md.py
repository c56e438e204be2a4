"""RESULTS.md: the verdicts as a Markdown page.

    context = results_context(stores)          # model, study sizes, versions: from the stores
    text = render_results(verdicts, context)   # pure: same input, byte-identical text

The page has no clock and fixed float formats; rows follow the order of `verdicts`, parts the
order the findings declare them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from knowshift.reproduce.findings import RULE, get_finding
from knowshift.reproduce.verdicts import Verdict, done_runs, format_number


@dataclass(frozen=True)
class ResultsContext:
    """What the page states beside the verdicts: the model(s), each study's sizes in words, and
    per package the version(s) the runs were made with."""

    model: str
    sizes: tuple[tuple[str, str], ...]  # (study, "7 done runs, seeds 0, 1, 2; ...")
    versions: tuple[tuple[str, str], ...]  # (package, "2.5.1" or "2.5.1 / 2.6.0")


def results_context(stores: Sequence) -> ResultsContext:
    """The model, sizes and versions of every study in `stores` (their done runs)."""
    models, sizes, versions = set(), [], defaultdict(set)
    for store in stores:
        evaluated = {a["subject"]: a["params"].get("limit") for a in store.analyses("eval")}
        for study in sorted({row["study"] for row in store.study_runs()}):
            runs = done_runs(store, study)
            configs = [run.config for run in runs]
            models.update(str(c["model"]) for c in configs if c.get("model"))
            for config in configs:
                for recorded in [config.get("versions") or {}, *config.get("earlier_versions", [])]:
                    for package, version in recorded.items():
                        versions[package].add(str(version))
            set_sizes = sorted(
                {(c.get("group_sizes") or {}).get("train") for c in configs} - {None}
            )
            tests = sorted({evaluated.get(f"{run.run_id}:last") for run in runs} - {None})
            said = [f"{len(runs)} done runs", f"seeds {_listed(sorted({r.seed for r in runs}))}"]
            said += [f"training sets of {_listed(set_sizes)} examples"] if set_sizes else []
            said += [f"{_listed(tests)} test facts evaluated"] if tests else []
            sizes.append((study, "; ".join(said)))
    return ResultsContext(
        " / ".join(sorted(models)) or "unknown",
        tuple(sizes),
        tuple((p, " / ".join(sorted(versions[p]))) for p in sorted(versions)),
    )


def _listed(values) -> str:
    return ", ".join(str(v) for v in values) or "none"


def render_results(verdicts: Sequence[Verdict], context: ResultsContext) -> str:
    """RESULTS.md as text: the verdict table, each finding in detail, sizes and environment."""
    lines = [
        "# Reproduction results",
        "",
        f"Model: {context.model}. Each finding was declared, with its statistic and decision "
        "rule, before any run (`knowshift.reproduce.findings`). The rule:",
        "",
        f"> {RULE}",
        "",
        "## Verdicts",
        "",
        "| finding | paper's figure | our statistic [95% CI] | seeds | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        f = get_finding(v.finding_id)
        cells = [f"{f.id} {f.name} ({f.paper})", f.figure, _statistic_cell(v), str(v.n_seeds),
                 f"**{v.verdict}**"]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "## Findings", ""]
    for v in verdicts:
        f = get_finding(v.finding_id)
        lines += [
            f"### {f.id} {f.name}: {v.verdict}",
            "",
            f"- Claim ({f.paper}): {f.claim}",
            f"- Study: `{f.study}`; reads {f.reads}.",
            *(f"- {p.name}: {p.definition}; published {p.published}." for p in f.parts),
            f"- Interval: {f.interval}. Resampled here: {v.resampled}.",
            f"- Seeds: {v.n_seeds}; runs: {v.n_runs}.",
            f"- Why: {v.reason}.",
            "",
        ]
    lines += ["## Studies", ""]
    lines += [f"- `{study}`: {text}" for study, text in context.sizes] or ["- none"]
    lines += ["", "## Environment", "", "| package | version |", "| --- | --- |"]
    lines += [f"| {_cell(p)} | {_cell(v)} |" for p, v in context.versions]
    return "\n".join(lines) + "\n"


def _statistic_cell(v: Verdict) -> str:
    parts = []
    for name in get_finding(v.finding_id).parts:
        estimate, interval = v.statistics.get(name.name), v.intervals.get(name.name)
        bounds = (
            f" [{format_number(interval[0])}, {format_number(interval[1])}]" if interval else ""
        )
        parts.append(f"{name.name} = {format_number(estimate)}{bounds}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")
