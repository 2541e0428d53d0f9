"""Parquet sources written by `skewless features`, and the request-time fields.

Paths are absolute, derived from this file's location: Feast's duckdb offline store
resolves a relative FileSource path against the working directory rather than the repo.
Skewless resolves relative paths against the repo wherever it runs, but Feast's own CLI run
from elsewhere (`feast -c feature_repo ui`, below in the README) would read another file.
"""

from pathlib import Path

from feast import FileSource, RequestSource
from feast.data_format import ParquetFormat
from feast.field import Field
from feast.types import Float64, Int64, String

DATA_DIR = Path(__file__).resolve().parent / "data"

card_activity_source = FileSource(
    name="card_activity_source",
    path=str(DATA_DIR / "card_activity.parquet"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="Daily snapshots of each card's recent transactions (UTC midnight).",
    owner="risk-data@skewless.example",
)

card_profile_source = FileSource(
    name="card_profile_source",
    path=str(DATA_DIR / "card_profile.parquet"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="Card attributes, valid from the card's issue time.",
    owner="risk-data@skewless.example",
)

merchant_stats_source = FileSource(
    name="merchant_stats_source",
    path=str(DATA_DIR / "merchant_stats.parquet"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="Daily snapshots of merchant volume and matured-label fraud rate.",
    owner="risk-data@skewless.example",
)

transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        Field(name="amount", dtype=Float64, description="Transaction amount.",
              tags={"privacy": "pseudonymous"}),
        Field(name="channel", dtype=String, description="pos, online or atm.",
              tags={"privacy": "pseudonymous"}),
        Field(name="local_hour", dtype=Int64, description="Hour of day, 0-23.",
              tags={"privacy": "pseudonymous"}),
    ],
    description="Fields known only when the transaction is being authorised.",
    owner="risk-ml@skewless.example",
    # Their ranges and categories, checked on the label events and enforced by /predict.
    tags={"expectations": "expectations.transaction_request"},
)
