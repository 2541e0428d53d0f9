"""The skew check's report: per feature, how many values the training path reproduced.

``training/skew.py`` fills it; the CLI prints it; ``/metrics`` and the catalog read its JSON.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from rich.console import Console


class FeatureResult(BaseModel):
    """One feature: values compared, mismatches, their causes and a few examples.

    An example holds ``request_id``, ``entity``, ``served``, ``offline`` and ``cause``; from the
    served logs also ``served_at``, and for batch features the two values' event times
    (``served_event_time``, ``offline_event_time``).
    """

    checked: int = 0
    mismatches: int = 0
    causes: Counter[str] = Field(default_factory=Counter)
    examples: list[dict[str, Any]] = Field(default_factory=list)


class SkewReport(BaseModel):
    """Served rows (or online entities) replayed through the training path, per feature."""

    ONLINE_STORE: ClassVar[str] = "(online store)"  # the log_dir of an online reconciliation

    feature_service: str
    rows: int
    since: str | None
    until: str | None
    log_dir: str
    tolerance: dict[str, float]
    features: dict[str, FeatureResult]
    checked_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def mismatches(self) -> int:
        return sum(r.mismatches for r in self.features.values())

    def to_json(self) -> dict[str, Any]:
        """The report file's document: the totals first, then each feature."""
        doc = self.model_dump()
        features = doc.pop("features")
        return {**doc, "mismatches": self.mismatches, "features": features}

    @classmethod
    def from_json(cls, doc: Any) -> SkewReport:
        return cls.model_validate(doc)


def print_skew(report: SkewReport, console: Console, brief: bool = False) -> None:
    """A table of the features checked (``brief``: only those that mismatched), an example per
    mismatching feature, and the verdict."""
    from rich.table import Table

    what = ("entities of the online store reconciled with the offline latest values"
            if report.log_dir == SkewReport.ONLINE_STORE else
            "served rows replayed through the training path")
    table = Table(title=f"Skew check of {report.feature_service}: {report.rows:,} {what}")
    for column in ("feature", "checked", "mismatches", "causes"):
        table.add_column(column)
    for name, result in report.features.items():
        if brief and not result.mismatches:
            continue
        table.add_row(name, f"{result.checked:,}",
                      f"[red]{result.mismatches:,}[/]" if result.mismatches else "0",
                      ", ".join(f"{c} {n}" for c, n in result.causes.most_common()))
    if table.row_count:
        console.print(table)
    for name, result in report.features.items():
        for example in result.examples[:1]:
            console.print(f"[red]{name}[/] {example['cause']}: entity {example['entity']}, "
                          f"served {example['served']!r} "
                          f"(event time {example.get('served_event_time', '-')}), offline "
                          f"{example['offline']!r} (event time "
                          f"{example.get('offline_event_time', '-')}), request "
                          f"{example['request_id']}", soft_wrap=True)
    verdict = "[green]no skew[/]" if report.mismatches == 0 else \
        f"[red]{report.mismatches:,} mismatching values[/]"
    console.print(f"{verdict} over {report.rows:,} rows (floats within relative "
                  f"{report.tolerance['relative']:g}, absolute {report.tolerance['absolute']:g})")
