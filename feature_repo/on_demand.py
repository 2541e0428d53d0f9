"""Request-time transformations, run by Feast on both the training and the serving path."""

from typing import Any

from data_sources import transaction_request
from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from features import card_activity_fv


@on_demand_feature_view(
    sources=[
        card_activity_fv[["amount_mean_28d", "amount_max_28d"]],
        transaction_request,
    ],
    # Feast python-mode inference compares declared output Fields with inferred ones
    # including description and tags, so per-feature documentation lives in the view
    # tags under "feature:<name>" instead of on each Field.
    schema=[
        Field(name="log_amount", dtype=Float64),
        Field(name="amount_to_mean_28d", dtype=Float64),
        Field(name="amount_to_max_28d", dtype=Float64),
        Field(name="is_online", dtype=Int64),
        Field(name="is_night", dtype=Int64),
    ],
    mode="python",
    description="How unusual the transaction is for the card, and when and how it is paid.",
    owner="risk-ml@skewless.example",
    tags={
        "team": "risk",
        "stage": "request",
        # The transaction against the history of its card (python mode: so in the view tags).
        # Comments in this decorator hold no single quote: Feast strips the decorator from
        # the registered text with a scanner that reads one as the start of a string.
        "privacy": "pseudonymous",
        "feature:log_amount": "Natural log of (1 + amount).",
        "feature:amount_to_mean_28d": "Amount divided by the card's 28-day mean amount; "
        "missing without history.",
        "feature:amount_to_max_28d": "Amount divided by the card's 28-day largest amount; "
        "missing without history.",
        "feature:is_online": "1 for card-not-present payments.",
        "feature:is_night": "1 between 00:00 and 05:59 local time.",
        # A larger amount, all else equal, never makes a transaction look safer.
        "monotone:log_amount": "increasing",
        "monotone:amount_to_mean_28d": "increasing",
        "monotone:amount_to_max_28d": "increasing",
    },
)
def transaction_features(inputs: dict[str, Any]) -> dict[str, Any]:
    # Column-wise lists in, column-wise lists out: the same code scores one request online
    # and millions of rows offline.
    import math

    def ratio(numerators: list, denominators: list) -> list:
        return [
            None if n is None or d is None or d <= 0 else n / d
            for n, d in zip(numerators, denominators, strict=True)
        ]

    amounts = inputs["amount"]
    return {
        "log_amount": [None if a is None else math.log1p(max(a, 0.0)) for a in amounts],
        "amount_to_mean_28d": ratio(amounts, inputs["amount_mean_28d"]),
        "amount_to_max_28d": ratio(amounts, inputs["amount_max_28d"]),
        "is_online": [None if c is None else int(c == "online") for c in inputs["channel"]],
        "is_night": [None if h is None else int(h < 6) for h in inputs["local_hour"]],
    }
