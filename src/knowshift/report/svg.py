"""Small inline-SVG charts: line, bars, stacked bars, heatmap, intervals, scatter.

Each function returns one `<svg>` element as a string, sized in pixels and drawn from the data
alone (no randomness, no clock), so the same data gives the same bytes. Every piece of text goes
through `html.escape`; colours and numbers are the only other things written. No JavaScript, no
external resources: the charts render wherever the HTML is opened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif"
INK, GRID, MUTED = "#222", "#e3e3e3", "#666"
TOP = 34  # where a plot starts under a one-row legend
SERIES_COLOURS = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
)  # fmt: skip
CATEGORY_COLOURS = {
    "HighlyKnown": "#1a9850", "MaybeKnown": "#a6d96a", "WeaklyKnown": "#fdae61", "Unknown": "#d73027",
}  # fmt: skip


@dataclass(frozen=True)
class Series:
    """One line of a line chart: (x, y) points in drawing order."""

    name: str
    points: tuple[tuple[float, float], ...]
    colour: str
    dashed: bool = False


@dataclass(frozen=True)
class _Frame:
    """The plot area inside an SVG and the linear maps from data to pixels."""

    left: float
    top: float
    width: float
    height: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def x(self, value: float) -> float:
        lo, hi = self.x_range
        return self.left + (value - lo) / ((hi - lo) or 1) * self.width

    def y(self, value: float) -> float:
        lo, hi = self.y_range
        return self.top + self.height - (value - lo) / ((hi - lo) or 1) * self.height


def colour(index: int) -> str:
    """The index-th series colour (cycling)."""
    return SERIES_COLOURS[index % len(SERIES_COLOURS)]


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def number(value: float) -> str:
    """A tick or value label: no trailing zeros, at most 3 significant decimals."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def line_chart(
    series: Sequence[Series], *, x_label: str, y_label: str,
    y_range: tuple[float, float] | None = None, x_ticks: Sequence[tuple[float, str]] | None = None,
    width: int = 560, height: int = 300, markers: bool = True,
) -> str:  # fmt: skip
    """Lines with point markers; `x_ticks` (value, label) replaces the automatic x ticks.
    Points that are not finite numbers are left out."""
    series = [
        Series(s.name, tuple(p for p in s.points if _finite(*p)), s.colour, s.dashed)
        for s in series
    ]
    xs = [x for s in series for x, _ in s.points] or [0.0, 1.0]
    ys = [y for s in series for _, y in s.points] or [0.0, 1.0]
    x_range = (min(xs), max(xs)) if min(xs) < max(xs) else (min(xs) - 0.5, max(xs) + 0.5)
    legend, top = _legend([(s.name, s.colour, s.dashed) for s in series], width)
    frame = _Frame(56, top, width - 76, height - 80, x_range, y_range or _padded(ys))
    parts = [_axes(frame, x_label, y_label, x_ticks), legend]
    for s in series:
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        if len(s.points) > 1:
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>'
            )
        if markers or len(s.points) == 1:
            parts += [f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3.5" fill="{s.colour}">'
                      f"<title>{escape(s.name)}: {number(x)}, {number(y)}</title></circle>"
                      for x, y in s.points]  # fmt: skip
    return _svg(width, height + top - TOP, parts)


def scatter_chart(
    points: Sequence[tuple[float, float, str, str]], *, x_label: str, y_label: str,
    legend: Sequence[tuple[str, str]] = (), diagonal: bool = False, width: int = 420, height: int = 340,
) -> str:  # fmt: skip
    """Points (x, y, colour, tooltip); `diagonal` draws y = x (observed against predicted)."""
    values = [v for x, y, _, _ in points for v in (x, y)] or [0.0, 1.0]
    lo, hi = _padded(values)
    legend_markup, top = _legend([(n, c, False) for n, c in legend], width)
    frame = _Frame(56, top, width - 76, height - 80, (lo, hi), (lo, hi))
    parts = [_axes(frame, x_label, y_label), legend_markup]
    if diagonal:
        parts.append(f'<line x1="{frame.x(lo):.1f}" y1="{frame.y(lo):.1f}" x2="{frame.x(hi):.1f}" '
                     f'y2="{frame.y(hi):.1f}" stroke="{MUTED}" stroke-dasharray="4 4"/>')  # fmt: skip
    for x, y, fill, tip in points:
        parts.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="4" fill="{fill}" '
                     f'fill-opacity="0.8"><title>{escape(tip)}</title></circle>')  # fmt: skip
    return _svg(width, height + top - TOP, parts)


