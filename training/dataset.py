"""Training sets: point-in-time through Feast's historical retrieval, or from served logs.

Every label event known at the cut-off becomes exactly one row: its id, entity keys, event
timestamp, label, and every feature of the model's feature service as ``<view>__<feature>``,
null where no value was known at the event's time or the latest one was past the view's TTL.
Feast's duckdb offline store does the join; this module checks that it kept every row.

A set built from the served-feature log has the same columns: each logged prediction that
carried an event id, joined with its label, with the features exactly as they were served
and the served-at time as the event time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skewless.artifact import read_contract
from skewless.contract import (
    FeatureContract,
    ServiceSpec,
    current_fingerprint,
    logging_destination,
    resolve_service,
    service_summary,
)
from skewless.errors import SkewlessError
from skewless.feast_cli import open_store
from skewless.requirements import offline_store_problem, require_trainable
from skewless.settings import Settings
from skewless.transformations import arrow_type, transform_table
from training.served import LOG_TIMESTAMP, REQUEST_ID, ServedLogError, load_served

POINT_IN_TIME = "point-in-time"
SERVED_LOGS = "served logs"


@dataclass
class TrainingSet:
    """Rows plus what they are: the feature service summary and the label cut-off."""

    frame: pd.DataFrame
    service: FeatureContract
    cutoff: datetime
    label_column: str
    timestamp_column: str
    id_column: str
    origin: str = POINT_IN_TIME

    def metadata(self) -> dict[str, str]:
        return {
            "service": json.dumps(self.service.to_json(), default=str),
            "cutoff": self.cutoff.isoformat(),
            "label_column": self.label_column,
            "timestamp_column": self.timestamp_column,
            "id_column": self.id_column,
            "origin": self.origin,
        }

    def schema_with_provenance(self, schema: pa.Schema) -> pa.Schema:
        """``schema`` plus this set's provenance in the parquet key-value metadata."""
        return schema.with_metadata({
            **(schema.metadata or {}),
            **{f"skewless.{k}".encode(): v.encode() for k, v in self.metadata().items()},
        })

    @classmethod
    def read(cls, path: Path) -> TrainingSet:
        table = pq.read_table(path)
        raw = table.schema.metadata or {}
        meta = {k.decode()[9:]: v.decode() for k, v in raw.items() if k.startswith(b"skewless.")}
        if "service" not in meta:
            raise DatasetError(f"{path} is not a Skewless training set (no service metadata)")
        service = FeatureContract.model_validate_json(meta["service"])
        return cls(
            frame=to_frame(table, service.feature_names),
            service=service,
            cutoff=datetime.fromisoformat(meta["cutoff"]),
            label_column=meta["label_column"],
            timestamp_column=meta["timestamp_column"],
            id_column=meta["id_column"],
            origin=meta.get("origin", POINT_IN_TIME),
        )

    def write(self, path: Path) -> Path:
        """Write as parquet with provenance in the file's key-value metadata."""
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        pq.write_table(table.cast(self.schema_with_provenance(table.schema)), path)
        return path


class DatasetError(SkewlessError):
    """The training set could not be built as promised."""


@dataclass
class LabelSource:
    """Where label events come from, and what their columns are called."""

    events_path: Path
    labels_path: Path
    id_column: str
    timestamp_column: str
    label_column: str
    label_timestamp_column: str

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelSource:
        return cls(
            events_path=settings.resolved_events_path,
            labels_path=settings.resolved_labels_path,
            id_column=settings.event_id_column,
            timestamp_column=settings.event_timestamp_column,
            label_column=settings.label_column,
            label_timestamp_column=settings.label_timestamp_column,
        )


def ident(column: str) -> str:
    """A column name quoted for SQL."""
    return '"' + column.replace('"', '""') + '"'


def newest_event(settings: Settings, cutoff: datetime) -> datetime | None:
    """The newest label event at or before ``cutoff`` (None: none, or no events file)."""
    import duckdb

    source = LabelSource.from_settings(settings)
    if not source.events_path.exists():
        return None
    column = ident(source.timestamp_column)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        found = con.execute(f"SELECT max({column}) FROM read_parquet(?) WHERE {column} <= ?",
                            [str(source.events_path), cutoff]).fetchone()
    value = found[0] if found else None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_unique_labels(con: Any, source: LabelSource) -> None:
    key = ident(source.id_column)
    duplicates = con.sql(
        f"SELECT count(*) - count(DISTINCT {key}) FROM read_parquet(?)",
        params=[str(source.labels_path)],
    ).fetchall()[0][0]
    if duplicates:
        raise DatasetError(f"labels hold {duplicates} duplicate {source.id_column} values")


