"""The expectations' report: per table, what failed (feature, rule, offending count, examples).

``skewless/expectations.py`` fills it; the CLI prints it before `validate`, `materialize` and
`dataset` go on or stop; the catalog reads the stored results.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from skewless.expectations import ValidationReport


def print_validation(report: ValidationReport, console: Console, run_id: str | None = None,
                     accepted: bool = False) -> None:
    """One line per table checked, a table of the findings, the notes, and the verdict."""
    from rich.table import Table

    for note in report.notes:
        console.print(f"[dim]{escape(note)}[/]", soft_wrap=True, highlight=False)
    for result in report.results:
        mark = "[green]passed[/]" if result.passed else "[red]failed[/]"
        rows = "no table" if result.rows is None else f"{result.rows:,} rows"
        console.print(f"{result.kind} {escape(result.target)}: {mark} ({rows}, "
                      f"{len(result.findings)} findings, {result.seconds:.1f} s; "
                      f"{escape(result.schema)})", soft_wrap=True, highlight=False)
    if report.failed:
        table = Table(title=f"Expectations failed before {report.step}")
        for column in ("table", "feature", "rule", "offending", "examples"):
            table.add_column(column, overflow="fold")
        for result in report.failed:
            for finding in result.findings:
                table.add_row(escape(result.target), escape(finding.feature),
                              escape(finding.rule), f"{finding.count:,}",
                              escape(", ".join(finding.examples)))
        console.print(table)
    if not report.results:
        console.print("no table has expectations: nothing checked")
        return
    stored = f" (stored as run {run_id})" if run_id else ""
    if report.passed:
        console.print(f"[green]expectations passed[/] for {len(report.results)} tables{stored}",
                      highlight=False)
    elif accepted:
        console.print(f"[yellow]expectations failed, accepted[/]: {report.step} goes on"
                      f"{stored}; the acceptance is audited", highlight=False)
    else:
        console.print(f"[red]expectations failed[/] for {len(report.failed)} of "
                      f"{len(report.results)} tables{stored}", highlight=False)