def grouped_bars(
    groups: Sequence[str], series: Sequence[tuple[str, str, Sequence[float | None]]], *,
    y_label: str, y_range: tuple[float, float] | None = None, width: int = 560, height: int = 300,
    value_format: str = "{:.1f}",
) -> str:  # fmt: skip
    """Vertical bars: one cluster per group, one bar per (name, colour, values) series, with
    the value written at the end of each bar wide enough to hold it (every bar's tooltip has
    it; a missing or non-finite value leaves a gap)."""
    series = [
        (name, fill, [v if v is not None and _finite(v) else None for v in vs])
        for name, fill, vs in series
    ]
    values = [v for _, _, vs in series for v in vs if v is not None] or [0.0]
    y_lo, y_hi = y_range or (min(0.0, min(values) * 1.15), max(0.0, max(values) * 1.15) or 1.0)
    legend, top = _legend([(n, c, False) for n, c, _ in series], width)
    frame = _Frame(56, top + 10, width - 76, height - 96, (0, max(len(groups), 1)), (y_lo, y_hi))
    zero = frame.y(max(y_lo, 0.0))
    parts = [_axes(frame, "", y_label, x_ticks=[]), legend,
             f'<line x1="{frame.left}" y1="{zero:.1f}" x2="{frame.left + frame.width:.1f}" y2="{zero:.1f}" stroke="{MUTED}"/>']  # fmt: skip
    slot = frame.width / max(len(groups), 1)
    bar = min(slot * 0.8 / max(len(series), 1), 56.0)
    for g, group in enumerate(groups):
        centre = frame.left + (g + 0.5) * slot
        parts.append(
            _label(centre, frame.top + frame.height + 16, group, "middle", max_chars=int(slot / 7))
        )
        for s, (name, fill, vs) in enumerate(series):
            if vs[g] is None:
                continue
            x = centre + (s - len(series) / 2) * bar
            end, text = frame.y(min(max(vs[g], y_lo), y_hi)), value_format.format(vs[g])
            parts.append(
                _rect(x, min(end, zero), bar - 2, abs(zero - end), fill, f"{group}, {name}: {text}")
            )
            if len(text) * 5.6 <= bar:  # a value wider than its bar would run into the next
                text_y = end - 4 if vs[g] >= 0 else end + 12  # above a bar, below a negative one
                parts.append(_label(x + bar / 2 - 1, text_y, text, "middle", size=10))
    return _svg(width, height + top - TOP, parts)


def stacked_bars(
    rows: Sequence[tuple[str, Sequence[float], str | None]], names: Sequence[str],
    colours: Sequence[str], *, width: int = 640, row_height: int = 26,
) -> str:  # fmt: skip
    """Horizontal bars, each (label, values, end note) stacked to 100% of its total; shares of
    8% or more are written inside their segment, the note (default "n=total") at its end."""
    label_width, span = 150, width - 150 - 60
    legend, top = _legend([(n, c, False) for n, c in zip(names, colours, strict=True)], width)
    height = top + row_height * len(rows) + 6
    parts = [legend]
    for r, (label, values, end_note) in enumerate(rows):
        y, total, x = top + r * row_height, sum(values), float(label_width)
        parts.append(_label(label_width - 8, y + row_height / 2 + 4, label, "end", max_chars=22))
        for name, fill, value in zip(names, colours, values, strict=True):
            share = value / total if total else 0.0
            w = span * share
            parts.append(
                _rect(
                    x,
                    y + 3,
                    w,
                    row_height - 6,
                    fill,
                    f"{label}, {name}: {value:g} ({100 * share:.1f}%)",
                )
            )
            if share >= 0.08:
                parts.append(
                    _label(
                        x + w / 2, y + row_height / 2 + 4, f"{100 * share:.0f}%", "middle", size=10
                    )
                )
            x += w
        end = f"n={total:g}" if end_note is None else end_note
        parts.append(_label(x + 6, y + row_height / 2 + 4, end, "start", size=10, fill=MUTED))
    return _svg(width, height, parts)


