"""`skewless catalog refresh`: feature statistics for the catalog, computed offline by duckdb.

For every feature view of the Feast registry (whatever it holds):

- a batch view over parquet files: one scan gives each feature's count, nulls, min, max,
  mean, quantiles and distinct count, and the source's event-time extent; a second gives the
  histograms (categorical features: their most frequent values);
- on-demand outputs exist only when computed, so their statistics come from the
  served-feature logs of the last ``SKEWLESS_CATALOG_SERVING_DAYS`` days, as do the online
  missing rates of every logged feature (the share of served values whose Feast status is
  not PRESENT);
- the age of the online values for a sample of entities, read through Feast's SDK.

The result is one JSON document (``settings.catalog_stats_path``), written atomically; the
catalog pages only read it, so no statistic is ever computed inside a request.
"""

from __future__ import annotations

import math
import statistics as pystats
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from skewless.contract import logging_destination
from skewless.errors import SkewlessError
from skewless.feast_cli import in_repo
from skewless.files import write_json_atomic
from skewless.served_log import LOG_FILES, log_files
from skewless.settings import Settings
from training.served import LOG_TIMESTAMP

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TOP_VALUES = 20
NUMERIC_TYPES = {"Int32", "Int64", "Float32", "Float64", "Bool"}
INTEGER_TYPES = {"Int32", "Int64", "Bool"}
CATEGORICAL_TYPES = {"String"}
FORMAT_VERSION = 1


class StatsError(SkewlessError):
    """Statistics could not be computed; the message says for what and why."""


@dataclass(frozen=True)
class Column:
    """A feature to profile: its catalog key (``view:feature``), the column holding it, its type."""

    key: str
    column: str
    dtype: str


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _parquet_glob(path: str) -> str:
    """A source path as duckdb reads it: a file, or every parquet file under a directory."""
    p = Path(path)
    return str(p / "**" / "*.parquet") if p.is_dir() else str(p)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    return str(value)


def profile(con: Any, relation: str, columns: Sequence[Column], bins: int,
            timestamp: str | None = None, params: Sequence[Any] = ()) -> dict[str, Any]:
    """Statistics of ``columns`` in ``relation`` (a duckdb FROM clause); two or so scans.

    Returns ``{"rows", "earliest_event", "latest_event", "features": {key: stats}}``.
    """
    select = ["count(*)"]
    if timestamp:
        select += [f"min({_q(timestamp)})", f"max({_q(timestamp)})"]
    layout: list[tuple[Column, list[str]]] = []
    for col in columns:
        c = _q(col.column)
        parts = [f"count({c})"]
        if col.dtype in NUMERIC_TYPES:
            v = f"CAST({c} AS DOUBLE)"
            parts += [f"min({v})", f"max({v})", f"avg({v})", f"stddev_samp({v})",
                      f"approx_quantile({v}, {list(QUANTILES)})", f"approx_count_distinct({c})"]
        elif col.dtype in CATEGORICAL_TYPES:
            parts += [f"count(DISTINCT {c})"]
        layout.append((col, parts))
        select += parts
    row = con.sql(f"SELECT {', '.join(select)} FROM {relation}", params=list(params)).fetchall()[0]
    values = list(row)
    rows = int(values.pop(0))
    result: dict[str, Any] = {"rows": rows, "earliest_event": None, "latest_event": None,
                              "features": {}}
    if timestamp:
        result["earliest_event"] = _iso(values.pop(0))
        result["latest_event"] = _iso(values.pop(0))
    histogram_exprs: list[tuple[Column, str, dict[str, Any]]] = []
    for col, parts in layout:
        got = [values.pop(0) for _ in parts]
        count = int(got[0])
        stats: dict[str, Any] = {
            "dtype": col.dtype, "count": rows, "non_null": count, "nulls": rows - count,
            "null_rate": (rows - count) / rows if rows else None,
        }
        if col.dtype in NUMERIC_TYPES:
            low, high, mean, std, quantiles, distinct = got[1:]
            stats.update(kind="numeric", min=_finite(low), max=_finite(high),
                         mean=_finite(mean), std=_finite(std), distinct_approx=distinct,
                         quantiles=(dict(zip((str(q) for q in QUANTILES),
                                             (_finite(x) for x in quantiles), strict=True))
                                    if quantiles is not None else None))
            if count and stats["min"] is not None and stats["max"] is not None:
                histogram_exprs.append((col, *_bin_expression(col, stats, bins)))
        elif col.dtype in CATEGORICAL_TYPES:
            stats.update(kind="categorical", distinct=int(got[1]))
        else:
            stats.update(kind="other")
        result["features"][col.key] = stats
    if histogram_exprs:
        sql = ", ".join(f"histogram({expr})" for _, expr, _ in histogram_exprs)
        maps = con.sql(f"SELECT {sql} FROM {relation}", params=list(params)).fetchall()[0]
        for (col, _, shape), counts in zip(histogram_exprs, maps, strict=True):
            counts = dict(counts or {})
            bars = [int(counts.get(i, 0)) for i in range(shape["bars"])]
            result["features"][col.key]["histogram"] = {
                "edges": shape["edges"], "counts": bars, "integer": shape["integer"],
                "clipped": shape["clipped"]}
    for col in columns:
        if col.dtype in CATEGORICAL_TYPES and result["features"][col.key]["non_null"]:
            top = con.sql(
                f"SELECT {_q(col.column)} AS v, count(*) AS n FROM {relation} "
                f"WHERE {_q(col.column)} IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {TOP_VALUES}",
                params=list(params)).fetchall()
            stats = result["features"][col.key]
            stats["top_values"] = [[str(v), int(n)] for v, n in top]
            stats["other_count"] = stats["non_null"] - sum(n for _, n in top)
    return result


