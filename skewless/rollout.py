"""What the predictor and the rollout's readers share: the log's rollout columns, the
challenger's outcomes and the canary's stable assignment.

Every logged row names the version that answered it (``model_version``, ``score``), and
carries production's version and score and, while a rollout is open, the challenger's
version, stage, score and outcome, so every comparison is paired on the same event. Model
time is per row: a call's duration divided by the rows it scored.
"""

from __future__ import annotations

import hashlib
from typing import Any

PRODUCTION_VERSION = "production_version"
PRODUCTION_SCORE = "production_score"
PRODUCTION_MODEL_US = "production_model_us"
CHALLENGER_VERSION = "challenger_version"
CHALLENGER_STAGE = "challenger_stage"  # shadow or canary
CHALLENGER_SCORE = "challenger_score"  # null unless the outcome is SCORED
CHALLENGER_OUTCOME = "challenger_outcome"  # null when no challenger was served
CHALLENGER_MODEL_US = "challenger_model_us"  # null unless it answered (scored or non-finite)

# A challenger score's outcome.
SCORED = "scored"
LATE = "late"  # a shadow score not there within SKEWLESS_SHADOW_BUDGET_MS
ERROR = "error"  # the challenger raised
NONFINITE = "nonfinite"  # NaN or infinite
OVERLOADED = "overloaded"  # more rows waiting than SKEWLESS_SHADOW_QUEUE_ROWS
OUTCOMES = (SCORED, LATE, ERROR, NONFINITE, OVERLOADED)

BUCKETS = 10_000  # a canary share is set in hundredths of a per cent
_KEY = b"skewless-canary"


def canary_bucket(value: Any) -> int:
    """The entity's bucket in [0, BUCKETS): a keyed BLAKE2b of the key's text, the same in
    every process and release. A request is the canary's when its bucket is below
    ``percent * BUCKETS / 100``, so raising the share keeps every entity already on it."""
    digest = hashlib.blake2b(str(value).encode("utf-8", "surrogatepass"), digest_size=8,
                             key=_KEY).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def canary_limit(percent: float) -> int:
    """Buckets below this answer from the canary."""
    return round(percent * BUCKETS / 100)


def on_canary(value: Any, percent: float) -> bool:
    return canary_bucket(value) < canary_limit(percent)

CANARY_ROLE = "canary"