def heatmap(
    row_labels: Sequence[str], col_labels: Sequence[str], values: Sequence[Sequence[float | None]],
    texts: Sequence[Sequence[str]], *, x_label: str, y_label: str,
    hues: Sequence[Sequence[str]] | None = None, cell: int = 64,
) -> str:  # fmt: skip
    """A grid of cells, each with its text, shaded from the smallest value (light) to the largest
    (dark), in blue or in its own colour from `hues`; an empty cell (None) stays grey."""
    left, top = 130, 40
    width, height = left + cell * len(col_labels) + 20, top + cell * len(row_labels) + 20
    finite = [v for row in values for v in row if v is not None] or [0.0]
    lo, hi = min(finite), max(finite)
    middle = top + cell * len(row_labels) / 2
    parts = [_label(left + cell * len(col_labels) / 2, 14, x_label, "middle", fill=MUTED),
             f'<text x="14" y="{middle:.0f}" transform="rotate(-90 14 {middle:.0f})" text-anchor="middle" '
             f'font-size="12" fill="{MUTED}">{escape(y_label)}</text>']  # fmt: skip
    for c, name in enumerate(col_labels):
        parts.append(
            _label(left + (c + 0.5) * cell, top - 8, name, "middle", size=11, max_chars=cell // 7)
        )
    for r, name in enumerate(row_labels):
        parts.append(
            _label(left - 8, top + (r + 0.5) * cell + 4, name, "end", size=11, max_chars=18)
        )
        for c, value in enumerate(values[r]):
            x, y = left + c * cell, top + r * cell
            strength = 0.0 if value is None else (value - lo) / (hi - lo) if hi > lo else 0.6
            fill = "#f4f4f4" if value is None else hues[r][c] if hues else "#2166ac"
            tip = f"{name} / {col_labels[c]}: {texts[r][c]}"
            parts.append(_rect(x, y, cell - 2, cell - 2, fill, tip, opacity=0.1 + 0.8 * strength))
            ink = "#fff" if strength > 0.55 else INK
            parts.append(
                _label(x + cell / 2 - 1, y + cell / 2 + 4, texts[r][c], "middle", size=12, fill=ink)
            )
    return _svg(width, height, parts)


def interval_chart(
    rows: Sequence[tuple[str, float, float, float, str]], *, x_label: str,
    references: Sequence[tuple[int, float]] = (), width: int = 560,
) -> str:  # fmt: skip
    """One row per (label, estimate, low, high, colour): a dot and its interval on a shared
    axis with a line at 0; `references` (row index, value) marks a published value (open diamond)."""
    left, row_height = 170, 26
    values = (
        [v for _, e, lo, hi, _ in rows for v in (e, lo, hi)] + [v for _, v in references] + [0.0]
    )
    legend, top = _legend(
        [("estimate with its CI", INK, False), ("◇ published", MUTED, True)], width
    )
    frame = _Frame(
        left, top, width - left - 24, row_height * len(rows), _padded(values, 0.08), (0, len(rows))
    )
    parts, height = [legend], top + frame.height + 44
    for tick in ticks(*frame.x_range):
        x = frame.x(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{frame.top + frame.height}" stroke="{GRID}"/>'
        )
        parts.append(_label(x, frame.top + frame.height + 16, number(tick), "middle", size=11))
    parts.append(
        f'<line x1="{frame.x(0):.1f}" y1="{frame.top}" x2="{frame.x(0):.1f}" y2="{frame.top + frame.height}" stroke="{MUTED}"/>'
    )
    parts.append(
        _label(
            frame.left + frame.width / 2,
            frame.top + frame.height + 34,
            x_label,
            "middle",
            fill=MUTED,
        )
    )
    for r, (label, estimate, lo, hi, fill) in enumerate(rows):
        y = frame.top + (r + 0.5) * row_height
        parts.append(_label(left - 10, y + 4, label, "end", size=11, max_chars=26))
        parts.append(
            f'<line x1="{frame.x(lo):.1f}" y1="{y:.1f}" x2="{frame.x(hi):.1f}" y2="{y:.1f}" stroke="{fill}" stroke-width="2"/>'
        )
        parts.append(f'<circle cx="{frame.x(estimate):.1f}" cy="{y:.1f}" r="4.5" fill="{fill}">'
                     f"<title>{escape(f'{label}: {estimate:.2f} [{lo:.2f}, {hi:.2f}]')}</title></circle>")  # fmt: skip
    for r, value in references:
        x, y = frame.x(value), frame.top + (r + 0.5) * row_height
        parts.append(f'<path d="M{x:.1f},{y - 6:.1f} L{x + 6:.1f},{y:.1f} L{x:.1f},{y + 6:.1f} L{x - 6:.1f},{y:.1f} Z" '
                     f'fill="none" stroke="{MUTED}" stroke-width="1.5"><title>published: {value:g}</title></path>')  # fmt: skip
    return _svg(width, height, parts)


# --- pieces -----------------------------------------------------------------------------------


def _svg(width: float, height: float, parts: Sequence[str]) -> str:
    """The chart element: pixel-sized, shrinking with a narrow page, no namespace needed inline."""
    w, h, body = round(width), round(height), "".join(parts)
    return (f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            f'style="{FONT};max-width:100%;height:auto" font-size="12">{body}</svg>')  # fmt: skip


def _rect(x: float, y: float, width: float, height: float, fill: str, tip: str,
          opacity: float = 1.0) -> str:  # fmt: skip
    """A filled rectangle with an (escaped) tooltip."""
    shade = f' fill-opacity="{opacity:.2f}"' if opacity < 1 else ""
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{fill}"{shade}>'
            f"<title>{escape(tip)}</title></rect>")  # fmt: skip