def _bin_expression(col: Column, stats: dict[str, Any], bins: int) -> tuple[str, dict[str, Any]]:
    """A histogram bin index expression and the bins' edges.

    Integers spanning fewer values than ``bins`` get one bar per value. Otherwise the bars
    have equal widths between min and max, or, for a long tail (min–max over three times
    p1–p99), between p1 and p99, the outer bars then holding everything beyond.
    """
    low, high = float(stats["min"]), float(stats["max"])
    v = f"CAST({_q(col.column)} AS DOUBLE)"
    integer = col.dtype in INTEGER_TYPES and high - low + 1 <= bins
    clipped = False
    if integer:
        bars = int(high - low) + 1
        edges = [low + i - 0.5 for i in range(bars + 1)]
        expr = f"CAST({v} - {low!r} AS BIGINT)"
    elif high == low:
        bars, edges = 1, [low, high]
        expr = f"CASE WHEN {v} IS NULL THEN NULL ELSE 0 END"
    else:
        q = stats.get("quantiles") or {}
        p1, p99 = q.get("0.01"), q.get("0.99")
        if p1 is not None and p99 is not None and p1 < p99 and high - low > 3 * (p99 - p1):
            low, high, clipped = float(p1), float(p99), True
        bars = bins
        width = (high - low) / bins
        edges = [low + i * width for i in range(bins)] + [high]
        expr = (f"greatest(least(CAST(floor(({v} - {low!r}) / {width!r}) AS BIGINT), "
                f"{bins - 1}), 0)")
    return expr, {"bars": bars, "edges": edges, "integer": integer, "clipped": clipped}


def _view_columns(view: Any) -> list[Column]:
    return [Column(f"{view.name}:{f.name}", f.name, str(f.dtype)) for f in view.features]


def _profile_batch_view(con: Any, view: Any, bins: int, repo_path: Path) -> dict[str, Any]:
    source = view.batch_source
    path = in_repo(repo_path, source.path) if getattr(source, "path", None) else None
    if not path:
        raise StatsError(f"{view.name}'s source {source.name} is a "
                         f"{type(source).__name__}; statistics read parquet files")
    glob = _parquet_glob(path)
    started = time.perf_counter()
    result = profile(con, "read_parquet(?, union_by_name = true)", _view_columns(view), bins,
                     timestamp=source.timestamp_field or None, params=[glob])
    result.update(source=str(path), seconds=round(time.perf_counter() - started, 3))
    return result


def _log_dir(settings: Settings, store: Any, feature_service: str) -> Path | None:
    override = settings.feature_log_dir if feature_service == settings.feature_service else None
    try:
        return logging_destination(store, feature_service, override)
    except SkewlessError:
        return None


def _profile_served(con: Any, settings: Settings, store: Any, service: Any,
                    on_demand: set[str], since: datetime, bins: int) -> dict[str, Any] | None:
    """Missing rates of every logged feature, and statistics of the logged on-demand ones."""
    directory = _log_dir(settings, store, service.name)
    if directory is None or not log_files(directory):
        return None
    glob = str(directory / LOG_FILES)
    relation = (f"(SELECT * FROM read_parquet(?, union_by_name = true, hive_partitioning = false)"
                f" WHERE {_q(LOG_TIMESTAMP)} >= ?)")
    params = [glob, since]
    names = set(con.sql("SELECT * FROM read_parquet(?, union_by_name = true, "
                        "hive_partitioning = false) LIMIT 0", params=[glob]).columns)
    logged: list[tuple[str, str]] = []  # (catalog key, logged column)
    profiled: list[Column] = []
    for projection in service.feature_view_projections:
        for field in projection.features:
            column = f"{projection.name_to_use()}__{field.name}"
            if column not in names or f"{column}__status" not in names:
                continue
            key = f"{projection.name}:{field.name}"
            logged.append((key, column))
            if projection.name in on_demand:
                profiled.append(Column(key, column, str(field.dtype)))
    if not logged:
        return None
    select = ["count(*)", f"min({_q(LOG_TIMESTAMP)})", f"max({_q(LOG_TIMESTAMP)})"]
    for _, column in logged:
        select.append(f"histogram({_q(column + '__status')})")
    row = list(con.sql(f"SELECT {', '.join(select)} FROM {relation}", params=params).fetchall()[0])
    rows, first, last = int(row[0]), row[1], row[2]
    missing: dict[str, Any] = {}
    for (key, _), statuses in zip(logged, row[3:], strict=True):
        counts = {FieldStatus.Name(int(s)): int(n) for s, n in (statuses or {}).items()}
        absent = sum(n for s, n in counts.items() if s != "PRESENT")
        missing[key] = {"rows": rows, "missing": absent,
                        "missing_rate": absent / rows if rows else None, "statuses": counts}
    result: dict[str, Any] = {
        "log_dir": str(directory), "since": since.isoformat(), "rows": rows,
        "first_served": _iso(first), "last_served": _iso(last), "features": missing,
        "statistics": {},
    }
    if rows and profiled:
        result["statistics"] = profile(con, relation, profiled, bins, params=params)["features"]
    return result


