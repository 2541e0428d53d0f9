"""The backtest's report as one self-contained HTML file: the decay curve as inline SVG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from skewless.reports.backtest import BacktestReport, describe_max_age

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent.parent / "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def decay_chart(report: BacktestReport, width: int = 760, height: int = 300) -> dict[str, Any]:
    """Metric against age: the line, its interval band, fresh − margin, the maximum age."""
    points = [(p, p.metric) for p in report.curve if p.metric is not None]
    band = [(p.age_days, p.low, p.high) for p in report.curve
            if p.low is not None and p.high is not None]
    values = [m for _, m in points] + [v for _, lo, hi in band for v in (lo, hi)]
    low, high = min([*values, report.threshold]) - 0.01, max([*values, report.threshold]) + 0.01
    left, right, top, bottom = 56, 20, 20, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    span = max(report.horizon_days, 1.0)

    def x(age: float) -> float:
        return left + plot_w * age / span

    def y(value: float) -> float:
        return top + plot_h - plot_h * (value - low) / (high - low)

    outline = ([f"{x(a):.1f},{y(hi):.1f}" for a, _, hi in band]
               + [f"{x(a):.1f},{y(lo):.1f}" for a, lo, _ in reversed(band)])
    return {
        "width": width, "height": height, "left": left, "top": top, "plot_w": plot_w,
        "plot_h": plot_h,
        "yticks": [{"y": y(t), "label": f"{t:.3f}"}
                   for t in (low + (high - low) * k / 4 for k in range(5))],
        "xticks": [{"x": x(a), "label": str(a)} for a in range(0, int(span) + 1)
                   if span <= 20 or a % max(int(span) // 10, 1) == 0],
        "line": " ".join(f"{'M' if i == 0 else 'L'}{x(p.age_days):.1f},{y(m):.1f}"
                         for i, (p, m) in enumerate(points)),
        "points": [{"x": x(p.age_days), "y": y(m), "below": m < report.threshold,
                    "label": f"age {p.age_days} d: {m:.4f} ({p.rows:,} rows, "
                             f"{p.positives:,} positives)"} for p, m in points],
        "band": "M" + " L".join(outline) + " Z" if outline else "",
        "threshold_y": y(report.threshold),
        "max_x": x(report.max_age_days),
    }


def render_html(report: BacktestReport) -> str:
    return _ENV.get_template("backtest.html").render(
        r=report.to_json(), chart=decay_chart(report), max_age=describe_max_age(report))
