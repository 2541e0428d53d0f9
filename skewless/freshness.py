"""Freshness objectives: how old a view's online values may be when they are served.

A batch feature view declares its objective as the Feast tag ``freshness-objective``: a
duration (``26h``, ``90m``, ``2d``, or seconds) or ``none`` (attributes that hold until they
are replaced). The predictor exports the age of every value it serves — now minus the event
time Feast stored beside it (``_ts:<view>``, read in the same round trip) — as the histogram
``skewless_feature_age_seconds{view}``, and each declared objective as
``skewless_feature_freshness_objective_seconds{view}``; the alert rules compare the two, and
the catalog shows them side by side.
"""

from __future__ import annotations

import re
from typing import Any

from skewless.errors import InvalidInput

FRESHNESS_TAG = "freshness-objective"
NONE = "none"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


class FreshnessError(InvalidInput):
    """A freshness objective that is not a duration (the message names the view)."""


def duration_seconds(value: str) -> float | None:
    """Seconds of a positive duration (``26h``, ``90m``, ``2d``, ``3600``); None if it is not one."""
    match = _DURATION.match(value)
    if match is None or float(match.group(1)) <= 0:
        return None
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_objective(view: str, value: str | None) -> float | None:
    """Seconds of ``value`` (None: no objective declared, or ``none``)."""
    if value is None or value.strip().lower() == NONE:
        return None
    seconds = duration_seconds(value)
    if seconds is None:
        raise FreshnessError(f"feature view {view}: {FRESHNESS_TAG}={value!r} is not a "
                             "positive duration such as 26h, 90m, 2d or 3600 (seconds), or none")
    return seconds


def objectives(views: list[Any]) -> dict[str, float]:
    """Each view's objective in seconds, for the views that declare one."""
    out: dict[str, float] = {}
    for view in views:
        seconds = parse_objective(view.name, (view.tags or {}).get(FRESHNESS_TAG))
        if seconds is not None:
            out[view.name] = seconds
    return out
