"""Point-in-time training sets, built only through Feast's historical retrieval.

Every label event known at the cut-off becomes exactly one row: its id, entity keys, event
timestamp, label, and every feature of the model's feature service as ``<view>__<feature>``,
null where no value was known at the event's time or the latest one was past the view's TTL.
Feast's duckdb offline store does the join; this module checks that it kept every row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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


def build_training_set(
    settings: Settings,
    cutoff: datetime | None = None,
    store=None,
    source: LabelSource | None = None,
) -> TrainingSet:
    """Join every label event known at ``cutoff`` with its point-in-time features."""
    store = store or open_store(settings)
    source = source or LabelSource.from_settings(settings)
    cutoff = cutoff or datetime.now(UTC)
    spec = resolve_service(store, settings.feature_service)
    events = load_label_events(source, spec, cutoff)
    if events.empty:
        raise DatasetError(f"no label events known at {cutoff.isoformat()}")

    label_cols = [source.id_column, source.label_column, source.label_timestamp_column]
    entity_df = events.drop(columns=label_cols[1:]).rename(
        columns={source.timestamp_column: "event_timestamp"}
    )
    job = store.get_historical_features(
        entity_df=entity_df,
        features=store.get_feature_service(settings.feature_service),
        full_feature_names=True,
    )
    result = job.to_df()
    if len(result) != len(events) or result[source.id_column].duplicated().any():
        raise DatasetError(
            f"historical retrieval returned {len(result)} rows for {len(events)} label events"
        )
    missing = [f.name for f in spec.features if f.name not in result.columns]
    if missing:
        raise DatasetError(f"historical retrieval did not return {', '.join(missing)}")

    result = result.rename(columns={"event_timestamp": source.timestamp_column})
    result = result.merge(events[label_cols], on=source.id_column, validate="one_to_one")
    keys = [f.name for f in spec.entity_keys]
    ordered = [source.id_column, *keys, source.timestamp_column, *label_cols[2:],
               source.label_column, *spec.feature_names]
    result = result[ordered].sort_values(
        [source.timestamp_column, source.id_column], kind="stable"
    ).reset_index(drop=True)
    return TrainingSet(
        frame=cast_features(result, spec),
        service=service_summary(spec),
        cutoff=cutoff,
        label_column=source.label_column,
        timestamp_column=source.timestamp_column,
        id_column=source.id_column,
    )