def layout_columns(source: LabelSource, spec: ServiceSpec) -> list[str]:
    """The columns of every training set, in order."""
    return [source.id_column, *(k.name for k in spec.entity_keys), source.timestamp_column,
            source.label_timestamp_column, source.label_column, *spec.feature_names]


def latest_labelled_event(source: LabelSource, known_at: datetime) -> datetime | None:
    """The time of the latest event whose label was known at ``known_at``."""
    import duckdb

    event_ts = f"CAST(e.{ident(source.timestamp_column)} AS TIMESTAMPTZ)"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        latest = con.sql(
            f"""SELECT max({event_ts}) FROM read_parquet(?) e JOIN read_parquet(?) l
                USING ({ident(source.id_column)})
                WHERE CAST(l.{ident(source.label_timestamp_column)} AS TIMESTAMPTZ) <= ?""",
            params=[str(source.events_path), str(source.labels_path), known_at],
        ).fetchall()[0][0]
    finally:
        con.close()
    return latest  # type: ignore[no-any-return]


def load_label_events(source: LabelSource, spec: ServiceSpec, cutoff: datetime,
                      since: datetime | None = None) -> pa.Table:
    """Label events known at ``cutoff``, in time order: id, time, the service's inputs, label.

    An event counts when its label arrived by the cut-off and it happened before it (and,
    with ``since``, not before that).
    """
    import duckdb

    inputs = [f.name for f in spec.entity_keys] + [f.name for f in spec.request_fields]
    # Times in microseconds, UTC, whatever precision the files hold (duckdb cannot compare
    # or return timezone-aware nanoseconds).
    event_ts = f"CAST(e.{ident(source.timestamp_column)} AS TIMESTAMPTZ)"
    label_ts = f"CAST(l.{ident(source.label_timestamp_column)} AS TIMESTAMPTZ)"
    key = ident(source.id_column)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        check_unique_labels(con, source)
        # con.sql hands Arrow the result without the extra copy a DB-API cursor makes.
        return con.sql(
            f"""SELECT e.{key}, {event_ts} AS {ident(source.timestamp_column)},
                       {", ".join(f"e.{ident(c)}" for c in inputs)},
                       {label_ts} AS {ident(source.label_timestamp_column)},
                       l.{ident(source.label_column)}
                FROM read_parquet(?) e JOIN read_parquet(?) l USING ({key})
                WHERE {label_ts} <= ? AND {event_ts} < ? AND {event_ts} >= ?
                ORDER BY 2, 1""",
            params=[str(source.events_path), str(source.labels_path), cutoff, cutoff,
                    since or datetime.min.replace(tzinfo=UTC)],
        ).to_arrow_table()
    finally:
        con.close()


def cast_features(table: pa.Table, spec: ServiceSpec) -> pa.Table:
    """Give every feature column its declared Feast type (duckdb returns ints as float64).

    The cast is checked: a fractional value in an integer feature is an error, not rounded.
    """
    for f in spec.features:
        index = table.schema.get_field_index(f.name)
        try:
            target = arrow_type(f.dtype)
        except KeyError:
            raise DatasetError(f"feature {f.name} has unsupported type {f.dtype}") from None
        try:
            column = table.column(index).cast(target)
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"feature {f.name} is {f.dtype} but holds {exc}") from exc
        table = table.set_column(index, pa.field(f.name, target), column)
    return table


PANDAS_MAPPER = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(),
                 pa.bool_(): pd.BooleanDtype(), pa.string(): pd.StringDtype()}


def to_frame(table: pa.Table, feature_names: list[str]) -> pd.DataFrame:
    """Arrow → pandas with nullable ints and strings for features (null stays null)."""
    frame = table.to_pandas()
    for name in feature_names:
        column = table.column(name)
        if column.type in PANDAS_MAPPER:
            frame[name] = column.to_pandas(types_mapper=PANDAS_MAPPER.get)
    return frame


