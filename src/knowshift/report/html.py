"""The page: sections of figures and tables, with the style sheet inline.

Every string that came from the database (labels, relations, answers, model names) is escaped
here or in `svg`; the only markup is the one these functions write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from knowshift.report.captions import About
from knowshift.report.data import Study

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#222;margin:0;
  background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:0 0 6px}
h3{font-size:14px;margin:14px 0 4px;color:#444}
section{background:#fff;border:1px solid #e2e2e2;border-radius:8px;padding:18px 22px;margin:18px 0}
.meta{color:#666;font-size:13px;margin:0 0 10px}
nav{font-size:13px;columns:3;margin:10px 0 0;padding:0}
nav a{color:#1f5fa8;text-decoration:none;display:block}
p.shows{margin:2px 0;font-size:14px} p.published{margin:2px 0 10px;font-size:13px;color:#555}
p.published b{color:#8a4b00}
p.missing{color:#777;font-style:italic;font-size:14px;margin:6px 0}
p.warning{color:#8a4b00;background:#fff8ef;border-left:3px solid #d08a2c;font-size:14px;
  margin:6px 0;padding:4px 8px}
.figures{display:flex;flex-wrap:wrap;gap:10px 28px;align-items:flex-start}
figure{margin:8px 0} figcaption{font-size:12px;color:#555;margin-top:2px;max-width:560px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0 4px}
th,td{border-bottom:1px solid #e6e6e6;padding:3px 9px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;font-weight:600;white-space:normal;vertical-align:bottom}
.table{overflow-x:auto;max-width:100%} td:first-child,th:first-child{text-align:left}
tr.published td{color:#8a4b00;background:#fff8ef}
code{font-size:12px;background:#f1f1f1;padding:1px 4px;border-radius:3px}
"""


@dataclass(frozen=True)
class Section:
    """A part of the report: its `About` and its figures and tables, or None when the study
    holds no data for it (the section then says so and names what would produce it)."""

    about: About
    body: str | None


def page(study: Study, sections: Sequence[Section], summary: str, warnings: Sequence[str] = (),
         environment: str = "") -> str:  # fmt: skip
    """The whole HTML document: title, summary, `warnings` (plain text), contents, the
    sections, then `environment` (a whole section, id "environment")."""
    toc = "".join(
        f'<a href="#{s.about.anchor}">{escape(s.about.title)}'
        f"{'' if s.body else ' (not in this study)'}</a>"
        for s in sections
    ) + ('<a href="#environment">Environment</a>' if environment else "")
    notes = "".join(warning(text) for text in warnings)
    if study.failed:
        failures = "; ".join(f"{label}: {error}" for label, error in study.failed)
        notes += note(f"{len(study.failed)} run(s) failed: {failures}")
    if study.unreadable:
        notes += note(
            f"Stored in a shape this report cannot read (an older knowshift?): {', '.join(study.unreadable)}."
        )
    title = f"knowshift report: {escape(study.title)}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{STYLE}</style></head><body><main><h1>{title}</h1>"
        f'<p class="meta">{summary}</p>{notes}<nav>{toc}</nav>'
        + "".join(_section(s) for s in sections)
        + environment
        + "</main></body></html>\n"
    )


def _section(section: Section) -> str:
    about = section.about
    body = section.body
    if body is None:
        body = note_html(f"Not in this study: {escape(about.missing)}.")
    return (
        f'<section id="{about.anchor}"><h2>{escape(about.title)}</h2>'
        f'<p class="shows">{escape(about.shows)}</p>'
        f'<p class="published"><b>Published:</b> {escape(about.published)}</p>{body}</section>'
    )


def figures(*items: str) -> str:
    """Figures side by side, wrapping onto new lines when the page is narrow."""
    return f'<div class="figures">{"".join(items)}</div>'


def figure(svg: str, caption: str = "") -> str:
    """A chart with an (escaped) caption under it."""
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{text}</figure>"


def heading(text: str) -> str:
    return f"<h3>{escape(text)}</h3>"


def note(text: str) -> str:
    """A remark in the style of a missing-data note (escaped)."""
    return note_html(escape(text))


def warning(text: str) -> str:
    """A remark the reader must not miss (escaped), e.g. results made with other versions."""
    return f'<p class="warning">{escape(text)}</p>'


def note_html(markup: str) -> str:
    return f'<p class="missing">{markup}</p>'


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    published: Sequence[Sequence[object]] = (),
) -> str:
    """A table of escaped cells; `published` rows follow in the published-figure colour."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join(_row(r) for r in rows) + "".join(
        _row(r, ' class="published"') for r in published
    )
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _row(cells: Sequence[object], attributes: str = "") -> str:
    return f"<tr{attributes}>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>"


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction (0-1) as a percentage, or a dash."""
    return "–" if value is None else f"{100 * value:.{digits}f}"


def fixed(value: float | None, digits: int = 2) -> str:
    """A number with fixed decimals, or a dash (also for nan)."""
    return "–" if value is None or value != value else f"{value:.{digits}f}"
