"""What training evaluates beyond the holdout's overall metrics, and where its columns come from.

Slices, inclusion groups and the decision's costs name columns that are not always model
inputs: a slice may be a feature (``merchant_stats__merchant_category``) or a field of the
label events (``channel``); a group (a card-holder's age band) and the amount a missed fraud
costs are, by design, label-event columns that the model never sees. :func:`event_columns`
reads them for a window's rows — from the window itself when it holds them, otherwise from
the label events by event id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq

from skewless.contract import Staleness
from skewless.errors import InvalidInput
from training.dataset import LabelSource
from training.evaluation.backtest import read_staleness

if TYPE_CHECKING:
    from skewless.settings import Settings


class EvaluationColumnError(InvalidInput):
    """A slice, group or cost column is in neither the training set nor the label events."""


@dataclass(frozen=True)
class EvaluationPlan:
    """The settings' evaluation part, fixed once for a training (and its retrainings)."""

    label_source: LabelSource | None = None
    slices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    amount_column: str | None = None
    missed_cost: float | None = None
    review_fee: float = 1.0
    bootstrap: int = 200
    seed: int = 7
    threshold: float = 0.5  # the inclusion groups' rates are of the decisions at it
    # The maximum useful age the latest backtest found, stored with the model as measured.
    staleness: Staleness | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EvaluationPlan:
        return cls(label_source=LabelSource.from_settings(settings),
                   slices=tuple(settings.slices), groups=tuple(settings.inclusion_groups),
                   amount_column=settings.decision_amount_column,
                   missed_cost=settings.decision_missed_cost,
                   review_fee=settings.decision_review_fee,
                   bootstrap=settings.evaluation_bootstrap, seed=settings.seed,
                   threshold=settings.decision_threshold,
                   staleness=read_staleness(settings))


def event_columns(frame: pd.DataFrame, id_column: str, source: LabelSource | None,
                  columns: list[str]) -> pd.DataFrame:
    """``columns`` for ``frame``'s rows, indexed like it: the frame's own columns where it has
    them, the others from the label events joined by ``id_column``."""
    out = pd.DataFrame(index=frame.index)
    own = [c for c in columns if c in frame.columns]
    for column in own:
        out[column] = frame[column]
    wanted = [c for c in dict.fromkeys(columns) if c not in own]
    if not wanted:
        return out
    if source is None or not source.events_path.is_file():
        raise EvaluationColumnError(
            f"column(s) {', '.join(wanted)} are not in the training set and there are no label "
            "events to read them from")
    names = set(pq.read_schema(source.events_path).names)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise EvaluationColumnError(
            f"column(s) {', '.join(missing)} are in neither the training set nor the label "
            f"events ({source.events_path}); check SKEWLESS_SLICES, "
            "SKEWLESS_INCLUSION_GROUPS and SKEWLESS_DECISION_AMOUNT_COLUMN")
    events = pq.read_table(source.events_path, columns=[source.id_column, *wanted]).to_pandas()
    events = events.drop_duplicates(source.id_column).set_index(source.id_column)
    joined = events.reindex(frame[id_column].to_numpy())
    for column in wanted:
        out[column] = joined[column].to_numpy()
    return out
