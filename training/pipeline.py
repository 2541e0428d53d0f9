"""The feature pipeline: raw transactions and labels → the parquet tables Feast reads.

Batch features are daily snapshots taken at UTC midnight. A snapshot at time T aggregates
only what happened strictly before T, so the value a point-in-time join picks for an event
never contains the event itself, just as the online store cannot have it when the event is
scored. Each row carries ``event_timestamp`` (the snapshot time) and ``created_timestamp``
(when this pipeline wrote it).

The merchant fraud rate counts a label only once its ``label_timestamp`` has passed: a
chargeback known only later must not shape an earlier feature.

All work is set-based SQL in duckdb; there are no per-row Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from skewless.errors import InvalidInput
from skewless.settings import Settings


class PipelineError(InvalidInput):
    """The raw data cannot be turned into feature tables; the message names the file."""


DAY_US = 86_400_000_000
CARD_WINDOWS = (1, 7, 28)
MERCHANT_LABEL_WINDOW_DAYS = 56


@dataclass(frozen=True)
class PipelinePaths:
    transactions: Path
    labels: Path
    cards: Path
    merchants: Path
    out_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelinePaths:
        """The generated raw data in, the Feast repo's data folder out."""
        raw = settings.raw_dir
        return cls(settings.resolved_events_path, settings.resolved_labels_path,
                   raw / "cards.parquet", raw / "merchants.parquet", settings.data_dir)

    @property
    def card_activity(self) -> Path:
        return self.out_dir / "card_activity.parquet"

    @property
    def card_profile(self) -> Path:
        return self.out_dir / "card_profile.parquet"

    @property
    def merchant_stats(self) -> Path:
        return self.out_dir / "merchant_stats.parquet"

    def earliest_event(self) -> datetime:
        """The first feature row's event time (UTC midnight before it): where a full
        materialization must start, since card profiles date from the card's issue."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        firsts = [pc.min(pq.read_table(path, columns=["event_timestamp"])["event_timestamp"])
                  .as_py() for path in (self.card_activity, self.card_profile,
                                        self.merchant_stats)]
        return min(firsts).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _day_grid(key: str, last_day: int) -> str:
    """Every day from an entity's first active day to the last snapshot day, one row each.

    Window frames count rows, so a dense grid makes "N preceding rows" mean "N days".
    """
    return f"""
        SELECT f.{key}, f.first_d, g.d
        FROM (SELECT {key}, min(d) AS first_d FROM daily GROUP BY {key}) f,
             range(0, {last_day + 1}) g(d)
        WHERE g.d >= f.first_d"""


def _card_activity_sql(day0: int, last_day: int) -> str:
    w1, w7, w28 = CARD_WINDOWS

    def frame(days: int) -> str:
        return f"(PARTITION BY card_id ORDER BY d ROWS BETWEEN {days} PRECEDING AND 1 PRECEDING)"

    return f"""
    WITH daily AS (
        SELECT card_id, d, count(*) AS c, sum(amount) AS s, max(amount) AS mx,
               list(DISTINCT merchant_id) AS ms
        FROM tx GROUP BY card_id, d
    ),
    grid AS ({_day_grid("card_id", last_day)}),
    dense AS (
        SELECT grid.card_id, grid.first_d, grid.d, coalesce(daily.c, 0) AS c,
               coalesce(daily.s, 0.0) AS s, daily.mx, coalesce(daily.ms, []) AS ms
        FROM grid LEFT JOIN daily USING (card_id, d)
    ),
    windows AS (
        SELECT card_id, first_d, d,
            sum(c) OVER {frame(w1)} AS txn_count_1d,
            sum(c) OVER {frame(w7)} AS txn_count_7d,
            sum(c) OVER {frame(w28)} AS txn_count_28d,
            sum(s) OVER {frame(w1)} AS amount_sum_1d,
            sum(s) OVER {frame(w7)} AS amount_sum_7d,
            sum(s) OVER {frame(w28)} AS amount_sum_28d,
            max(mx) OVER {frame(w7)} AS amount_max_7d,
            max(mx) OVER {frame(w28)} AS amount_max_28d,
            len(list_distinct(flatten(list(ms) OVER {frame(w7)}))) AS distinct_merchants_7d
        FROM dense
    )
    SELECT card_id,
        make_timestamptz(({day0} + d) * {DAY_US}::BIGINT) AS event_timestamp,
        CAST(txn_count_1d AS BIGINT) AS txn_count_1d,
        CAST(txn_count_7d AS BIGINT) AS txn_count_7d,
        CAST(txn_count_28d AS BIGINT) AS txn_count_28d,
        round(amount_sum_1d, 2) AS amount_sum_1d,
        round(amount_sum_7d, 2) AS amount_sum_7d,
        CASE WHEN txn_count_7d > 0 THEN amount_sum_7d / txn_count_7d END AS amount_mean_7d,
        CASE WHEN txn_count_28d > 0 THEN amount_sum_28d / txn_count_28d END AS amount_mean_28d,
        amount_max_7d,
        amount_max_28d,
        CAST(distinct_merchants_7d AS BIGINT) AS distinct_merchants_7d
    FROM windows
    WHERE d > first_d AND txn_count_28d > 0
    """


def _merchant_stats_sql(day0: int, last_day: int) -> str:
    def frame(days: int) -> str:
        return f"(PARTITION BY merchant_id ORDER BY d ROWS BETWEEN {days} PRECEDING AND 1 PRECEDING)"

    cumulative = "(PARTITION BY merchant_id ORDER BY d ROWS UNBOUNDED PRECEDING)"
    return f"""
    WITH daily AS (
        SELECT merchant_id, d, count(*) AS c, sum(amount) AS s FROM tx GROUP BY merchant_id, d
    ),
    -- A label counts for snapshot k when label_timestamp < day0 + k days and the
    -- transaction is within the label window: k in [label day + 1, transaction day + W].
    label_spans AS (
        SELECT tx.merchant_id,
               (epoch_us(lb.label_timestamp) // {DAY_US}) - {day0} + 1 AS k_from,
               tx.d + {MERCHANT_LABEL_WINDOW_DAYS} AS k_to,
               lb.is_fraud AS fraud
        FROM tx JOIN labels lb USING (transaction_id)
    ),
    label_steps AS (
        SELECT merchant_id, d, sum(n) AS dn, sum(f) AS df FROM (
            SELECT merchant_id, k_from AS d, 1 AS n, fraud AS f FROM label_spans
            WHERE k_from <= k_to AND k_from <= {last_day}
            UNION ALL
            SELECT merchant_id, k_to + 1 AS d, -1 AS n, -fraud AS f FROM label_spans
            WHERE k_from <= k_to AND k_to + 1 <= {last_day}
        ) GROUP BY merchant_id, d
    ),
    grid AS ({_day_grid("merchant_id", last_day)}),
    dense AS (
        SELECT grid.merchant_id, grid.first_d, grid.d,
               coalesce(daily.c, 0) AS c, coalesce(daily.s, 0.0) AS s,
               coalesce(label_steps.dn, 0) AS dn, coalesce(label_steps.df, 0) AS df
        FROM grid LEFT JOIN daily USING (merchant_id, d)
        LEFT JOIN label_steps USING (merchant_id, d)
    ),
    windows AS (
        SELECT merchant_id, first_d, d,
            sum(c) OVER {frame(7)} AS txn_count_7d,
            sum(s) OVER {frame(28)} AS amount_sum_28d,
            sum(c) OVER {frame(28)} AS txn_count_28d,
            sum(dn) OVER {cumulative} AS labels_known,
            sum(df) OVER {cumulative} AS frauds_known
        FROM dense
    )
    SELECT w.merchant_id,
        make_timestamptz(({day0} + w.d) * {DAY_US}::BIGINT) AS event_timestamp,
        m.category AS merchant_category,
        CAST(coalesce(w.txn_count_7d, 0) AS BIGINT) AS merchant_txn_count_7d,
        CASE WHEN w.txn_count_28d > 0 THEN w.amount_sum_28d / w.txn_count_28d END
            AS merchant_amount_mean_28d,
        CAST(w.labels_known AS BIGINT) AS merchant_labels_known_56d,
        CASE WHEN w.labels_known > 0 THEN w.frauds_known / w.labels_known END
            AS merchant_fraud_rate_56d
    FROM windows w JOIN merchants m USING (merchant_id)
    WHERE w.d > w.first_d
    """


def build_feature_tables(
    paths: PipelinePaths, as_of: datetime | None = None, threads: int | None = None
) -> dict[str, int]:
    """Compute every feature table; returns row counts by table name.

    ``as_of`` bounds the snapshots (default: the last transaction): no snapshot is
    written for a moment the data does not yet cover.
    """
    paths.out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        created = datetime.now(UTC).replace(microsecond=0)
        con.execute(
            f"""CREATE TEMP TABLE tx AS
            SELECT transaction_id, card_id, merchant_id, amount, event_timestamp,
                   (epoch_us(event_timestamp) // {DAY_US}) AS day_abs
            FROM read_parquet('{_sql_path(paths.transactions)}')"""
        )
        span = con.execute(
            "SELECT min(day_abs), max(epoch_us(event_timestamp)) FROM tx"
        ).fetchone()
        first_day, last_ts = span if span else (None, None)
        if first_day is None:
            raise PipelineError(f"no transactions in {paths.transactions}")
        day0 = int(first_day)
        as_of_us = int(as_of.timestamp() * 1e6) if as_of else int(last_ts)
        last_day = as_of_us // DAY_US - day0  # last snapshot at day0 + last_day <= as_of
        con.execute(f"ALTER TABLE tx ADD COLUMN d BIGINT; UPDATE tx SET d = day_abs - {day0}")
        con.execute(
            f"CREATE TEMP VIEW labels AS SELECT * FROM read_parquet('{_sql_path(paths.labels)}')"
        )
        con.execute(
            f"CREATE TEMP VIEW merchants AS "
            f"SELECT * FROM read_parquet('{_sql_path(paths.merchants)}')"
        )
        created_sql = f"TIMESTAMPTZ '{created.isoformat()}'"
        outputs = {
            "card_activity": (_card_activity_sql(day0, last_day), paths.card_activity, "card_id"),
            "merchant_stats": (
                _merchant_stats_sql(day0, last_day), paths.merchant_stats, "merchant_id"
            ),
            "card_profile": (
                f"""SELECT card_id, issued_at AS event_timestamp, card_type, credit_limit
                FROM read_parquet('{_sql_path(paths.cards)}')""",
                paths.card_profile,
                "card_id",
            ),
        }
        counts: dict[str, int] = {}
        for name, (sql, path, key) in outputs.items():
            con.execute(
                f"""COPY (SELECT *, {created_sql} AS created_timestamp FROM ({sql})
                          ORDER BY event_timestamp, {key})
                    TO '{_sql_path(path)}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)"""
            )
            written = con.execute(
                f"SELECT count(*) FROM read_parquet('{_sql_path(path)}')"
            ).fetchone()
            counts[name] = int(written[0]) if written else 0
        return counts
    finally:
        con.close()
