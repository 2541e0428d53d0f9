"""The doctor's report: per item of a Feast repo and the settings, what works and what to change.

``skewless/doctor.py`` fills it; ``skewless doctor`` prints it (or its JSON) and exits 1 when
an item blocks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from rich.console import Console

from skewless.requirements import Problem

Status = Literal["ok", "warn", "blocks"]


class Finding(BaseModel):
    """One item: ``ok`` (works), ``warn`` (works, with a cost or a trap worth knowing) or
    ``blocks`` (a command will fail or give wrong results until it is changed)."""

    item: str
    status: Status
    found: str
    change: str = ""

    @classmethod
    def of(cls, item: str, problem: Problem, status: Status = "blocks") -> Finding:
        """A finding in the words the command that relies on it raises."""
        return cls(item=item, status=status, found=problem.found, change=problem.change)

    @property
    def message(self) -> str:
        """What was found and what to change, as one line (a command's error holds it)."""
        return str(Problem(self.found, self.change)) if self.change else self.found


class DoctorReport(BaseModel):
    repo: str
    feature_service: str
    findings: list[Finding]

    @property
    def blocked(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "blocks"]

    def to_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "feature_service": self.feature_service,
                "ok": not self.blocked,
                "findings": [{**f.model_dump(), "message": f.message} for f in self.findings]}


_STYLE = {"ok": "green", "warn": "yellow", "blocks": "bold red"}


def print_doctor(report: DoctorReport, console: Console) -> None:
    """One entry per item: its status, what was found and (below it) what to change."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text(f"skewless doctor: {report.repo} (feature service "
                       f"{report.feature_service})", style="bold"), soft_wrap=True)
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")  # paths stay whole: folded, never cut short
    for finding in report.findings:
        text = Text(finding.item, style="bold")  # Text: brackets in findings are not markup
        text.append(": " + finding.found)
        if finding.change:
            text.append("\n→ " + finding.change, style="bold" if finding.status != "ok" else "")
        grid.add_row(Text(finding.status, style=_STYLE[finding.status]), text)
    console.print(grid)
    blocked = report.blocked
    if blocked:
        console.print(Text(f"{len(blocked)} item(s) block: "
                           f"{', '.join(f.item for f in blocked)}", style="bold red"))
    else:
        warned = sum(f.status == "warn" for f in report.findings)
        console.print(Text("nothing blocks" + (f" ({warned} warning(s))" if warned else ""),
                           style="green"))
