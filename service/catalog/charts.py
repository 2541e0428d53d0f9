"""Charts as SVG images, drawn by Jinja2 templates from precomputed numbers (no plotting
library, nothing fetched by the browser)."""

from __future__ import annotations

import math
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.catalog.schemas import ExperimentRunInfo, FeatureStatistics

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


def _value_range(values: list[float]) -> tuple[float, float]:
    """The values' span with a margin, so no mark sits on the frame."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    margin = (high - low) * 0.08 or max(abs(high) * 0.01, 1e-3)
    return low - margin, high + margin


def _y_ticks(low: float, high: float, top: float, plot_h: float) -> list[dict[str, object]]:
    return [{"y": top + plot_h * k / 4, "label": f"{high - (high - low) * k / 4:.4f}"}
            for k in range(5)]


def trials_chart(runs: list[ExperimentRunInfo], metric: str, title: str, width: int = 900,
                 height: int = 300) -> str:
    """Each trial's validation metric in trial order, one mark per trial: complete filled,
    pruned hollow (its value is the last round judged), failed a cross on the axis (it has
    none); the best run ringed, and the best complete value so far as a step line."""
    left, right, top, bottom = 64, 16, 40, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    ordered = sorted(runs, key=lambda r: r.number)
    low, high = _value_range([r.value for r in ordered if r.value is not None])
    slot = plot_w / max(len(ordered), 1)

    def y(value: float) -> float:
        return top + plot_h * (high - value) / (high - low)

    marks, line = [], []
    best: float | None = None
    for i, run in enumerate(ordered):
        x = left + (i + 0.5) * slot
        shown = "no value" if run.value is None else f"{metric} {run.value:.4f}"
        marks.append({
            "x": x, "y": top + plot_h if run.value is None else y(run.value), "run": run,
            "label": f"trial {run.number} · run {run.id} · {run.state}"
                     + (" · best" if run.best else "") + f" · {shown}"})
        if run.state == "complete" and run.value is not None:
            best = run.value if best is None else max(best, run.value)
        if best is not None:
            line.append((x, y(best)))
    path = ""
    if line:
        path = f"M{line[0][0]:.1f},{line[0][1]:.1f}" + "".join(
            f" H{x:.1f} V{yy:.1f}" for x, yy in line[1:]) + f" H{line[-1][0] + slot / 2:.1f}"
    every = max(1, math.ceil(len(ordered) / 20))
    return _ENV.get_template("trials.svg").render(
        width=width, height=height, left=left, top=top, plot_w=plot_w, plot_h=plot_h,
        title=title, metric=metric, marks=marks, best_path=path,
        ticks=_y_ticks(low, high, top, plot_h),
        x_labels=[m for i, m in enumerate(marks) if i % every == 0])


def rounds_chart(runs: list[ExperimentRunInfo], metric: str, title: str, width: int = 900,
                 height: int = 300, max_points: int = 250) -> str:
    """Each run's validation metric per boosting round, one line per run (pruned dashed,
    failed red, the best drawn last and thicker); a long run is drawn from every n-th round,
    its last one kept."""
    left, right, top, bottom = 64, 16, 40, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    series = [(r, r.steps.get(metric) or []) for r in sorted(runs, key=lambda r: (r.best, r.number))]
    low, high = _value_range([v for _, steps in series for v in steps if v is not None])
    rounds = max((len(steps) for _, steps in series), default=0)
    span = max(rounds - 1, 1)
    lines = []
    for run, steps in series:
        stride = max(1, math.ceil(len(steps) / max_points))
        kept = sorted({*range(0, len(steps), stride), len(steps) - 1} - {-1})
        points = " ".join(
            f"{left + plot_w * k / span:.1f},{top + plot_h * (high - steps[k]) / (high - low):.1f}"
            for k in kept if steps[k] is not None)
        if points:
            last = next((v for v in reversed(steps) if v is not None), None)
            lines.append({"run": run, "points": points, "label": (
                f"run {run.id} · trial {run.number} · {run.state}"
                + (" · best" if run.best else "") + f" · {len(steps)} rounds, last {last:.4f}")})
    return _ENV.get_template("rounds.svg").render(
        width=width, height=height, left=left, top=top, plot_w=plot_w, plot_h=plot_h,
        title=title, metric=metric, lines=lines, rounds=rounds,
        ticks=_y_ticks(low, high, top, plot_h))
