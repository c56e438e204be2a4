"""One self-contained HTML report of a study, drawn only from its results database.

    path = write_report("studies/unknown-ratio")   # -> studies/unknown-ratio/report.html

The report opens in any browser without a network: the charts are inline SVG drawn here, the
style sheet is inline, and there is no JavaScript. Each section says what it shows and the
published direction to compare with (METHODS.md); a section whose data the study does not hold
says so and names the command that would produce it.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from knowshift.report.analyses import (
    benchmarks_section,
    collapse_section,
    consistency_section,
    restoration_section,
    shift_section,
    token_kl_section,
)
from knowshift.report.data import Study, load_study
from knowshift.report.environment import environment_section, mixed_versions
from knowshift.report.html import page
from knowshift.report.training import (
    categories_section,
    category_table_section,
    dynamics_section,
    regression_section,
    runs_table,
    size_mastery_section,
    unknown_share_section,
)

REPORT_FILE = "report.html"
SECTIONS = (
    categories_section, dynamics_section, unknown_share_section, regression_section,
    category_table_section, size_mastery_section, restoration_section, shift_section,
    collapse_section, token_kl_section, consistency_section, benchmarks_section,
)  # fmt: skip


def write_report(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the study (or workspace) folder `study_dir` to `out` (default
    STUDY_DIR/report.html), atomically, and return its path."""
    study = load_study(study_dir)
    html = render_report(study)
    path = Path(out) if out is not None else Path(study_dir) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def render_report(study: Study) -> str:
    """The report's HTML text."""
    n_analyses = sum(len(v) for v in study.analyses.values())
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(study.analyses.items()))
    summary = (f"From <code>{escape(str(study.database))}</code>: {len(study.runs)} runs, "
               f"{n_analyses} stored analyses{f' ({escape(kinds)})' if kinds else ''}.")  # fmt: skip
    mixed = mixed_versions(study)
    return page(study, [section(study) for section in SECTIONS], summary + runs_table(study),
                [mixed] if mixed else [], environment_section(study))  # fmt: skip


__all__ = ["REPORT_FILE", "render_report", "write_report"]