@dataclass
class RetrievalPlan:
    """What to ask Feast for: batch feature refs, and the on-demand views to run after.

    Feast runs a python-mode on-demand view offline by converting the whole joined table
    to Python objects (``to_pydict``). The plan asks the offline store for the batch
    features (and the on-demand inputs), then hands each on-demand view only its own
    inputs through Feast's ``transform_arrow``: the same definitions and code, without
    materialising every other column as Python objects. The views come from the spec's
    registry snapshot and run the function compiled from their source text, exactly as the
    predictor runs them.
    """

    refs: list[str]
    on_demand: list[tuple[Any, list[str]]]  # (OnDemandFeatureView, requested features)


def plan_retrieval(spec: ServiceSpec) -> RetrievalPlan:
    if spec.registry is None:
        raise DatasetError("the service spec carries no registry snapshot: resolve it with "
                           "skewless.contract.resolve_service")
    service = spec.registry.feature_service(spec.feature_service)
    refs: list[str] = []
    on_demand: list[tuple[Any, list[str]]] = []
    for projection in service.feature_view_projections:
        names = [f.name for f in projection.features]
        definition = spec.on_demand.get(projection.name_to_use())
        if definition is not None:
            on_demand.append((definition.runnable(), names))
        else:
            refs += [f"{projection.name_to_use()}:{n}" for n in names]
    for odfv, _ in on_demand:
        for source in odfv.source_feature_view_projections.values():
            refs += [f"{source.name_to_use()}:{f.name}" for f in source.features
                     if f"{source.name_to_use()}:{f.name}" not in refs]
    return RetrievalPlan(refs=refs, on_demand=on_demand)


def retrieve_chunk(store, plan: RetrievalPlan, entity_df: pd.DataFrame) -> pa.Table:
    """Point-in-time features for one slice of label events, on-demand views included."""
    table = store.get_historical_features(
        entity_df=entity_df, features=plan.refs, full_feature_names=True
    ).to_arrow()
    for odfv, names in plan.on_demand:
        inputs = [f"{p.name_to_use()}__{f.name}"
                  for p in odfv.source_feature_view_projections.values() for f in p.features]
        inputs += [f.name for r in odfv.source_request_sources.values() for f in r.schema]
        outputs = transform_table(odfv, table.select(inputs), names)
        for name, column in outputs.items():
            table = table.append_column(f"{odfv.projection.name_to_use()}__{name}", column)
    return table


def retrieve_in_order(
    store, plan: RetrievalPlan, spec: ServiceSpec, events: pa.Table, row_key: str,
    timestamp_column: str,
) -> pa.Table:
    """Point-in-time features for ``events``: exactly one row per event, in the events' order.

    ``events`` holds the entity keys, request fields and ``timestamp_column`` (UTC), plus any
    columns to carry along; ``row_key`` must be unique within it. Every feature is cast to
    its declared type.
    """
    # Feast takes "event_timestamp" as the time.
    entity_df = events.rename_columns(
        ["event_timestamp" if c == timestamp_column else c for c in events.column_names]
    ).to_pandas()
    result = retrieve_chunk(store, plan, entity_df)
    positions = pc.index_in(events.column(row_key), value_set=result.column(row_key))
    if result.num_rows != events.num_rows or positions.null_count:
        cause = offline_store_problem(store.config)
        raise DatasetError(
            f"historical retrieval returned {result.num_rows} rows for {events.num_rows} "
            f"events ({positions.null_count} events missing)" + (f": {cause}" if cause else "")
        )
    missing = [f.name for f in spec.features if f.name not in result.column_names]
    if missing:
        raise DatasetError(f"historical retrieval did not return {', '.join(missing)}")
    result = result.take(positions).rename_columns(
        [timestamp_column if c == "event_timestamp" else c for c in result.column_names]
    )
    # The events' own columns as they were given: engines hand them back in types of their
    # own (Spark's timestamps come back without their time zone), the values unchanged.
    for name in events.column_names:
        if name in result.column_names:
            result = result.set_column(result.column_names.index(name), name,
                                       events.column(name))
    return cast_features(result, spec)


