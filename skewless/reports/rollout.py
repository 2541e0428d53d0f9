"""The rollout's report: the challenger against production on the same events, and what the
rollout policy decided.

``training/rollout.py`` fills it; `skewless rollout status|apply` print it and write it to
``var/rollout/<feature service>.json``, which /metrics reads (the ``skewless_rollout_*``
gauges) and the catalog's model page shows; the monitor report carries the comparison too.
"""

from __future__ import annotations

from typing import Literal

from rich.console import Console

from skewless.documents import JsonDocument

Action = Literal["none", "wait", "abort", "promote", "hold"]


class Latency(JsonDocument):
    """A version's model time per row on the compared events (milliseconds)."""

    rows: int  # the events it was measured on
    p50_ms: float | None = None
    p99_ms: float | None = None


class Difference(JsonDocument):
    """challenger − production on the same labelled events, with its paired bootstrap 95%
    interval (each resample scores both on the same rows); ``None`` when one class only."""

    production: float | None
    challenger: float | None
    difference: float | None
    low: float | None
    high: float | None


class Labelled(JsonDocument):
    """The compared events whose label arrived (each event once: its first scoring)."""

    events: int  # compared events with an event id (the label's key)
    labels: int
    positives: int
    outstanding: int  # still waiting for their label
    roc_auc: Difference | None = None
    # Expected cost per event at each version's own threshold, where both contracts price
    # their decisions (and what prices them is logged).
    expected_cost_per_event: Difference | None = None


class Comparison(JsonDocument):
    """One challenger against production, on the events both were asked to score since the
    rollout started."""

    name: str
    production: str | None
    challenger: str | None
    stage: str | None = None
    traffic_percent: float | None = None
    started_at: str | None = None
    events: int = 0  # logged rows with this challenger and this production version
    answered_by_challenger: int = 0  # a canary's share of them
    outcomes: dict[str, int] = {}  # the challenger's outcome per event (scored, late, …)
    error_rate: float | None = None  # events the challenger failed (raised, non-finite)
    missing_rate: float | None = None  # events its shadow score came late or was skipped
    paired: int = 0  # events both scored
    score_psi: float | None = None  # the challenger's scores against production's
    agreement: float | None = None  # same decision, each at its own threshold
    thresholds: dict[str, float] = {}  # by version
    latency: dict[str, Latency] = {}  # by version
    labelled: Labelled | None = None
    note: str | None = None  # why something could not be compared


class Check(JsonDocument):
    """One limit of the policy against its evidence."""

    name: str  # the setting
    value: float | None
    limit: float
    breached: bool


class Decision(JsonDocument):
    action: Action
    reasons: list[str]
    checks: list[Check] = []
    applied: bool = False  # the registry was changed (or the hold audited)
    gate: str | None = None  # the gate's refusal, when held


class RolloutReport(JsonDocument):
    """``var/rollout/<feature service>.json``: the latest status or apply."""

    feature_service: str
    generated_at: str
    labels_known_at: str
    command: Literal["status", "apply"]
    comparison: Comparison
    decision: Decision


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _difference(d: Difference | None, digits: int = 4) -> str:
    if d is None or d.difference is None:
        return "—"
    interval = (f" [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"
                if d.low is not None and d.high is not None else "")
    return f"{d.difference:+.{digits}f}{interval}"


def print_rollout(report: RolloutReport, console: Console) -> None:
    """The comparison, version beside version, and the decision."""
    print_comparison(report.comparison, report.decision, console, report.command == "status")


def print_comparison(c: Comparison, d: Decision, console: Console,
                     due: bool = True) -> None:
    """The comparison, version beside version, and the decision (``due``: not acted on)."""
    from rich.table import Table

    if c.challenger is None:
        console.print(f"model {c.name}: no challenger (production {c.production or 'none'})")
        return
    share = f" at {c.traffic_percent:g}%" if c.traffic_percent is not None else ""
    console.print(f"model {c.name}: challenger {c.challenger} ({c.stage}{share}) against "
                  f"production {c.production}, since {(c.started_at or '')[:19]}",
                  highlight=False)
    console.print(f"  events {c.events:,} (answered by the challenger {c.answered_by_challenger:,}"
                  f"), both scored {c.paired:,}; outcomes "
                  + (", ".join(f"{k} {v:,}" for k, v in c.outcomes.items()) or "none"),
                  highlight=False)
    table = Table()
    table.add_column("")
    for version in (c.production, c.challenger):
        table.add_column(str(version), justify="right")
    table.add_column("challenger − production", justify="right")
    lat = [c.latency.get(str(v)) for v in (c.production, c.challenger)]
    table.add_row("model ms/row p50", *(_ms(x.p50_ms if x else None) for x in lat), "")
    table.add_row("model ms/row p99", *(_ms(x.p99_ms if x else None) for x in lat), "")
    table.add_row("threshold", *(f"{c.thresholds[str(v)]:.4f}" if str(v) in c.thresholds
                                 else "—" for v in (c.production, c.challenger)), "")
    labelled = c.labelled
    if labelled is not None:
        for title, figure in (("ROC AUC", labelled.roc_auc),
                              ("cost/event", labelled.expected_cost_per_event)):
            if figure is not None:
                table.add_row(title, *("—" if x is None else f"{x:.4f}"
                                       for x in (figure.production, figure.challenger)),
                              _difference(figure))
    console.print(table)
    console.print(
        f"  error rate {'—' if c.error_rate is None else f'{c.error_rate:.4f}'}, missing "
        f"{'—' if c.missing_rate is None else f'{c.missing_rate:.4f}'}, score PSI "
        f"{'—' if c.score_psi is None else f'{c.score_psi:.4f}'}, agreement "
        f"{'—' if c.agreement is None else f'{c.agreement:.4f}'}; labels "
        + (f"{labelled.labels:,} ({labelled.positives:,} positive, {labelled.outstanding:,} "
           "outstanding)" if labelled is not None else "not joined")
        + (f"; {c.note}" if c.note else ""), highlight=False)
    colour = {"abort": "red", "promote": "green", "hold": "yellow"}.get(d.action, "cyan")
    done = " (done)" if d.applied else (" (due: `skewless rollout apply` acts on it)"
                                        if due and d.action in ("abort", "promote") else "")
    console.print(f"[{colour}]{d.action}[/]{done}: " + "; ".join(d.reasons), highlight=False)
    if d.gate:
        console.print(f"  the gate: {d.gate}", highlight=False)
