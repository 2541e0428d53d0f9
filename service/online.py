"""Reading a feature service's values from Redis exactly as ``feast materialize`` stored them.

Feast's Redis layout: one hash per entity key (the serialized EntityKey proto followed by the
project name), holding for each feature view a ``_ts:<view>`` field (a protobuf Timestamp)
and, per feature, a field named by the murmur3 hash of ``<view>:<feature>`` whose value is
a serialized ``ValueProto``. Views keyed on the same entities share a hash, so one HMGET
per entity group, all in one pipeline, reads a whole feature vector in one round trip.

Everything derived from the registry (hash field names, key layout, TTLs, value decoders)
is resolved once in :meth:`OnlinePlan.from_store`; a read only builds keys and decodes.
On-demand views come from the service spec's registry snapshot, never from a second read of
the registry, and run the function compiled, once, from the source text the fingerprint
covers (``skewless.transformations``); nothing here looks at the registry again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from skewless.contract import ServiceSpec
from skewless.transformations import arrow_type, transform_table

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.on_demand_feature_view import OnDemandFeatureView

PRESENT = int(FieldStatus.PRESENT)
NULL_VALUE = int(FieldStatus.NULL_VALUE)
NOT_FOUND = int(FieldStatus.NOT_FOUND)
OUTSIDE_MAX_AGE = int(FieldStatus.OUTSIDE_MAX_AGE)
STATUS_NAMES = {PRESENT: "PRESENT", NULL_VALUE: "NULL_VALUE", NOT_FOUND: "NOT_FOUND",
                OUTSIDE_MAX_AGE: "OUTSIDE_MAX_AGE"}

# The ValueProto field that carries each Feast scalar type.
_VALUE_FIELD = {"Int32": "int32_val", "Int64": "int64_val", "Float32": "float_val",
                "Float64": "double_val", "String": "string_val", "Bool": "bool_val",
                "Bytes": "bytes_val"}
# The Python type of each Feast scalar type: request fields are validated as it, and
# on-demand outputs coerced to it, as Feast does when it turns python values into protos.
PYTHON_TYPES: dict[str, type] = {
    "Int32": int, "Int64": int, "Float32": float, "Float64": float, "String": str,
    "Bool": bool, "Bytes": bytes,
}


KEY_CACHE_SIZE = 200_000
# ValueProto kinds that hold a message (Map, Struct, lists): a model never takes one, but an
# on-demand view may read one; decoded as Feast's SDK decodes it.
_MESSAGE_KINDS = frozenset(
    f.name for f in ValueProto.DESCRIPTOR.fields if f.message_type is not None)


def _input_type(dtype: str) -> pa.DataType | None:
    """The Arrow type of an on-demand input: a scalar's as training types it, else inferred
    from the values (Map, Json, Struct, lists: the view gets them as Feast's SDK gives them)."""
    try:
        return arrow_type(dtype)
    except KeyError:
        return None


def _unserved_inputs(spec: ServiceSpec, served: dict[str, int]) -> dict[str, tuple[str, str]]:
    """On-demand inputs the service does not serve: ``<view>__<feature>`` → (view, feature)."""
    unserved: dict[str, tuple[str, str]] = {}
    for view_name, definition in spec.definitions["views"].items():
        if definition["kind"] != "on_demand":
            continue
        for projection in spec.on_demand[view_name].view.source_feature_view_projections.values():
            for feat in projection.features:
                full = f"{projection.name_to_use()}__{feat.name}"
                if full not in served:
                    unserved.setdefault(full, (projection.name_to_use(), feat.name))
    return unserved


def _view_keys(spec: ServiceSpec, view_name: str) -> tuple[list[str], int, dict[str, str]]:
    """A batch view's join keys, TTL (seconds) and key types, from the spec's registry read."""
    assert spec.registry is not None
    view = spec.registry.feature_view(view_name)
    keys = {c.name: str(c.dtype) for c in view.entity_columns}
    ttl = int(view.ttl.total_seconds()) if view.ttl else 0
    return list(keys), ttl, keys


@dataclass(frozen=True)
class ViewRead:
    """One batch feature view inside an entity group's HMGET."""

    name: str
    features: tuple[str, ...]  # feature names, in service order
    ttl_seconds: int  # 0: no expiry
    first: int  # index of the view's first field in the group's HMGET reply
    output: tuple[int, ...]  # positions of the features in the service's feature vector


@dataclass(frozen=True)
class EntityGroup:
    """Feature views keyed on the same join keys: one Redis hash, one HMGET."""

    join_keys: tuple[str, ...]  # sorted, as Feast serializes them
    value_fields: tuple[str, ...]  # ValueProto field of each join key
    fields: tuple[bytes, ...]  # HMGET field names
    views: tuple[ViewRead, ...]


@dataclass(frozen=True)
class OnDemandStep:
    view: OnDemandFeatureView  # running the function compiled from its source text
    name: str
    inputs: tuple[tuple[str, str, int], ...]  # (feature, <view>__<feature>, vector position)
    request_fields: tuple[str, ...]
    outputs: tuple[tuple[str, int, Callable[[Any], Any]], ...]  # (name, position, coerce)
    # A pandas-mode view's input columns, as training's table holds them:
    # (<view>__<feature> or request field, vector position or -1 for a request field, type;
    # None for a type the model cannot take, a Map, Json or Struct the view may read).
    table_inputs: tuple[tuple[str, int, pa.DataType | None], ...] = ()
    pandas: bool = False  # fixed when the plan is built, not read per request

    def run_table(self, values: list[list[Any]],
                  requests: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
        """A pandas-mode view over the batch, as training runs it: one Arrow table of its
        inputs, typed as training types them, through :func:`transform_table`."""
        columns = {
            name: pa.array([row[pos] for row in values] if pos >= 0
                           else [r[name] for r in requests], type=dtype)
            for name, pos, dtype in self.table_inputs
        }
        outputs = transform_table(self.view, pa.table(columns), [n for n, _, _ in self.outputs])
        return {name: column.to_pylist() for name, column in outputs.items()}

    def run(self, inputs: dict[str, list[Any]]) -> dict[str, Any]:
        transformation: Any = self.view.feature_transformation
        if not self.view.singleton:
            return transformation.transform(inputs)  # type: ignore[no-any-return]
        n = len(next(iter(inputs.values())))
        rows = [transformation.transform_singleton({k: [v[i]] for k, v in inputs.items()})
                for i in range(n)]
        return {name: [r[name] for r in rows] for name, _, _ in self.outputs}


@dataclass
class FeatureRows:
    """Feature vectors for a batch of requests, column-aligned with the service's features.

    Between :meth:`OnlinePlan.decode` and the end of :meth:`OnlinePlan.transform`, rows also
    hold the on-demand views' inputs the service does not serve, after its features.
    """

    values: list[list[Any]]
    statuses: list[list[int]]
    timestamps: list[list[float | None]]  # event time (epoch seconds) per feature


@dataclass(frozen=True)
class OnlinePlan:
    """Everything needed to read and transform a feature service's vector, resolved once."""

    project: str
    key_version: int
    groups: tuple[EntityGroup, ...]
    on_demand: tuple[OnDemandStep, ...]
    width: int
    views: tuple[str, ...]  # the view of each feature position
    # Inputs of on-demand views that the service does not serve (Feast's template: a view
    # over a whole feature view, served beside one of its features): read with the vector,
    # at positions after it, and dropped once the views have run.
    unserved: int = 0
    # Serialized Redis keys of recently seen entities (bounded; cleared when full).
    _key_cache: dict[tuple[str, ...], dict[tuple[Any, ...], bytes]] = field(
        default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_store(cls, store: FeatureStore, spec: ServiceSpec) -> OnlinePlan:
        position = {f.name: i for i, f in enumerate(spec.features)}
        views = spec.definitions["views"]
        # Batch views to read: served features first, then unserved on-demand inputs.
        reads: dict[str, list[str]] = {
            v: [f for f, _ in d["features"]] for v, d in views.items() if d["kind"] == "batch"}
        unserved = _unserved_inputs(spec, position)
        for full, (view_name, feature) in unserved.items():
            position[full] = len(position)
            reads.setdefault(view_name, []).append(feature)
        on_demand: list[OnDemandStep] = []
        for view_name, definition in views.items():
            names = [f for f, _ in definition["features"]]
            if definition["kind"] == "batch":
                continue
            # From the spec's registry read, its text checked by resolve_service: compiled
            # here, once, never re-read.
            odfv = spec.on_demand[view_name].runnable()
            if odfv.mode not in ("python", "pandas"):
                raise ValueError(
                    f"on-demand view {view_name} has mode={odfv.mode!r}; the predictor runs "
                    "python-mode and pandas-mode views"
                )
            inputs = []
            table_inputs: list[tuple[str, int, pa.DataType]] = []
            for projection in odfv.source_feature_view_projections.values():
                for feat in projection.features:
                    full = f"{projection.name_to_use()}__{feat.name}"
                    inputs.append((feat.name, f"{projection.name}__{feat.name}", position[full]))
                    table_inputs.append((full, position[full], _input_type(str(feat.dtype))))
            table_inputs += [(f.name, -1, _input_type(str(f.dtype)))
                             for src in odfv.source_request_sources.values() for f in src.schema]
            dtypes = {f.name: str(f.dtype) for f in odfv.features}
            on_demand.append(OnDemandStep(
                view=odfv,
                name=view_name,
                inputs=tuple(inputs),
                request_fields=tuple(
                    f.name for src in odfv.source_request_sources.values() for f in src.schema
                ),
                outputs=tuple((n, position[f"{view_name}__{n}"], PYTHON_TYPES[dtypes[n]])
                              for n in names),
                table_inputs=tuple(table_inputs) if odfv.mode == "pandas" else (),
                pandas=odfv.mode == "pandas",
            ))
        by_keys: dict[tuple[str, ...], list[tuple[str, list[str]]]] = {}
        ttl: dict[str, int] = {}
        key_types = {k.name: k.dtype for k in spec.entity_keys}
        for view_name, names in reads.items():
            if view_name in views:
                entities, ttl[view_name] = views[view_name]["entities"], views[view_name].get(
                    "ttl_seconds", 0)
            else:  # a view only on-demand views read: from the spec's registry read
                entities, ttl[view_name], types = _view_keys(spec, view_name)
                missing = sorted(set(types) - set(key_types))
                if missing:
                    raise ValueError(
                        f"on-demand inputs from {view_name} need the entity key(s) "
                        f"{', '.join(missing)}, which feature service {spec.feature_service} "
                        "does not take: serve one of that view's features too")
            by_keys.setdefault(tuple(sorted(entities)), []).append((view_name, names))
        groups = []
        for join_keys, group_views in by_keys.items():
            fields: list[bytes] = []
            view_reads = []
            for view_name, names in group_views:
                view_reads.append(ViewRead(
                    name=view_name, features=tuple(names), ttl_seconds=int(ttl[view_name]),
                    first=len(fields),
                    output=tuple(position[f"{view_name}__{n}"] for n in names),
                ))
                fields.extend(_mmh3(f"{view_name}:{n}") for n in names)
                fields.append(f"_ts:{view_name}".encode())
            groups.append(EntityGroup(
                join_keys=join_keys,
                value_fields=tuple(_VALUE_FIELD[key_types[k]] for k in join_keys),
                fields=tuple(fields), views=tuple(view_reads),
            ))
        return cls(
            project=store.config.project,
            key_version=store.config.entity_key_serialization_version,
            groups=tuple(groups), on_demand=tuple(on_demand), width=len(spec.features),
            views=tuple(f.view for f in spec.features), unserved=len(unserved),
        )

    def redis_key(self, group: EntityGroup, row: dict[str, Any]) -> bytes:
        values = tuple(row[k] for k in group.join_keys)
        cache = self._key_cache.setdefault(group.join_keys, {})
        key = cache.get(values)
        if key is None:
            if len(cache) >= KEY_CACHE_SIZE:
                cache.clear()
            key = cache[values] = self._serialize_key(group, row)
        return key

    def _serialize_key(self, group: EntityGroup, row: dict[str, Any]) -> bytes:
        entity_key = EntityKeyProto(
            join_keys=group.join_keys,
            entity_values=[ValueProto(**{field: row[key]})
                           for key, field in zip(group.join_keys, group.value_fields,
                                                 strict=True)],
        )
        return serialize_entity_key(entity_key, self.key_version) + self.project.encode()

    def commands(self, rows: Sequence[dict[str, Any]]) -> list[tuple[bytes, tuple[bytes, ...]]]:
        """The HMGETs for a batch: per row, one per entity group (in group order)."""
        return [(self.redis_key(g, row), g.fields) for row in rows for g in self.groups]

    def decode(self, replies: Sequence[Sequence[bytes | None]], n_rows: int,
               now: float) -> FeatureRows:
        """Decode HMGET replies into values, statuses and event times, enforcing view TTLs.

        A value whose event time is older than its view's TTL is OUTSIDE_MAX_AGE and served
        as missing (None), whatever the online store still holds.
        """
        width = self.width + self.unserved
        values: list[list[Any]] = []
        statuses: list[list[int]] = []
        stamps: list[list[float | None]] = []
        it = iter(replies)
        for _ in range(n_rows):
            row_v: list[Any] = [None] * width
            row_s: list[int] = [PRESENT] * width
            row_t: list[float | None] = [None] * width
            for group in self.groups:
                reply = next(it)
                for view in group.views:
                    ts_raw = reply[view.first + len(view.features)]
                    if not ts_raw:
                        for pos in view.output:
                            row_s[pos] = NOT_FOUND
                        continue
                    ts = Timestamp.FromString(ts_raw)
                    event_time = ts.seconds + ts.nanos / 1e9
                    expired = view.ttl_seconds and event_time < now - view.ttl_seconds
                    for j, pos in enumerate(view.output):
                        row_t[pos] = event_time
                        if expired:
                            row_s[pos] = OUTSIDE_MAX_AGE
                            continue
                        raw = reply[view.first + j]
                        if not raw:
                            row_s[pos] = NULL_VALUE
                            continue
                        proto = ValueProto.FromString(raw)
                        kind = proto.WhichOneof("val")
                        if kind is None or kind == "null_val":
                            row_s[pos] = NULL_VALUE
                        elif kind in _MESSAGE_KINDS:  # only an unserved on-demand input
                            row_v[pos] = feast_value_type_to_python_type(proto)
                        else:
                            row_v[pos] = getattr(proto, kind)
            values.append(row_v)
            statuses.append(row_s)
            stamps.append(row_t)
        return FeatureRows(values, statuses, stamps)

    def transform(self, features: FeatureRows, requests: Sequence[dict[str, Any]],
                  now: float) -> None:
        """Run each on-demand view through Feast's own transformation, column-wise.

        A python-mode view gets lists (the fast path); a pandas-mode view gets the batch as
        one table, run and cast exactly as training runs it.
        """
        values = features.values
        for step in self.on_demand:
            if step.pandas:
                self._fill(step, step.run_table(values, requests), features, now)
                continue
            inputs: dict[str, list[Any]] = {}
            for name, full_name, pos in step.inputs:
                # Both spellings, as OnDemandFeatureView.transform_dict prepares them.
                inputs[name] = inputs[full_name] = [row[pos] for row in values]
            for name in step.request_fields:
                inputs[name] = [r[name] for r in requests]
            # Feast's own transformation object, called below transform_dict: that method
            # only adds the spellings above, and its run-time type checks cost more than
            # the transformation.
            self._fill(step, step.run(inputs), features, now)
        if self.unserved:
            width = self.width
            for rows in (features.values, features.statuses, features.timestamps):
                for row in rows:
                    del row[width:]

    @staticmethod
    def _fill(step: OnDemandStep, output: dict[str, Any], features: FeatureRows,
              now: float) -> None:
        values, statuses, stamps = features.values, features.statuses, features.timestamps
        for name, pos, coerce in step.outputs:
            column = output[name]
            for i, value in enumerate(column):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    statuses[i][pos] = NULL_VALUE
                    values[i][pos] = None
                else:
                    values[i][pos] = coerce(value)
                    statuses[i][pos] = PRESENT
                stamps[i][pos] = now