def _label(x: float, y: float, text: str, anchor: str, *, size: int = 12, fill: str = INK,
           max_chars: int | None = None) -> str:  # fmt: skip
    """Escaped text; shortened with an ellipsis past `max_chars` (the whole in its tooltip)."""
    shown = text if not max_chars or len(text) <= max_chars else text[: max(max_chars - 1, 1)] + "…"
    tip = f"<title>{escape(text)}</title>" if shown != text else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{fill}">{tip}{escape(shown)}</text>')  # fmt: skip


def _legend(entries: Sequence[tuple[str, str, bool]], width: int) -> tuple[str, float]:
    """Swatches along the top, wrapped into rows; returns the markup and where the plot starts."""
    parts, x, y = [], 56.0, 14.0
    for name, fill, dashed in entries:
        size = min(len(name), 34) * 7 + 40
        if x + size > width and x > 56:
            x, y = 56.0, y + 16
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(
            f'<line x1="{x:.0f}" y1="{y - 4:.0f}" x2="{x + 18:.0f}" y2="{y - 4:.0f}" stroke="{fill}" stroke-width="3"{dash}/>'
        )
        parts.append(_label(x + 23, y, name, "start", size=11, max_chars=34))
        x += size
    return "".join(parts), y + TOP - 14


def _axes(frame: _Frame, x_label: str, y_label: str,
          x_ticks: Sequence[tuple[float, str]] | None = None) -> str:  # fmt: skip
    """Grid lines, tick labels and axis titles of a frame."""
    bottom, right = frame.top + frame.height, frame.left + frame.width
    parts = []
    for tick in ticks(*frame.y_range):
        y = frame.y(tick)
        parts.append(
            f'<line x1="{frame.left}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
        )
        parts.append(_label(frame.left - 6, y + 4, number(tick), "end", size=11))
    x_marks = x_ticks if x_ticks is not None else [(t, number(t)) for t in ticks(*frame.x_range)]
    for value, text in x_marks:
        parts.append(_label(frame.x(value), bottom + 16, text, "middle", size=11))
    parts.append(
        f'<line x1="{frame.left}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" stroke="{MUTED}"/>'
    )
    parts.append(_label(frame.left + frame.width / 2, bottom + 34, x_label, "middle", fill=MUTED))
    middle = frame.top + frame.height / 2
    parts.append(f'<text x="14" y="{middle:.0f}" transform="rotate(-90 14 {middle:.0f})" text-anchor="middle" '
                 f'font-size="12" fill="{MUTED}">{escape(y_label)}</text>')  # fmt: skip
    return "".join(parts)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _padded(values: Sequence[float], margin: float = 0.05) -> tuple[float, float]:
    """The values' range widened by `margin` of its span on each side (a flat range by 1)."""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * margin if hi > lo else 1.0
    return lo - pad, hi + pad
