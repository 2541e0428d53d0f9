"""Reading the served-feature log: the rows the predictor logged, as Arrow."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from skewless.errors import SkewlessError
from skewless.served_log import LOG_TIMESTAMP, REQUEST_ID, log_files

__all__ = ["LOG_TIMESTAMP", "REQUEST_ID", "ServedLogError", "load_served"]

_MICROS_UTC = pa.timestamp("us", tz="UTC")


class ServedLogError(SkewlessError):
    """No served-feature logs where they were looked for, or not the ones needed."""


def load_served(log_dir: Path, since: datetime | None = None, until: datetime | None = None,
                sample: int | None = None, seed: int = 7,
                columns: list[str] | None = None) -> pa.Table:
    """Logged rows served in [since, until], optionally a random sample of them, optionally
    only some of their columns (the ones the log holds; the served-at time always).

    The served-at time (``__log_timestamp``) comes back as microseconds, UTC.
    """
    files = log_files(log_dir)
    if not files:
        raise ServedLogError(f"no served-feature logs under {log_dir}")
    dataset = pads.dataset([str(f) for f in files], format="parquet")
    stamp = pc.field(LOG_TIMESTAMP)
    condition = None
    if since is not None:
        condition = stamp >= pa.scalar(since, _MICROS_UTC)
    if until is not None:
        term = stamp <= pa.scalar(until, _MICROS_UTC)
        condition = term if condition is None else condition & term
    if columns is not None:
        names = set(dataset.schema.names)
        columns = list(dict.fromkeys([LOG_TIMESTAMP, *(c for c in columns if c in names)]))
    table = dataset.to_table(columns=columns, filter=condition)
    if sample is not None and sample < table.num_rows:
        picked = sorted(random.Random(seed).sample(range(table.num_rows), sample))
        table = table.take(pa.array(picked))
    index = table.schema.get_field_index(LOG_TIMESTAMP)
    return table.set_column(index, LOG_TIMESTAMP, table[LOG_TIMESTAMP].cast(_MICROS_UTC))