def iter_training_chunks(
    settings: Settings,
    cutoff: datetime,
    store=None,
    source: LabelSource | None = None,
    chunk_rows: int | None = None,
    since: datetime | None = None,
) -> Iterator[tuple[pa.Table, ServiceSpec]]:
    """Yield the training set in time-ordered slices of at most ``chunk_rows`` label events.

    Each slice is one historical retrieval; slicing bounds memory, and every slice is
    checked to hold exactly one row per label event, put back in the events' order.
    """
    store = store or open_store(settings)
    source = source or LabelSource.from_settings(settings)
    spec = resolve_service(store, settings.feature_service)
    require_trainable(spec)
    plan = plan_retrieval(spec)
    events = load_label_events(source, spec, cutoff, since)
    if events.num_rows == 0:
        raise DatasetError(f"no label events known at {cutoff.isoformat()}"
                           + (f" since {since.isoformat()}" if since else ""))
    ordered = layout_columns(source, spec)
    step = chunk_rows or settings.dataset_chunk_rows
    for start in range(0, events.num_rows, step):
        part = events.slice(start, step)
        # The label rides along as a plain column.
        result = retrieve_in_order(store, plan, spec, part, source.id_column,
                                   source.timestamp_column)
        yield result.select(ordered), spec


def build_training_set(
    settings: Settings,
    cutoff: datetime | None = None,
    store=None,
    source: LabelSource | None = None,
    chunk_rows: int | None = None,
    since: datetime | None = None,
) -> TrainingSet:
    """Join every label event known at ``cutoff`` (since ``since``) with its point-in-time
    features."""
    source = source or LabelSource.from_settings(settings)
    cutoff = cutoff or datetime.now(UTC)
    parts = list(iter_training_chunks(settings, cutoff, store, source, chunk_rows, since))
    spec = parts[0][1]
    return TrainingSet(
        frame=to_frame(pa.concat_tables([p for p, _ in parts]), spec.feature_names),
        service=service_summary(spec),
        cutoff=cutoff,
        label_column=source.label_column,
        timestamp_column=source.timestamp_column,
        id_column=source.id_column,
    )


def write_training_set(
    settings: Settings,
    path: Path,
    cutoff: datetime | None = None,
    chunk_rows: int | None = None,
    since: datetime | None = None,
) -> int:
    """Stream the training set to parquet slice by slice (memory bounded); returns rows."""
    source = LabelSource.from_settings(settings)
    cutoff = cutoff or datetime.now(UTC)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for table, spec in iter_training_chunks(settings, cutoff, None, source, chunk_rows,
                                                 since):
            if writer is None:
                header = TrainingSet(pd.DataFrame(), service_summary(spec), cutoff,
                                     source.label_column, source.timestamp_column,
                                     source.id_column)
                writer = pq.ParquetWriter(tmp, header.schema_with_provenance(table.schema))
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)  # only a complete set ever appears at PATH
    return rows


@dataclass
class FromLogsCounts:
    """What became of the logged rows in the window."""

    logged: int = 0
    without_id: int = 0  # sent without an event id: nothing to join a label to
    repeated: int = 0  # the same event scored again; its first scoring is kept
    other_definitions: int = 0  # served by a model of other feature definitions than today's
    unlabelled: int = 0  # no label known at the cut-off (yet)
    rows: int = 0
    other_versions: list[str] = field(default_factory=list)


def _current_definitions(settings: Settings, spec: ServiceSpec, served: pa.Table,
                         counts: FromLogsCounts) -> pa.Table:
    """Only rows served by models trained on today's definitions (same fingerprint).

    Features served under other definitions (an on-demand view changed since) are not what
    the definitions compute now; a model trained on them would be skewed from the start.
    """
    keep = []
    for version in pc.unique(served["model_version"]).to_pylist():
        contract = read_contract(settings.model_dir / spec.feature_service / version)
        if contract is not None and current_fingerprint(contract) == spec.fingerprint:
            keep.append(version)
        else:
            counts.other_versions.append(version)
    mask = pc.is_in(served["model_version"], value_set=pa.array(keep, pa.string()))
    kept = served.filter(mask)
    counts.other_definitions = served.num_rows - kept.num_rows
    return kept


def first_scorings(con: Any, served: pa.Table, event_id: str, columns: list[str],
                   per: list[str] | None = None) -> int:
    """Register ``served`` with duckdb ``con`` and create the temp table ``firsts``: the first
    scoring of each event id (of each event per ``per`` columns, e.g. per model version) with
    ``columns``; rows without an id are left out. Returns how many rows it holds."""
    per = per or []
    con.register("served", served.select(
        list(dict.fromkeys([event_id, LOG_TIMESTAMP, REQUEST_ID, *per, *columns]))))
    partition = ", ".join([*(ident(c) for c in per), f"CAST({ident(event_id)} AS VARCHAR)"])
    con.execute(f"""
        CREATE TEMP TABLE firsts AS
        SELECT * EXCLUDE (scoring) FROM (
            SELECT *, row_number() OVER (PARTITION BY {partition}
                                         ORDER BY "{LOG_TIMESTAMP}", "{REQUEST_ID}") scoring
            FROM served WHERE {ident(event_id)} IS NOT NULL)
        WHERE scoring = 1""")
    return int(con.sql("SELECT count(*) FROM firsts").fetchall()[0][0])


