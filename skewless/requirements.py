"""What Skewless needs from a Feast repo: each need as one check, with its words.

``skewless doctor`` reports every check; the command that relies on one raises the same
words (the predictor at start-up, a training set before its retrieval), so what the doctor
printed is what the command says. A check returns a :class:`Problem` (what it found and what
to change), or None when the repo meets the need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skewless.errors import SkewlessError

if TYPE_CHECKING:
    from skewless.contract import ServiceSpec
    from skewless.definitions import RegistrySnapshot

# The Feast types a model takes (the training set stores each as one Arrow scalar type).
MODEL_TYPES = ("Int32", "Int64", "Float32", "Float64", "Bool", "String")
# On-demand view modes the predictor and training run from their source text.
SERVED_MODES = ("python", "pandas")
# Offline stores whose point-in-time join Skewless's training sets rely on.
KEEPS_EVERY_EVENT = ("duckdb",)


@dataclass(frozen=True)
class Problem:
    """A need the repo does not meet: what was found, and what to change."""

    found: str
    change: str

    def __str__(self) -> str:
        return f"{self.found} — {self.change}"


class UnsupportedRepo(SkewlessError):
    """The Feast repo uses something Skewless cannot serve or train on; the message says
    what to change (the words ``skewless doctor`` prints)."""


def require(doing: str, problems: Iterable[Problem | None]) -> None:
    """Raise :class:`UnsupportedRepo` naming every problem found, or return."""
    found = [p for p in problems if p is not None]
    if found:
        raise UnsupportedRepo(f"{doing}: " + " | ".join(str(p) for p in found))


def require_servable(config: Any, spec: ServiceSpec) -> None:
    """What the predictor needs before it starts: Redis and scalar features."""
    require(f"cannot serve feature service {spec.feature_service}",
            [online_store_problem(config), feature_type_problem(spec)])


def require_trainable(spec: ServiceSpec) -> None:
    """What a training set needs before its retrieval: features a model can take."""
    require(f"cannot build a training set for feature service {spec.feature_service}",
            [feature_type_problem(spec)])


# The online store ------------------------------------------------------------------------

def online_store_problem(config: Any) -> Problem | None:
    """The predictor reads Feast's Redis layout itself: from one Redis, or from Redis Cluster
    (one pipelined batch per node)."""
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    store = config.online_store
    repo = _repo_of(config)
    use_redis = (f"run `skewless init {repo}`, or set online_store in "
                 f"{repo / 'feature_store.yaml'} to `type: redis` with "
                 "`connection_string: ${SKEWLESS_REDIS}`, then `skewless apply` and "
                 "`skewless materialize`")
    if not isinstance(store, RedisOnlineStoreConfig):
        kind = getattr(store, "type", None) or type(store).__name__
        return Problem(
            f"the online store is {kind!r}: the predictor reads Feast's Redis layout directly "
            "(one round trip per request) and serves only `type: redis`", use_redis)
    single = ("serve from a single Redis (`redis_type: redis`, the default) or Redis Cluster "
              "(`redis_type: redis_cluster`)")
    if store.redis_type == RedisType.redis_sentinel:
        return Problem(
            "the online store is Redis Sentinel (`redis_type: redis_sentinel`): the predictor "
            "connects to the first address of connection_string as a Redis server, not "
            "through Sentinel", single)
    return None


def is_cluster(config: Any) -> bool:
    """Whether the online store is Redis Cluster (`redis_type: redis_cluster`)."""
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    store = config.online_store
    return isinstance(store, RedisOnlineStoreConfig) and (
        store.redis_type == RedisType.redis_cluster)


# The offline store -----------------------------------------------------------------------

def offline_store_problem(config: Any) -> Problem | None:
    """Offline stores known to lose or misplace label events in a point-in-time join."""
    kind = _store_type(config.offline_store)
    engine = _store_type(getattr(config, "batch_engine", None))
    repo = _repo_of(config)
    use_duckdb = (f"set `offline_store: {{type: duckdb}}` in {repo / 'feature_store.yaml'} (or "
                  f"run `skewless init {repo}`)")
    if kind in ("file", "dask"):
        return Problem(
            "the offline store is Feast's default `file` (dask) store: it silently drops label "
            "events that precede their entity's first feature row or whose latest value is "
            "past the view's TTL, and ignores the created-timestamp tie-break, so a training "
            "set loses rows and can hold other values than were served", use_duckdb)
    if kind == "ray" or engine == "ray":
        return Problem(
            "the offline store or batch engine is Ray: Feast 0.67's Ray path returns wrong "
            "point-in-time values and can write nothing while exiting 0", use_duckdb)
    return None


def _store_type(store: Any) -> str:
    if store is None:
        return ""
    if isinstance(store, str):
        return store
    return str(getattr(store, "type", "") or "")


def _repo_of(config: Any) -> Path:
    return Path(getattr(config, "repo_path", None) or ".")


# Feature types ---------------------------------------------------------------------------

_HINTS = (
    (("Map", "Json", "Struct"), "a key or field of a Map, Json or Struct"),
    (("Array", "Set"), "a length or an aggregate of an array"),
    (("UnixTimestamp",), "the seconds since a timestamp"),
    (("Bytes",), "a decoded value of Bytes"),
)


def _kind(dtype: str) -> str:
    return dtype.split("(", 1)[0]


def model_takes(dtype: str) -> bool:
    return dtype in MODEL_TYPES


def scalar_services(registry: RegistrySnapshot) -> list[str]:
    """The registry's feature services whose every feature a model can take."""
    return sorted(
        service.name for service in registry.feature_services()
        if all(model_takes(str(f.dtype))
               for projection in service.feature_view_projections
               for f in projection.features))


