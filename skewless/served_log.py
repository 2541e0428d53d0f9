"""The served-feature log's layout, shared by its writer (the predictor) and its readers.

One parquet file per flush under ``<destination>/__log_date=<YYYY-MM-DD>/``. Readers read
only those partitions: a logging destination may be a directory that holds other parquet
files too (Feast's ``feast init`` template logs into the repo's ``data/``, beside its
sources), and those are not served rows.
"""

from __future__ import annotations

from pathlib import Path

LOG_TIMESTAMP = "__log_timestamp"
LOG_DATE = "__log_date"
REQUEST_ID = "__request_id"
# The log's files below a destination, as a glob (pathlib's and duckdb's alike).
LOG_FILES = f"{LOG_DATE}=*/*.parquet"


def log_files(directory: Path) -> list[Path]:
    """The log's files under ``directory`` (hidden files, being written, left out)."""
    return sorted(p for p in directory.glob(LOG_FILES) if not p.name.startswith("."))
