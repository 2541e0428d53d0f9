"""Batch scoring for backfills: the training path (point-in-time, offline), not the online one.

Events are read from parquet in slices of ``dataset_chunk_rows``; each slice gets its features
from Feast's historical retrieval exactly as a training set does (same retrieval plan, same
on-demand code, same casts), the model's input matrix is built by :func:`training.train.to_matrix`
with the contract's categories, and the scores are streamed to parquet. Scoring refuses a model
whose contract no longer matches the registry's feature service.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skewless.artifact import ModelArtifact, latest_artifact_dir, load_artifact
from skewless.contract import FeatureContract, contract_differences, resolve_service
from skewless.errors import SkewlessError
from skewless.settings import Settings
from training.dataset import arrow_type, open_store, plan_retrieval, retrieve_in_order, to_frame
from training.train import to_matrix

SCORE_COLUMN = "score"
VERSION_COLUMN = "model_version"
ROW_KEY = "__skewless_row"  # input position; Feast carries it through the join


class ScoreError(SkewlessError):
    """Events could not be scored as asked (bad input, or a model that no longer fits)."""


@dataclass
class ScoreSummary:
    rows: int
    model_version: str
    output: Path
    seconds: float


def accepts(dtype: str, actual: pa.DataType) -> bool:
    """Whether a column of ``actual`` type can stand for a Feast ``dtype`` without loss."""
    if pa.types.is_null(actual):  # only nulls (e.g. an empty pandas object column)
        return dtype in ("Int32", "Int64", "Float32", "Float64", "String", "Bool")
    if dtype in ("Int32", "Int64"):
        return pa.types.is_integer(actual)
    if dtype in ("Float32", "Float64"):
        return pa.types.is_floating(actual) or pa.types.is_integer(actual)
    if dtype == "String":
        if pa.types.is_dictionary(actual):
            actual = actual.value_type
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if dtype == "Bool":
        return pa.types.is_boolean(actual)
    return False


def _input_columns(schema: pa.Schema, contract: FeatureContract, timestamp_column: str,
                   path: Path) -> dict[str, str]:
    """The contract's inputs (name → Feast type) after checking ``schema`` holds each of them."""
    inputs = {f.name: f.dtype for f in contract.entity_keys + contract.request_fields}
    missing = [c for c in (*inputs, timestamp_column) if c not in schema.names]
    if missing:
        raise ScoreError(
            f"{path} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(the model needs {', '.join([*inputs, timestamp_column])})"
        )
    for name, dtype in inputs.items():
        actual = schema.field(name).type
        if not accepts(dtype, actual):
            raise ScoreError(f"column {name} of {path} is {actual}; the model needs {dtype}")
    actual = schema.field(timestamp_column).type
    if not pa.types.is_timestamp(actual):
        raise ScoreError(f"column {timestamp_column} of {path} is {actual}; the model needs a "
                         "timestamp")
    return inputs


def _slices(source: pq.ParquetFile, columns: list[str], rows: int) -> Iterator[pa.Table]:
    """The file's rows, in order, in tables of ``rows`` (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in source.iter_batches(batch_size=rows, columns=columns):
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def _utc_microseconds(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Event times as the training set holds them: UTC, microseconds (naive means UTC)."""
    return column.cast(pa.timestamp("us", tz="UTC"), safe=False)


def score_events(
    settings: Settings, input_path: Path, output_path: Path, model_dir: Path | None = None
) -> ScoreSummary:
    """Score every event of ``input_path`` with the model in ``model_dir`` (default: latest).

    The output holds, per input row and in input order, the event id (when the input has
    one), the entity keys, the event time (UTC), ``score`` and ``model_version``; its
    metadata names the model version, the feature service and the definitions' fingerprint.
    """
    started = time.perf_counter()
    if not input_path.is_file():
        raise ScoreError(f"input file {input_path} does not exist")
    try:
        source = pq.ParquetFile(input_path)
    except (pa.ArrowException, OSError) as exc:
        raise ScoreError(f"{input_path} is not a readable parquet file: {exc}") from exc

    artifact: ModelArtifact = load_artifact(
        model_dir or latest_artifact_dir(settings.model_dir, settings.feature_service),
        settings.model_max_bytes,
    )
    contract = artifact.contract
    store = open_store(settings)
    spec = resolve_service(store, contract.feature_service)
    problems = contract_differences(contract, spec)
    if problems:
        raise ScoreError(
            f"model {artifact.version} no longer matches feature service "
            f"{spec.feature_service}: {'; '.join(problems)}"
        )

    ts_column = settings.event_timestamp_column
    inputs = _input_columns(source.schema_arrow, contract, ts_column, input_path)
    keys = [f.name for f in contract.entity_keys]
    id_column = settings.event_id_column
    has_id = id_column in source.schema_arrow.names and id_column not in (*inputs, ts_column)
    read = ([id_column] if has_id else []) + [*inputs, ts_column]

    features, categories = contract.features, contract.categories
    plan = plan_retrieval(spec)
    schema = pa.schema(
        ([source.schema_arrow.field(id_column)] if has_id else [])
        + [pa.field(k, arrow_type(inputs[k])) for k in keys]
        + [pa.field(ts_column, pa.timestamp("us", tz="UTC")),
           pa.field(SCORE_COLUMN, pa.float64()), pa.field(VERSION_COLUMN, pa.string())],
        metadata={"model_version": artifact.version, "feature_service": spec.feature_service,
                  "fingerprint": spec.fingerprint},
    )

    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".partial")
    rows = 0
    writer = pq.ParquetWriter(tmp, schema)
    try:
        for part in _slices(source, read, settings.dataset_chunk_rows):
            events = _prepare(part, inputs, ts_column, input_path, rows)
            retrieved = retrieve_in_order(store, plan, spec, events, ROW_KEY, ts_column)
            matrix = to_matrix(to_frame(retrieved, spec.feature_names), features, categories)
            scores = np.asarray(artifact.booster.predict(matrix), dtype=np.float64)
            columns = ([part.column(id_column)] if has_id else []) + [
                events.column(k) for k in keys
            ] + [events.column(ts_column), pa.array(scores, pa.float64()),
                 pa.array([artifact.version] * part.num_rows, pa.string())]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            rows += part.num_rows
        writer.close()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(output_path)  # only a complete file ever appears at OUTPUT
    return ScoreSummary(rows=rows, model_version=artifact.version, output=output_path,
                        seconds=time.perf_counter() - started)


def _prepare(part: pa.Table, inputs: dict[str, str], ts_column: str, path: Path,
             offset: int) -> pa.Table:
    """One slice as Feast's entity rows: position, inputs at their declared types, UTC time."""
    columns: dict[str, pa.ChunkedArray] = {
        ROW_KEY: pa.chunked_array([pa.array(np.arange(offset, offset + part.num_rows))])
    }
    for name, dtype in inputs.items():
        try:
            columns[name] = part.column(name).cast(arrow_type(dtype))
        except pa.ArrowInvalid as exc:
            raise ScoreError(f"column {name} of {path} does not fit {dtype}: {exc}") from exc
    times = part.column(ts_column)
    if times.null_count:
        raise ScoreError(f"column {ts_column} of {path} has {times.null_count} null values "
                         f"(in rows {offset}–{offset + part.num_rows - 1}); every event needs "
                         "a time")
    columns[ts_column] = _utc_microseconds(times)
    return pa.table(columns)
