"""The monitor's report as one self-contained HTML file: inline SVG charts, no script, nothing
fetched — it can be mailed, attached to a ticket or opened from disk years later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from skewless.reports.monitor import FeatureDrift, MonitorReport, VersionReport

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989")


def _short(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def psi_bars(drift: dict[str, FeatureDrift], threshold: float, width: int = 760) -> dict[str, Any]:
    """Horizontal bars of PSI per feature, largest first, the threshold drawn across."""
    items = sorted(drift.items(), key=lambda kv: -kv[1].psi)
    row, left, top = 18, 290, 24
    peak = max([threshold * 1.25, *(d.psi for _, d in items)])
    plot_w = width - left - 70
    return {
        "width": width, "height": top + len(items) * row + 24, "left": left, "top": top,
        "plot_w": plot_w, "row": row,
        "threshold_x": left + plot_w * threshold / peak, "threshold": f"{threshold:g}",
        "bars": [{"y": top + i * row, "w": max(plot_w * d.psi / peak, 0.5), "label": name,
                  "value": f"{d.psi:.3f}", "drifted": d.drifted}
                 for i, (name, d) in enumerate(items)],
    }


def paired_bars(labels: list[str], baseline: list[float], serving: list[float],
                width: int = 760, height: int = 220) -> dict[str, Any]:
    """Baseline and serving shares side by side per bin (or category)."""
    left, right, top, bottom = 44, 10, 24, 54
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([*baseline, *serving, 1e-9])
    slot = plot_w / max(len(labels), 1)
    bar = max(slot / 2 - 2, 1)
    groups = []
    for i, label in enumerate(labels):
        x = left + i * slot + 1
        groups.append({
            "label": label, "x": x + slot / 2 - 1,
            "bars": [{"x": x + j * (bar + 1), "w": bar, "h": plot_h * share / peak,
                      "y": top + plot_h - plot_h * share / peak, "share": f"{share:.1%}",
                      "cls": cls}
                     for j, (share, cls) in enumerate(((baseline[i], "base"),
                                                       (serving[i], "serve")))]})
    return {"width": width, "height": height, "left": left, "top": top, "plot_w": plot_w,
            "plot_h": plot_h, "groups": groups, "peak": f"{peak:.0%}",
            "rotate": len(labels) > 8}


def bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    return ([f"< {_short(edges[0])}"]
            + [f"{_short(a)}–{_short(b)}" for a, b in zip(edges, edges[1:], strict=False)]
            + [f"≥ {_short(edges[-1])}"])


def distribution(drift: FeatureDrift) -> dict[str, Any]:
    if drift.categories is not None:
        c = drift.categories
        return paired_bars(c.names, c.baseline, c.serving)
    b = drift.bins
    assert b is not None  # a numeric feature's
    return paired_bars(bin_labels(b.edges), b.baseline, b.serving)


def auc_lines(versions: list[VersionReport], width: int = 760,
              height: int = 260) -> dict[str, Any] | None:
    """ROC AUC per time bucket, one line per model version (cells too small left out)."""
    series = []
    for v in versions:
        buckets = v.performance.buckets if v.performance is not None else []
        points = [(b.start or "", b.roc_auc) for b in buckets
                  if b.ok and b.roc_auc is not None]
        if points:
            series.append((v.version, points))
    if not series:
        return None
    starts = sorted({s for _, points in series for s, _ in points})
    values = [a for _, points in series for _, a in points]
    low = min(0.5, min(values) - 0.02)
    high = min(1.0, max(values) + 0.02)
    left, right, top, bottom = 50, 150, 20, 40
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(start: str) -> float:
        i = starts.index(start)
        return left + (plot_w * i / (len(starts) - 1) if len(starts) > 1 else plot_w / 2)

    def y(auc: float) -> float:
        return top + plot_h - plot_h * (auc - low) / (high - low)

    ticks = [low + (high - low) * k / 4 for k in range(5)]
    return {
        "width": width, "height": height, "left": left, "top": top, "plot_w": plot_w,
        "plot_h": plot_h,
        "ticks": [{"y": y(t), "label": f"{t:.2f}"} for t in ticks],
        "xlabels": [{"x": x(s), "label": s[:16].replace("T", " ")} for s in
                    (starts if len(starts) <= 8 else starts[:: max(len(starts) // 8, 1)])],
        "series": [{"name": name, "color": PALETTE[i % len(PALETTE)],
                    "points": [{"x": x(s), "y": y(a), "label": f"{s[:16]} AUC {a:.4f}"}
                               for s, a in points],
                    "path": " ".join(f"{'M' if j == 0 else 'L'}{x(s):.1f},{y(a):.1f}"
                                     for j, (s, a) in enumerate(points)),
                    "legend_y": top + 14 + 18 * i}
                   for i, (name, points) in enumerate(series)],
    }


def render_html(report: MonitorReport) -> str:
    """The page; the template reads the report's JSON document, keys absent where they are
    absent in the file."""
    doc = report.to_json()
    threshold = report.thresholds.psi
    charts: dict[str, Any] = {"auc": auc_lines(report.versions), "versions": {}}
    for v, entry in zip(report.versions, doc["versions"], strict=True):
        if v.drift is None or not v.drift.features:
            continue
        drift = v.drift.features
        shown = v.drift.drifted or sorted(drift, key=lambda f: -drift[f].psi)[:3]
        scores = v.prediction_drift.bins if v.prediction_drift is not None else None
        charts["versions"][v.version] = {
            "psi": psi_bars(drift, threshold),
            "distributions": [(f, entry["drift"]["features"][f], distribution(drift[f]))
                              for f in shown],
            "scores": (paired_bars(bin_labels(scores.edges), scores.baseline, scores.serving)
                       if scores is not None else None),
        }
    return _ENV.get_template("monitor.html").render(r=doc, charts=charts)