def served_training_table(
    settings: Settings, cutoff: datetime, since: datetime | None = None,
    until: datetime | None = None, log_dir: Path | None = None, store=None,
) -> tuple[pa.Table, ServiceSpec, FromLogsCounts]:
    """The logged rows served before ``cutoff`` (in [since, until]) joined with their labels.

    One row per event id: the first time the event was scored, with the features exactly as
    served; its served-at time is the row's event time. Labels must be known by ``cutoff``.
    """
    import duckdb

    store = store or open_store(settings)
    spec = resolve_service(store, settings.feature_service)
    require_trainable(spec)
    source = LabelSource.from_settings(settings)
    directory = log_dir or logging_destination(store, spec.feature_service,
                                               settings.feature_log_dir)
    served = load_served(directory, since, until)
    served = served.filter(pc.less(served[LOG_TIMESTAMP],
                                   pa.scalar(cutoff, pa.timestamp("us", tz="UTC"))))
    missing = [c for c in (source.id_column, "model_version", *spec.feature_names)
               if c not in served.column_names]
    if missing:
        raise ServedLogError(
            f"the served-feature logs under {directory} have no column {', '.join(missing)}"
            + (f": requests must send {source.id_column} to be joined with their labels"
               if source.id_column in missing else ""))
    counts = FromLogsCounts(logged=served.num_rows)
    counts.without_id = served[source.id_column].null_count
    served = _current_definitions(settings, spec, served, counts)
    keys = [k.name for k in spec.entity_keys]
    event_id, label_ts = ident(source.id_column), ident(source.label_timestamp_column)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        check_unique_labels(con, source)
        firsts = first_scorings(con, served, source.id_column, [*keys, *spec.feature_names])
        counts.repeated = served.num_rows - counts.without_id - firsts
        table = con.sql(
            f"""SELECT l.{event_id}, {", ".join(f"s.{ident(k)}" for k in keys)},
                       s."{LOG_TIMESTAMP}" AS {ident(source.timestamp_column)},
                       CAST(l.{label_ts} AS TIMESTAMPTZ) AS {label_ts},
                       l.{ident(source.label_column)},
                       {", ".join(f"s.{ident(f)}" for f in spec.feature_names)}
                FROM firsts s JOIN read_parquet(?) l
                  ON CAST(s.{event_id} AS VARCHAR) = CAST(l.{event_id} AS VARCHAR)
                WHERE CAST(l.{label_ts} AS TIMESTAMPTZ) <= ?
                ORDER BY {ident(source.timestamp_column)}, {event_id}""",
            params=[str(source.labels_path), cutoff],
        ).to_arrow_table()
    finally:
        con.close()
    counts.rows = table.num_rows
    counts.unlabelled = firsts - table.num_rows
    return cast_features(table.select(layout_columns(source, spec)), spec), spec, counts


def write_from_logs(
    settings: Settings, path: Path, cutoff: datetime | None = None,
    since: datetime | None = None, until: datetime | None = None, log_dir: Path | None = None,
) -> FromLogsCounts:
    """Write the training set of what was served (see :func:`served_training_table`)."""
    source = LabelSource.from_settings(settings)
    cutoff = cutoff or datetime.now(UTC)
    table, spec, counts = served_training_table(settings, cutoff, since, until, log_dir)
    if table.num_rows == 0:
        raise DatasetError(
            f"no logged prediction in the window has a label known at {cutoff.isoformat()} "
            f"({counts.logged:,} logged, {counts.without_id:,} without "
            f"{source.id_column}, {counts.unlabelled:,} unlabelled, "
            f"{counts.other_definitions:,} served under other definitions)")
    header = TrainingSet(pd.DataFrame(), service_summary(spec), cutoff, source.label_column,
                         source.timestamp_column, source.id_column, origin=SERVED_LOGS)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(path.suffix + ".partial")
    pq.write_table(table.cast(header.schema_with_provenance(table.schema)), staging)
    staging.replace(path)
    return counts
