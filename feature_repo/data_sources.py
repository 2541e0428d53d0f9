"""Parquet sources written by `skewless features`, and the request-time fields.

Each source is declared once and rendered for the offline store of the feature_store.yaml
in use: a ``FileSource`` for DuckDB (the local profile), a ``SparkSource`` over the same
parquet file for Spark (the cluster profile; Spark's store accepts no other kind). The
file in use is the one Feast was pointed at: its ``-f`` option or ``FEAST_FS_YAML_FILE_PATH``
(Skewless sets both for the variant of ``SKEWLESS_PROFILE``), else feature_store.yaml. The
kind of source is not part of what a model's contract fingerprints, so a model trained on
one profile serves on the other.

Paths are absolute, derived from this file's location: Feast's duckdb offline store
resolves a relative FileSource path against the working directory rather than the repo.
Skewless resolves relative paths against the repo wherever it runs, but Feast's own CLI run
from elsewhere (`feast -c feature_repo ui`, below in the README) would read another file.
"""

from pathlib import Path
from typing import Any

import yaml
from feast import FileSource, RequestSource
from feast.data_format import ParquetFormat
from feast.field import Field
from feast.types import Float64, Int64, String
from feast.utils import get_default_yaml_file_path

REPO_DIR = Path(__file__).resolve().parent
DATA_DIR = REPO_DIR / "data"


def feature_store_yaml() -> Path:
    """The feature_store.yaml variant Feast is loading this repo with."""
    try:  # Feast's CLI: its -f option, in the click context of the running command
        import click

        context = click.get_current_context(silent=True)
        chosen = (context.find_root().obj or {}).get("FS_YAML_FILE") if context else None
        if chosen:
            return Path(chosen)
    except ImportError:  # pragma: no cover - Feast's CLI depends on click
        pass
    # Feast's own rule without its CLI: FEAST_FS_YAML_FILE_PATH, else the repo's file.
    return get_default_yaml_file_path(REPO_DIR)


def offline_store_type() -> str:
    """The offline store's ``type`` in that file (Feast's default, dask, when it has none)."""
    path = feature_store_yaml()
    config = yaml.safe_load(path.read_text()) if path.is_file() else None
    store = (config or {}).get("offline_store") or {}
    return str(store.get("type", "dask") if isinstance(store, dict) else store)


def parquet_source(*, name: str, file: str, **fields: Any) -> Any:
    """One parquet file of DATA_DIR as the offline store in use reads it."""
    path = str(DATA_DIR / file)
    if offline_store_type() == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        return SparkSource(name=name, path=path, file_format="parquet", **fields)
    return FileSource(name=name, path=path, file_format=ParquetFormat(), **fields)


card_activity_source = parquet_source(
    name="card_activity_source",
    file="card_activity.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="Daily snapshots of each card's recent transactions (UTC midnight).",
    owner="risk-data@skewless.example",
)

card_profile_source = parquet_source(
    name="card_profile_source",
    file="card_profile.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="Card attributes, valid from the card's issue time.",
    owner="risk-data@skewless.example",
)

merchant_stats_source = parquet_source(
    name="merchant_stats_source",
    file="merchant_stats.parquet",
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
