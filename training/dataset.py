"""Point-in-time training sets, built only through Feast's historical retrieval.

Every label event known at the cut-off becomes exactly one row: its id, entity keys, event
timestamp, label, and every feature of the model's feature service as ``<view>__<feature>``,
null where no value was known at the event's time or the latest one was past the view's TTL.
Feast's duckdb offline store does the join; this module checks that it kept every row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from skewless.contract import ServiceSpec, resolve_service, service_summary
from skewless.settings import Settings, export_for_feast

PANDAS_DTYPES = {
    "Int32": "Int32",
    "Int64": "Int64",
    "Float32": "float32",
    "Float64": "float64",
    "Bool": "boolean",
    "String": "string",
}


@dataclass
class TrainingSet:
    """Rows plus what they are: the feature service summary and the label cut-off."""

    frame: pd.DataFrame
    service: dict
    cutoff: datetime
    label_column: str
    timestamp_column: str
    id_column: str

    def metadata(self) -> dict[str, str]:
        return {
            "service": json.dumps(self.service, default=str),
            "cutoff": self.cutoff.isoformat(),
            "label_column": self.label_column,
            "timestamp_column": self.timestamp_column,
            "id_column": self.id_column,
        }

    @classmethod
    def read(cls, path: Path) -> TrainingSet:
        table = pq.read_table(path)
        raw = table.schema.metadata or {}
        meta = {k.decode()[9:]: v.decode() for k, v in raw.items() if k.startswith(b"skewless.")}
        if "service" not in meta:
            raise DatasetError(f"{path} is not a Skewless training set (no service metadata)")
        return cls(
            frame=table.to_pandas(),
            service=json.loads(meta["service"]),
            cutoff=datetime.fromisoformat(meta["cutoff"]),
            label_column=meta["label_column"],
            timestamp_column=meta["timestamp_column"],
            id_column=meta["id_column"],
        )

    def write(self, path: Path) -> Path:
        """Write as parquet with provenance in the file's key-value metadata."""
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata(
            {**existing, **{f"skewless.{k}".encode(): v.encode()
                            for k, v in self.metadata().items()}}
        )
        pq.write_table(table, path)
        return path


class DatasetError(RuntimeError):
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


def open_store(settings: Settings):  # -> feast.FeatureStore, imported lazily (slow import)
    from feast import FeatureStore

    export_for_feast()
    return FeatureStore(repo_path=str(settings.repo_path))


def load_label_events(
    source: LabelSource, spec: ServiceSpec, cutoff: datetime
) -> pd.DataFrame:
    """Label events known at ``cutoff``: the event columns the service needs plus the label."""
    inputs = [f.name for f in spec.entity_keys] + [f.name for f in spec.request_fields]
    columns = [source.id_column, source.timestamp_column, *inputs]
    events = pd.read_parquet(source.events_path, columns=columns)
    labels = pd.read_parquet(
        source.labels_path,
        columns=[source.id_column, source.label_column, source.label_timestamp_column],
    )
    cutoff_ts = pd.Timestamp(cutoff).tz_convert("UTC") if pd.Timestamp(cutoff).tzinfo else (
        pd.Timestamp(cutoff).tz_localize("UTC")
    )
    labels = labels[labels[source.label_timestamp_column] <= cutoff_ts]
    if labels[source.id_column].duplicated().any():
        raise DatasetError(f"labels hold duplicate {source.id_column} values")
    joined = events.merge(labels, on=source.id_column, how="inner", validate="one_to_one")
    joined = joined[joined[source.timestamp_column] < cutoff_ts]
    return joined.sort_values([source.timestamp_column, source.id_column], kind="stable")


def cast_features(df: pd.DataFrame, spec: ServiceSpec) -> pd.DataFrame:
    """Give every feature column its declared Feast type (duckdb returns ints as float64)."""
    for f in spec.features:
        target = PANDAS_DTYPES.get(f.dtype)
        if target is None:
            raise DatasetError(f"feature {f.name} has unsupported type {f.dtype}")
        column = df[f.name]
        if target.startswith("Int") and column.dtype.kind == "f":
            whole = column.dropna()
            if not (whole == whole.round()).all():
                raise DatasetError(f"feature {f.name} is {f.dtype} but holds fractions")
        df[f.name] = column.astype(target)
    return df


@dataclass
class RetrievalPlan:
    """What to ask Feast for: batch feature refs, and the on-demand views to run after.

    Feast runs a python-mode on-demand view offline by converting the whole joined table
    to Python objects (``to_pydict``). The plan asks the offline store for the batch
    features (and the on-demand inputs), then hands each on-demand view only its own
    inputs through Feast's ``transform_arrow``: the same definitions and code, without
    materialising every other column as Python objects.
    """

    refs: list[str]
    on_demand: list[tuple[Any, list[str]]]  # (OnDemandFeatureView, requested features)


