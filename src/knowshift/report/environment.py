"""The versions the report's results were made with: a small table at the end of the report,
and a plain warning at its top when they were not all made with the same ones (probe results
under one transformers, training runs under another), naming the package, the versions and
the results that used each."""

from __future__ import annotations

from collections.abc import Sequence

from knowshift.report.data import Made, Study
from knowshift.report.html import note, table, warning
from knowshift.versions import versions_in_use

ANCHOR = "environment"
KINDS = (("run", "runs"), ("probe settings", "probe settings"), ("analysis", "analyses"))
NAMED = 4  # results named per kind in a cell; the rest are counted


def mixed_versions(study: Study) -> str | None:
    """The warning when the results were made with more than one version of a package, e.g.
    "transformers 5.19.0 (probe settings k (exact)) and 5.25.0 (runs a, b)"; None otherwise."""
    mixed = [
        f"{package} " + " and ".join(f"{version} ({_used_by(made)})" for version, made in versions.items())
        for package, versions in versions_in_use((m, m.versions) for m in study.made).items()
        if len(versions) > 1
    ]  # fmt: skip
    if not mixed:
        return None
    return (f"Not all results here were made with the same versions: {'; '.join(mixed)}. "
            "Differences between those results may come from the versions, not only from "
            "their settings.")  # fmt: skip


def environment_section(study: Study) -> str:
    """The Environment section: per package, each version and the results made with it."""
    used = versions_in_use((m, m.versions) for m in study.made)
    n_results = len({(m.kind, m.name) for m in study.made})
    rows = [
        (package, version, _used_by(made, n_results))
        for package, versions in used.items()
        for version, made in versions.items()
    ]
    body = table(("package", "version", "results made with it"), rows) if rows else ""
    unrecorded = sorted({m.name for m in study.made if not m.versions})
    if unrecorded:
        body += note(f"{len(unrecorded)} result(s) record no versions (stored by an older "
                     f"knowshift or written by hand): {_names(unrecorded)}.")  # fmt: skip
    mixed = mixed_versions(study)
    return (
        f'<section id="{ANCHOR}"><h2>Environment</h2>'
        '<p class="shows">The package versions the runs, probe results and analyses of this '
        "report were made with, as stored with each of them.</p>"
        + (warning(mixed) if mixed else "")
        + body
        + "</section>"
    )


def _used_by(made: Sequence[Made], n_results: int | None = None) -> str:
    """The results of `made` by kind ("runs a, b; analyses shift a (last)"), or "all N"."""
    distinct = list(dict.fromkeys((m.kind, m.name) for m in made))
    if n_results is not None and len(distinct) == n_results:
        return f"all {n_results}"
    parts = []
    for kind, plural in KINDS:
        names = [name for k, name in distinct if k == kind]
        if names:
            parts.append(f"{kind if len(names) == 1 else plural} {_names(names)}")
    return "; ".join(parts)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMED])
    return shown if len(names) <= NAMED else f"{shown} and {len(names) - NAMED} more"
