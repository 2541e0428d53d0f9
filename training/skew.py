"""The skew check: replay what was served through the training path, value by value.

Each logged prediction is rebuilt offline — Feast's historical retrieval for the same
feature service at the served-at time, the on-demand views fed the logged request fields —
and every feature is compared with what the model saw online: integers and strings
exactly, floats within ``REL_TOL``/``ABS_TOL``, nulls equal only to nulls.

Every mismatch gets a cause:

- ``missing online``: the online store had no value for the entity (NOT_FOUND);
- ``expired``: the online value was older than the view's TTL when served (served as
  OUTSIDE_MAX_AGE, or served although past it), while the offline path had a fresh one;
- ``stale online value``: the online value's event time is older than the offline value
  known at serving time (materialization lagged or missed rows);
- ``transformation changed``: the definitions of an on-demand view differ from the ones the
  serving model was trained on (the contract's recorded definitions);
- ``value differs``: none of the above (e.g. a value edited in Redis).

An on-demand output whose inputs mismatched inherits its input's cause. The report's shape,
its JSON and its terminal view are in :mod:`skewless.reports.skew`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from skewless.artifact import read_contract
from skewless.contract import ServiceSpec, logging_destination, resolve_service
from skewless.errors import SkewlessError
from skewless.feast_cli import in_repo
from skewless.files import write_json_atomic
from skewless.reports.skew import FeatureResult, SkewReport
from skewless.settings import Settings
from training.dataset import open_store, plan_retrieval, retrieve_in_order
from training.served import LOG_TIMESTAMP, REQUEST_ID, load_served

REL_TOL = 1e-9
ABS_TOL = 1e-12
EXAMPLES_PER_FEATURE = 3
NOT_FOUND, OUTSIDE_MAX_AGE = 3, 4
MISSING_ONLINE = "missing online"
EXPIRED = "expired"
STALE = "stale online value"
TRANSFORMATION_CHANGED = "transformation changed"
VALUE_DIFFERS = "value differs"


class SkewCheckError(SkewlessError):
    """The skew check could not run (no logs, unreadable logs, unknown feature service)."""


def _mismatch_mask(served: pa.ChunkedArray, offline: pa.ChunkedArray) -> pa.ChunkedArray:
    s_null, o_null = pc.is_null(served), pc.is_null(offline)
    if pa.types.is_floating(served.type):
        tolerance = pc.add(pc.multiply(pc.abs(offline), REL_TOL), ABS_TOL)
        differs = pc.greater(pc.abs(pc.subtract(served, offline)), tolerance)
    else:
        differs = pc.not_equal(served, offline)
    return pc.or_(pc.xor(s_null, o_null), pc.fill_null(differs, False))


def _changed_views(settings: Settings, spec: ServiceSpec, versions: list[str]) -> set[str]:
    """Views whose definitions differ from those the serving models were trained on."""
    changed: set[str] = set()
    current = spec.definitions["views"]
    for version in versions:
        contract = read_contract(settings.model_dir / spec.feature_service / version)
        if contract is None:
            continue
        trained = contract.definitions.get("views", {})
        changed |= {v for v in current.keys() | trained.keys()
                    if current.get(v) != trained.get(v)}
    return changed


def _offline_event_times(store: Any, view: str, keys: list[str], rows: pa.Table) -> dict[str, Any]:
    """The event time of the row the point-in-time join picks, per request id (diagnosis)."""
    import duckdb

    source = store.get_feature_view(view).batch_source
    path = in_repo(store.repo_path, source.path) if getattr(source, "path", None) else None
    if not path:
        return {}
    ts = source.timestamp_field
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("served", rows.select([REQUEST_ID, LOG_TIMESTAMP, *keys]))
        join = " AND ".join(f's."{k}" = f."{k}"' for k in keys)
        result = con.sql(
            f"""SELECT s."{REQUEST_ID}", CAST(f."{ts}" AS TIMESTAMPTZ)
                FROM served s ASOF LEFT JOIN read_parquet(?) f
                ON {join} AND CAST(s."{LOG_TIMESTAMP}" AS TIMESTAMPTZ)
                            >= CAST(f."{ts}" AS TIMESTAMPTZ)""",
            params=[str(path)],
        ).fetchall()
    finally:
        con.close()
    return dict(result)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def compare(settings: Settings, store: Any, spec: ServiceSpec, served: pa.Table,
            offline: pa.Table, report: SkewReport) -> None:
    """Compare one slice of served rows with their offline replay; add to the report."""
    keys = [k.name for k in spec.entity_keys]
    versions = pc.unique(served["model_version"]).to_pylist() if "model_version" in \
        served.column_names else []
    changed = _changed_views(settings, spec, versions)
    ttl = {v: d.get("ttl_seconds", 0) for v, d in spec.definitions["views"].items()}
    masks = {f.name: _mismatch_mask(served[f.name], offline[f.name]) for f in spec.features}
    causes: dict[str, dict[int, str]] = {}
    offline_times: dict[str, dict[str, Any]] = {}
    served_at = served[LOG_TIMESTAMP].to_pylist()
    request_ids = served[REQUEST_ID].to_pylist()
    for feature in spec.features:
        result = report.features.setdefault(feature.name, FeatureResult())
        result.checked += served.num_rows
        rows = pc.indices_nonzero(masks[feature.name]).to_pylist()
        if not rows:
            continue
        definition = spec.definitions["views"][feature.view]
        feature_causes: dict[int, str] = {}
        if definition["kind"] == "batch":
            statuses = served[f"{feature.name}__status"]
            stamps = served[f"{feature.name}__timestamp"]
            if feature.view not in offline_times:
                offline_times[feature.view] = _offline_event_times(
                    store, feature.view, definition["entities"], served)
            for i in rows:
                status, stamp = statuses[i].as_py(), stamps[i].as_py()
                offline_at = offline_times[feature.view].get(request_ids[i])
                if status == NOT_FOUND:
                    cause = MISSING_ONLINE
                elif status == OUTSIDE_MAX_AGE or (
                        stamp is not None and ttl[feature.view]
                        and stamp < served_at[i] - timedelta(seconds=ttl[feature.view])):
                    cause = EXPIRED
                elif stamp is not None and offline_at is not None and \
                        stamp < offline_at.replace(microsecond=0):
                    cause = STALE
                else:
                    cause = VALUE_DIFFERS
                feature_causes[i] = cause
        else:
            inputs = [name for name in masks if name.split("__", 1)[0] in
                      {s.split(":", 1)[0] for s in definition["sources"]}]
            for i in rows:
                if feature.view in changed:
                    feature_causes[i] = TRANSFORMATION_CHANGED
                    continue
                inherited = [causes[n][i] for n in inputs if i in causes.get(n, {})]
                feature_causes[i] = inherited[0] if inherited else VALUE_DIFFERS
        causes[feature.name] = feature_causes
        result.mismatches += len(rows)
        result.causes.update(feature_causes.values())
        for i in rows[:max(0, EXAMPLES_PER_FEATURE - len(result.examples))]:
            example = {
                "request_id": request_ids[i], "served_at": served_at[i].isoformat(),
                "entity": {k: served[k][i].as_py() for k in keys},
                "served": served[feature.name][i].as_py(),
                "offline": offline[feature.name][i].as_py(),
                "cause": feature_causes[i],
            }
            if definition["kind"] == "batch":
                example["served_event_time"] = _jsonable(
                    served[f"{feature.name}__timestamp"][i].as_py())
                example["offline_event_time"] = _jsonable(
                    offline_times[feature.view].get(request_ids[i]))
            result.examples.append(example)


def check_served(settings: Settings, since: datetime | None = None,
                 until: datetime | None = None, sample: int | None = None,
                 log_dir: Path | None = None) -> SkewReport:
    """Replay the served-feature log through the point-in-time path and compare."""
    store = open_store(settings)
    spec = resolve_service(store, settings.feature_service)
    directory = log_dir or logging_destination(store, settings.feature_service,
                                               settings.feature_log_dir)
    served = load_served(directory, since, until, sample, settings.seed)
    report = SkewReport(
        feature_service=spec.feature_service, rows=served.num_rows,
        since=since.isoformat() if since else None, until=until.isoformat() if until else None,
        log_dir=str(directory), tolerance={"relative": REL_TOL, "absolute": ABS_TOL},
        features={},
    )
    if served.num_rows == 0:
        return report
    plan = plan_retrieval(spec)
    inputs = [f.name for f in (*spec.entity_keys, *spec.request_fields)]
    step = settings.dataset_chunk_rows
    for start in range(0, served.num_rows, step):
        part = served.slice(start, step)
        events = part.select([REQUEST_ID, LOG_TIMESTAMP, *inputs])
        offline = retrieve_in_order(store, plan, spec, events, REQUEST_ID, LOG_TIMESTAMP)
        compare(settings, store, spec, part, offline, report)
    return report


def save_report(report: SkewReport, path: Path) -> Path:
    """Keep the last result where the catalog and /metrics read it."""
    return write_json_atomic(path, report.to_json(), indent=2)


def latest_offline(store: Any, view: str, keys: list[str], until: datetime, sample: int,
                    seed: int) -> pa.Table:
    """Each entity's latest row in the view's source with an event time up to ``until``."""
    import duckdb

    source = store.get_feature_view(view).batch_source
    path = in_repo(store.repo_path, source.path) if getattr(source, "path", None) else None
    if not path:
        raise SkewCheckError(f"{view}'s source is not a file; the online check reads files")
    ts, created = source.timestamp_field, source.created_timestamp_column
    order = f'"{ts}" DESC' + (f', "{created}" DESC' if created else "")
    key_list = ", ".join(f'"{k}"' for k in keys)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.sql(f"SELECT setseed({(seed % 1000) / 1000})").fetchall()
        return con.sql(
            f"""SELECT * EXCLUDE (rn) FROM (
                    SELECT *, row_number() OVER (PARTITION BY {key_list} ORDER BY {order}) rn
                    FROM read_parquet(?) WHERE CAST("{ts}" AS TIMESTAMPTZ) <= ?)
                WHERE rn = 1 ORDER BY random() LIMIT ?""",
            params=[str(path), until, sample],
        ).to_arrow_table()
    finally:
        con.close()


def check_online(settings: Settings, sample: int = 1000) -> SkewReport:
    """Reconcile the online store with the offline latest values materialization wrote.

    Per batch view, up to ``sample`` entities: their latest offline row up to the end of the
    view's last materialization is compared with what Feast's SDK reads from the online
    store (values and event times). Causes: missing online, stale online value (older
    event time online), value differs.
    """
    store = open_store(settings)
    spec = resolve_service(store, settings.feature_service)
    report = SkewReport(
        feature_service=spec.feature_service, rows=0, since=None, until=None,
        log_dir=SkewReport.ONLINE_STORE, tolerance={"relative": REL_TOL, "absolute": ABS_TOL},
        features={},
    )
    for view, definition in spec.definitions["views"].items():
        if definition["kind"] != "batch":
            continue
        fv = store.get_feature_view(view)
        if not fv.materialization_intervals:
            raise SkewCheckError(f"{view} was never materialized")
        end = fv.materialization_intervals[-1][1]
        keys = definition["entities"]
        names = [f for f, _ in definition["features"]]
        offline = latest_offline(store, view, keys, end, sample, settings.seed)
        report.rows += offline.num_rows
        if offline.num_rows == 0:
            continue
        entity_rows = [dict(zip(keys, values, strict=True))
                       for values in zip(*(offline[k].to_pylist() for k in keys), strict=True)]
        online = store.get_online_features(
            features=[f"{view}:{n}" for n in names], entity_rows=entity_rows,
        ).to_dict(include_event_timestamps=True)
        ts_field = fv.batch_source.timestamp_field
        offline_ts = [t.timestamp() for t in offline[ts_field].to_pylist()]
        for name in names:
            result = report.features.setdefault(f"{view}__{name}", FeatureResult())
            result.checked += offline.num_rows
            online_values = pa.array(online[name], type=offline[name].type)
            mask = _mismatch_mask(pa.chunked_array([online_values]), offline[name])
            online_ts = online.get(f"{name}__ts") or [None] * offline.num_rows
            for i in pc.indices_nonzero(mask).to_pylist():
                stamp = online_ts[i]
                if stamp is None or (online[name][i] is None and not stamp):
                    cause = MISSING_ONLINE
                elif stamp < int(offline_ts[i]):
                    cause = STALE
                else:
                    cause = VALUE_DIFFERS
                result.mismatches += 1
                result.causes[cause] += 1
                if len(result.examples) < EXAMPLES_PER_FEATURE:
                    result.examples.append({
                        "request_id": None, "entity": entity_rows[i],
                        "served": online[name][i], "offline": offline[name][i].as_py(),
                        "served_event_time": stamp, "offline_event_time":
                            _jsonable(offline[ts_field][i].as_py()), "cause": cause,
                    })
    return report
