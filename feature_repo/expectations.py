"""What each feature view's table, and the request fields, must look like: one pandera schema
per view, named after it, referenced from the view's ``expectations`` tag.

`skewless validate` runs them after `skewless features`, and before `skewless materialize` and
`skewless dataset` on its own: a broken table stops the step. pandera checks types,
nullability, ranges, categories and the key's uniqueness; the metadata adds what it has no
words for — a column's ``max_null_rate``, the schema's ``max_age`` (freshness of the newest
event) and ``volume_tolerance`` (rows against the previous run). The request source's ranges
and categories are also the ones `/predict` enforces.

Feast's `feast apply` does not import this module (.feastignore).
"""

import polars as pl
from pandera.polars import Check, Column, DataFrameSchema

TIMESTAMP = pl.Datetime("us", "UTC")
CARD_TYPES = ["debit", "credit", "prepaid"]
MERCHANT_CATEGORIES = ["grocery", "restaurant", "fuel", "transport", "retail", "electronics",
                       "travel", "online_services"]
CHANNELS = ["pos", "online", "atm"]
# A daily snapshot's row count swings with the cards active that day, not by half.
DAILY = {"max_age": "2d", "volume_tolerance": 0.5}


def count() -> Column:
    return Column(pl.Int64, Check.ge(0), nullable=False)


def amount(max_null_rate: float | None = None) -> Column:
    """A sum, mean or maximum of amounts: never negative. A mean or maximum over a window
    without transactions is null; ``max_null_rate`` bounds how many such cards there are."""
    if max_null_rate is None:
        return Column(pl.Float64, Check.ge(0), nullable=False)
    return Column(pl.Float64, Check.ge(0), nullable=True,
                  metadata={"max_null_rate": max_null_rate})


def key_and_times(entity: str) -> dict[str, Column]:
    return {entity: Column(pl.Int64, nullable=False),
            "event_timestamp": Column(TIMESTAMP, nullable=False),
            "created_timestamp": Column(TIMESTAMP, nullable=False)}


card_activity = DataFrameSchema(
    name="card_activity",
    columns={
        **key_and_times("card_id"),
        "txn_count_1d": count(),
        "txn_count_7d": count(),
        "txn_count_28d": count(),
        "amount_sum_1d": amount(),
        "amount_sum_7d": amount(),
        # Cards without a transaction in the last 7 days: about 7% of snapshots.
        "amount_mean_7d": amount(max_null_rate=0.2),
        "amount_max_7d": amount(max_null_rate=0.2),
        "amount_mean_28d": amount(max_null_rate=0.05),
        "amount_max_28d": amount(max_null_rate=0.05),
        "distinct_merchants_7d": count(),
    },
    unique=["card_id", "event_timestamp", "created_timestamp"],
    metadata=DAILY,
)

card_profile = DataFrameSchema(
    name="card_profile",
    columns={
        **key_and_times("card_id"),
        "card_type": Column(pl.String, Check.isin(CARD_TYPES), nullable=False),
        "credit_limit": Column(pl.Float64, Check.in_range(0, 1_000_000, include_min=False),
                               nullable=False),
    },
    unique=["card_id", "event_timestamp", "created_timestamp"],
    # Attributes hold until replaced: no age limit. Cards are added, rarely removed.
    metadata={"volume_tolerance": 0.5},
)

merchant_stats = DataFrameSchema(
    name="merchant_stats",
    columns={
        **key_and_times("merchant_id"),
        "merchant_category": Column(pl.String, Check.isin(MERCHANT_CATEGORIES), nullable=False),
        "merchant_txn_count_7d": count(),
        "merchant_amount_mean_28d": amount(max_null_rate=0.05),
        "merchant_labels_known_56d": count(),
        # Null while no label of the merchant's is known yet: about 5% of snapshots.
        "merchant_fraud_rate_56d": Column(pl.Float64, Check.in_range(0, 1), nullable=True,
                                          metadata={"max_null_rate": 0.2}),
    },
    unique=["merchant_id", "event_timestamp", "created_timestamp"],
    metadata=DAILY,
)

# Checked on the label events table; `/predict` refuses a value outside them with a 422.
transaction_request = DataFrameSchema(
    name="transaction_request",
    columns={
        "amount": Column(pl.Float64, Check.in_range(0, 1_000_000), nullable=False),
        "channel": Column(pl.String, Check.isin(CHANNELS), nullable=False),
        "local_hour": Column(pl.Int64, Check.in_range(0, 23), nullable=False),
    },
)