def feature_type_problem(spec: ServiceSpec) -> Problem | None:
    """Features a model cannot take (Map, Json, Struct, arrays, …), named by view and feature."""
    odd = [f for f in spec.features if not model_takes(f.dtype)]
    if not odd:
        return None
    listed = ", ".join(f"{f.view}:{f.feature} ({f.dtype})" for f in odd)
    kinds = {_kind(f.dtype) for f in odd}
    hints = [hint for names, hint in _HINTS if kinds & set(names)]
    others = [s for s in (scalar_services(spec.registry) if spec.registry else [])
              if s != spec.feature_service]
    return Problem(
        f"feature service {spec.feature_service} has features a model cannot take: {listed}; "
        f"a model takes {', '.join(MODEL_TYPES)}",
        "choose a feature service without them"
        + (f" (with scalar features only: {', '.join(others)})" if others else "")
        + ", or derive a scalar from each in an on-demand view"
        + (f" ({'; '.join(hints)})" if hints else "") + " and serve that instead")


# On-demand views -------------------------------------------------------------------------

def mode_note(mode: str) -> str:
    """How an on-demand view of ``mode`` runs when served."""
    if mode == "python":
        return "mode python: the fast path (column-wise lists, no pandas per request)"
    if mode == "pandas":
        return ("mode pandas: served, at a few ms per request for the DataFrame; mode python "
                "is the fast path")
    return f"mode {mode}"


def unserved_on_demand_inputs(spec: ServiceSpec) -> dict[str, str]:
    """On-demand views (by name) reading features the service does not serve, each with a
    note: the predictor reads those from Redis with the vector, in the same round trip, runs
    the view on them and drops them (they are not logged; a replay retrieves them again)."""
    served = set(spec.feature_names)
    notes = {}
    for name, definition in spec.on_demand.items():
        unserved = []
        for projection in definition.view.source_feature_view_projections.values():
            source = projection.name_to_use()
            missing = [f.name for f in projection.features
                       if f"{source}__{f.name}" not in served]
            if missing:
                unserved.append(f"{source}: {', '.join(missing)}")
        if unserved:
            notes[name] = (
                f"on-demand view {name} also reads {'; '.join(unserved)}, which feature "
                f"service {spec.feature_service} does not serve: the predictor reads them with "
                "the vector (the same round trip) and runs the view on them; selecting in the "
                "view's sources only what its function uses saves that read")
    return notes


# The served-feature log ------------------------------------------------------------------

def logging_destination_problem(feature_service: str) -> Problem:
    """The feature service names no file to log served features to."""
    return Problem(
        f"feature service {feature_service} has no file logging destination",
        "add LoggingConfig(destination=FileLoggingDestination(path=...)) to it or set "
        "SKEWLESS_FEATURE_LOG_DIR")
