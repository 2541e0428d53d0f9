"""The acceptance gate's verdict as the terminal shows it: one row per criterion."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from skewless.gate import GateDecision

STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}


def print_criteria(decision: GateDecision, console: Console) -> None:
    """Every criterion with its verdict, evidence and the setting that decides it."""
    if not decision.criteria:
        return
    table = Table(title="Acceptance gate", title_justify="left")
    for column in ("criterion", "verdict", "evidence", "setting"):
        table.add_column(column, overflow="fold")
    for c in decision.criteria:
        style = STYLE.get(c.status, "")
        table.add_row(c.name, f"[{style}]{c.status}[/]" if style else c.status, c.message,
                      c.setting)
    console.print(table)
