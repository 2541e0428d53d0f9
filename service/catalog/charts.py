"""Charts as SVG images, drawn by Jinja2 templates from precomputed numbers (no plotting
library, nothing fetched by the browser)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.catalog.schemas import FeatureStatistics

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["svg", "html"]))


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e12:
        return f"{int(value):,}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def histogram_chart(stats: FeatureStatistics, title: str, width: int = 560,
                    height: int = 240) -> str:
    """Vertical bars: equal-width bins of a numeric feature, or a categorical's top values."""
    if stats.histogram is not None:
        counts = stats.histogram.counts
        edges = stats.histogram.edges
        if stats.histogram.integer:
            labels = [_number(edges[i] + 0.5) for i in range(len(counts))]
        else:
            labels = [f"{_number(edges[i])}–{_number(edges[i + 1])}" for i in range(len(counts))]
        axis = [_number(edges[0]), _number(edges[-1])]
        if stats.histogram.clipped:
            axis = ["≤ " + axis[0] + " (p1)", "≥ " + axis[1] + " (p99)"]
    else:
        top = stats.top_values or []
        counts = [n for _, n in top] + ([stats.other_count] if stats.other_count else [])
        labels = [v for v, _ in top] + (["(other)"] if stats.other_count else [])
        axis = []
    left, right, top_pad, bottom = 48, 12, 28, 44
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    peak = max(counts) or 1
    slot = plot_w / max(len(counts), 1)
    bars = [{
        "x": left + i * slot + 1, "w": max(slot - 2, 1), "h": plot_h * n / peak,
        "y": top_pad + plot_h - plot_h * n / peak, "label": label, "count": f"{n:,}",
    } for i, (n, label) in enumerate(zip(counts, labels, strict=True))]
    show_labels = stats.histogram is None and len(bars) <= 12
    return _ENV.get_template("histogram.svg").render(
        width=width, height=height, left=left, top=top_pad, plot_w=plot_w, plot_h=plot_h,
        bars=bars, title=title, peak=f"{peak:,}", axis=axis, show_labels=show_labels,
        note=f"{stats.non_null:,} values, {stats.null_rate or 0:.1%} null")


def bar_chart(bars: list[tuple[str, float]], title: str, unit: str, width: int = 900) -> str:
    """Horizontal bars, largest first, each labelled with its value and share."""
    row, left, top = 20, 300, 30
    peak = max((v for _, v in bars), default=0.0) or 1.0
    total = sum(v for _, v in bars) or 1.0
    plot_w = width - left - 140
    rows = [{
        "y": top + i * row, "w": max(plot_w * v / peak, 0.5), "label": label,
        "value": f"{_number(v)} ({v / total:.1%})",
    } for i, (label, v) in enumerate(bars)]
    return _ENV.get_template("bars.svg").render(
        width=width, height=top + len(rows) * row + 10, left=left, row=row, rows=rows,
        title=title, unit=unit, plot_w=plot_w)
