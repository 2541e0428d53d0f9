"""Batch feature views: what the pipeline computes, with TTLs, owners and meaning."""

from datetime import timedelta

from data_sources import card_activity_source, card_profile_source, merchant_stats_source
from entities import card, merchant
from feast import FeatureView, Field
from feast.types import Float64, Int64, String

RISK_DATA = "risk-data@skewless.example"

card_activity_fv = FeatureView(
    name="card_activity",
    entities=[card],
    # Snapshots are daily; a value older than two days means the pipeline stopped and
    # must not be served as current.
    ttl=timedelta(days=2),
    schema=[
        Field(name="txn_count_1d", dtype=Int64, description="Transactions on the card in the "
              "previous UTC day.", tags={"window": "1d", "kind": "count"}),
        Field(name="txn_count_7d", dtype=Int64, description="Transactions in the previous 7 days.",
              tags={"window": "7d", "kind": "count"}),
        Field(name="txn_count_28d", dtype=Int64, description="Transactions in the previous 28 "
              "days.", tags={"window": "28d", "kind": "count"}),
        Field(name="amount_sum_1d", dtype=Float64, description="Amount spent in the previous "
              "day.", tags={"window": "1d", "kind": "sum"}),
        Field(name="amount_sum_7d", dtype=Float64, description="Amount spent in the previous 7 "
              "days.", tags={"window": "7d", "kind": "sum"}),
        Field(name="amount_mean_7d", dtype=Float64, description="Mean transaction amount over "
              "the previous 7 days.", tags={"window": "7d", "kind": "mean"}),
        Field(name="amount_mean_28d", dtype=Float64, description="Mean transaction amount over "
              "the previous 28 days: the card's usual ticket.", tags={"window": "28d",
                                                                      "kind": "mean"}),
        Field(name="amount_max_7d", dtype=Float64, description="Largest amount in the previous "
              "7 days.", tags={"window": "7d", "kind": "max"}),
        Field(name="amount_max_28d", dtype=Float64, description="Largest amount in the previous "
              "28 days.", tags={"window": "28d", "kind": "max"}),
        Field(name="distinct_merchants_7d", dtype=Int64, description="Distinct merchants paid "
              "in the previous 7 days.", tags={"window": "7d", "kind": "distinct"}),
    ],
    source=card_activity_source,
    online=True,
    description="How the card has been used recently, as of each UTC midnight.",
    owner=RISK_DATA,
    # The card holder's spending, under the card's pseudonymous key: every feature.
    # A snapshot each UTC midnight: a served value is at most a day old, plus the hours the
    # pipeline and the materialization may take.
    tags={"team": "risk", "cadence": "daily", "privacy": "pseudonymous",
          "freshness-objective": "30h", "expectations": "expectations.card_activity"},
)

card_profile_fv = FeatureView(
    name="card_profile",
    entities=[card],
    # Attributes hold until replaced. Not timedelta(0): for an unbounded TTL Feast's
    # materialize-incremental only looks one year back, so older cards would be served
    # without a profile while training saw one.
    ttl=timedelta(days=3650),
    schema=[
        Field(name="card_type", dtype=String, description="debit, credit or prepaid.",
              tags={"kind": "categorical", "privacy": "pseudonymous"}),
        # What the issuer judged the holder could repay: financial data about a person.
        Field(name="credit_limit", dtype=Float64, description="Credit limit at issue.",
              tags={"kind": "attribute", "privacy": "personal"}),
    ],
    source=card_profile_source,
    online=True,
    description="Static attributes of the card from its issue.",
    owner=RISK_DATA,
    # Attributes hold until replaced: no age is too old.
    tags={"team": "risk", "cadence": "on-change", "freshness-objective": "none",
          "expectations": "expectations.card_profile"},
)

merchant_stats_fv = FeatureView(
    name="merchant_stats",
    entities=[merchant],
    ttl=timedelta(days=2),
    schema=[
        Field(name="merchant_category", dtype=String, description="Merchant category.",
              tags={"kind": "categorical"}),
        Field(name="merchant_txn_count_7d", dtype=Int64, description="Transactions at the "
              "merchant in the previous 7 days.", tags={"window": "7d", "kind": "count"}),
        Field(name="merchant_amount_mean_28d", dtype=Float64, description="Mean amount at the "
              "merchant over the previous 28 days.", tags={"window": "28d", "kind": "mean"}),
        Field(name="merchant_labels_known_56d", dtype=Int64, description="Labels already "
              "known at snapshot time for the merchant's last 56 days of transactions.",
              tags={"window": "56d", "kind": "count"}),
        Field(name="merchant_fraud_rate_56d", dtype=Float64, description="Share of fraud among "
              "those known labels; a label counts only after its label timestamp.",
              tags={"window": "56d", "kind": "rate", "leakage-guard": "label_timestamp"}),
    ],
    source=merchant_stats_source,
    online=True,
    description="Merchant volume and fraud history from matured labels, as of each UTC "
    "midnight.",
    owner=RISK_DATA,
    tags={"team": "risk", "cadence": "daily", "privacy": "none",
          "freshness-objective": "30h", "expectations": "expectations.merchant_stats"},
)