def plan_retrieval(store, feature_service: str) -> RetrievalPlan:
    service = store.get_feature_service(feature_service)
    odfv_names = {v.name for v in store.list_on_demand_feature_views()}
    refs: list[str] = []
    on_demand: list[tuple[Any, list[str]]] = []
    for projection in service.feature_view_projections:
        names = [f.name for f in projection.features]
        if projection.name in odfv_names:
            on_demand.append((store.get_on_demand_feature_view(projection.name), names))
        else:
            refs += [f"{projection.name_to_use()}:{n}" for n in names]
    for odfv, _ in on_demand:
        for source in odfv.source_feature_view_projections.values():
            refs += [f"{source.name_to_use()}:{f.name}" for f in source.features
                     if f"{source.name_to_use()}:{f.name}" not in refs]
    return RetrievalPlan(refs=refs, on_demand=on_demand)


def _arrow_type(dtype: str) -> pa.DataType:
    return {"Int32": pa.int32(), "Int64": pa.int64(), "Float32": pa.float32(),
            "Float64": pa.float64(), "Bool": pa.bool_(), "String": pa.string()}[dtype]


def retrieve_chunk(store, plan: RetrievalPlan, entity_df: pd.DataFrame) -> pa.Table:
    """Point-in-time features for one slice of label events, on-demand views included."""
    table = store.get_historical_features(
        entity_df=entity_df, features=plan.refs, full_feature_names=True
    ).to_arrow()
    for odfv, names in plan.on_demand:
        inputs = [f"{p.name_to_use()}__{f.name}"
                  for p in odfv.source_feature_view_projections.values() for f in p.features]
        inputs += [f.name for r in odfv.source_request_sources.values() for f in r.schema]
        outputs = odfv.transform_arrow(table.select(inputs), full_feature_names=True)
        declared = {f.name: str(f.dtype) for f in odfv.features}
        for name in names:
            column = f"{odfv.projection.name_to_use()}__{name}"
            table = table.append_column(
                column, outputs.column(column).cast(_arrow_type(declared[name]))
            )
    return table


def iter_training_chunks(
    settings: Settings,
    cutoff: datetime,
    store=None,
    source: LabelSource | None = None,
    chunk_rows: int | None = None,
) -> Iterator[tuple[pd.DataFrame, ServiceSpec]]:
    """Yield the training set in time-ordered slices of at most ``chunk_rows`` label events.

    Each slice is one historical retrieval; slicing bounds memory, and every slice is
    checked to have exactly one row per label event.
    """
    store = store or open_store(settings)
    source = source or LabelSource.from_settings(settings)
    spec = resolve_service(store, settings.feature_service)
    plan = plan_retrieval(store, settings.feature_service)
    events = load_label_events(source, spec, cutoff)
    if events.empty:
        raise DatasetError(f"no label events known at {cutoff.isoformat()}")
    label_cols = [source.id_column, source.label_column, source.label_timestamp_column]
    keys = [f.name for f in spec.entity_keys]
    ordered = [source.id_column, *keys, source.timestamp_column, *label_cols[2:],
               source.label_column, *spec.feature_names]
    step = chunk_rows or settings.dataset_chunk_rows
    for start in range(0, len(events), step):
        part = events.iloc[start:start + step]
        entity_df = part.drop(columns=label_cols[1:]).rename(
            columns={source.timestamp_column: "event_timestamp"}
        )
        result = retrieve_chunk(store, plan, entity_df).to_pandas()
        if len(result) != len(part) or result[source.id_column].duplicated().any():
            raise DatasetError(
                f"historical retrieval returned {len(result)} rows for {len(part)} label events"
            )
        missing = [f.name for f in spec.features if f.name not in result.columns]
        if missing:
            raise DatasetError(f"historical retrieval did not return {', '.join(missing)}")
        result = result.rename(columns={"event_timestamp": source.timestamp_column})
        result = result.merge(part[label_cols], on=source.id_column, validate="one_to_one")
        result = result[ordered].sort_values(
            [source.timestamp_column, source.id_column], kind="stable"
        ).reset_index(drop=True)
        yield cast_features(result, spec), spec


def build_training_set(
    settings: Settings,
    cutoff: datetime | None = None,
    store=None,
    source: LabelSource | None = None,
    chunk_rows: int | None = None,
) -> TrainingSet:
    """Join every label event known at ``cutoff`` with its point-in-time features."""
    source = source or LabelSource.from_settings(settings)
    cutoff = cutoff or datetime.now(UTC)
    parts = list(iter_training_chunks(settings, cutoff, store, source, chunk_rows))
    return TrainingSet(
        frame=pd.concat([p for p, _ in parts], ignore_index=True),
        service=service_summary(parts[0][1]),
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
) -> int:
    """Stream the training set to parquet slice by slice (memory bounded); returns rows."""
    source = LabelSource.from_settings(settings)
    cutoff = cutoff or datetime.now(UTC)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for frame, spec in iter_training_chunks(settings, cutoff, None, source, chunk_rows):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                meta = TrainingSet(frame.iloc[:0], service_summary(spec), cutoff,
                                   source.label_column, source.timestamp_column,
                                   source.id_column).metadata()
                schema = table.schema.with_metadata({
                    **(table.schema.metadata or {}),
                    **{f"skewless.{k}".encode(): v.encode() for k, v in meta.items()},
                })
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table.cast(writer.schema))
            rows += len(frame)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)  # only a complete set ever appears at PATH
    return rows