def _online_ages(settings: Settings, store: Any, view: Any, sampled_at: datetime) -> dict[str, Any]:
    """Age of the online values of up to ``catalog_online_sample`` entities of ``view``."""
    from training.skew import latest_offline

    if not view.materialization_intervals:
        return {"error": "never materialized"}
    end = view.materialization_intervals[-1][1]
    keys = [c.name for c in view.entity_columns]
    offline = latest_offline(store, view.name, keys, end, settings.catalog_online_sample,
                             settings.seed)
    if offline.num_rows == 0:
        return {"sample": 0, "found": 0}
    entity_rows = [dict(zip(keys, values, strict=True))
                   for values in zip(*(offline[k].to_pylist() for k in keys), strict=True)]
    feature = view.features[0].name
    online = store.get_online_features(
        features=[f"{view.name}:{feature}"], entity_rows=entity_rows,
    ).to_dict(include_event_timestamps=True)
    stamps = [s for s in online.get(f"{feature}__ts", []) if s]
    ages = sorted(sampled_at.timestamp() - s for s in stamps)
    ttl = int(view.ttl.total_seconds()) if view.ttl else 0
    return {
        "sample": len(entity_rows), "found": len(ages),
        "age_seconds": ({"min": ages[0], "median": pystats.median(ages), "max": ages[-1]}
                        if ages else None),
        "past_ttl": sum(1 for a in ages if ttl and a > ttl),
    }


def compute_stats(settings: Settings, store: Any, online: bool = True) -> dict[str, Any]:
    """The catalog's statistics document for everything ``store``'s registry holds.

    The registry is read as data (no on-demand view's code is loaded to list it).
    """
    import duckdb

    from skewless.definitions import RegistrySnapshot

    now = datetime.now(UTC)
    doc: dict[str, Any] = {
        "format": FORMAT_VERSION, "computed_at": now.isoformat(), "project": store.project,
        "serving_days": settings.catalog_serving_days, "views": {}, "features": {},
        "serving": {}, "online": {},
    }
    started = time.perf_counter()
    registry = RegistrySnapshot.read(store)
    views = sorted(registry.feature_views(), key=lambda v: v.name)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for view in views:
            try:
                result = _profile_batch_view(con, view, settings.catalog_histogram_bins,
                                             store.repo_path)
            except (StatsError, duckdb.Error) as exc:
                doc["views"][view.name] = {"error": str(exc).splitlines()[0]}
                continue
            features = result.pop("features")
            doc["views"][view.name] = result
            for key, stats in features.items():
                doc["features"][key] = {**stats, "from": "offline source"}
        since = now - timedelta(days=settings.catalog_serving_days)
        for service in sorted(registry.feature_services(), key=lambda s: s.name):
            try:
                served = _profile_served(con, settings, store, service,
                                         registry.on_demand_names, since,
                                         settings.catalog_histogram_bins)
            except duckdb.Error as exc:
                doc["serving"][service.name] = {"error": str(exc).splitlines()[0]}
                continue
            if served is None:
                continue
            for key, stats in served.pop("statistics").items():
                doc["features"].setdefault(key, {**stats, "from": f"served logs of {service.name}"})
            doc["serving"][service.name] = served
    finally:
        con.close()
    if online and settings.catalog_online_sample:
        for view in views:
            if not view.online:
                continue
            sampled_at = datetime.now(UTC)
            try:
                ages = _online_ages(settings, store, view, sampled_at)
            except Exception as exc:  # noqa: BLE001 - an unreachable store is a finding here
                ages = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            doc["online"][view.name] = {"sampled_at": sampled_at.isoformat(), **ages}
    doc["seconds"] = round(time.perf_counter() - started, 3)
    return doc


def write_stats(doc: dict[str, Any], path: Path) -> Path:
    """Write atomically: a reader sees the previous document or this one, never half."""
    return write_json_atomic(path, doc)


def refresh_stats(settings: Settings, online: bool = True) -> dict[str, Any]:
    """Compute the statistics for the configured Feast repo and write them for the catalog."""
    from skewless.feast_cli import open_store

    store = open_store(settings)
    doc = compute_stats(settings, store, online=online)
    write_stats(doc, settings.catalog_stats_path)
    return doc

