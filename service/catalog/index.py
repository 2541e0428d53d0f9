"""A snapshot of what the Feast registry holds, indexed for the catalog's pages and search.

Built from one read of the registry's proto (``skewless.definitions.RegistrySnapshot``) once
per registry change, never per request; it knows no demo names, so it shows whatever a repo
defines. It runs none of the registry's code: an on-demand view's transformation is shown as
the source text the registry stores, never compiled or unpickled, so an anonymous page view
of a changed registry cannot execute what someone wrote into it.
"""

from __future__ import annotations

import functools
import gc
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from service.catalog.schemas import (
    EntityInfo,
    FeatureInfo,
    JoinKey,
    RequestField,
    ServiceInfo,
    SourceInfo,
    Transformation,
    ViewInfo,
)
from skewless.definitions import RegistrySnapshot
from skewless.privacy import CLASSES, PRIVACY_TAG, privacy_class

# Fields of python-mode on-demand views cannot carry descriptions (Feast compares declared
# and inferred fields including them), so a view tag "feature:<name>" may describe one.
FEATURE_DESCRIPTION_TAG = "feature:"


def feature_url(view: str, name: str) -> str:
    return f"/catalog/features/{quote(view, safe='')}/{quote(name, safe='')}"


def view_url(name: str) -> str:
    return f"/catalog/feature-views/{quote(name, safe='')}"


def entity_url(name: str) -> str:
    return f"/catalog/entities/{quote(name, safe='')}"


def service_url(name: str) -> str:
    return f"/catalog/feature-services/{quote(name, safe='')}"


def model_url(name: str, version: str) -> str:
    return f"/catalog/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"


def experiment_url(experiment_id: int) -> str:
    return f"/catalog/experiments/{experiment_id}"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _source(source: Any) -> SourceInfo:
    return SourceInfo(
        name=source.name, type=type(source).__name__, path=getattr(source, "path", None) or None,
        timestamp_field=source.timestamp_field or None,
        created_timestamp_column=source.created_timestamp_column or None,
        description=source.description or "")


UNCLASSIFIED = "unclassified"  # the privacy filter's value for features without a class


@dataclass
class Snapshot:
    """Everything the registry holds, as catalog entries, plus a search text per feature."""

    project: str
    built_at: datetime
    entities: dict[str, EntityInfo]
    views: dict[str, ViewInfo]
    services: dict[str, ServiceInfo]
    features: dict[str, FeatureInfo]  # by ref
    haystacks: dict[str, str] = field(repr=False)  # ref → lower-cased searchable text
    sources: dict[str, Any] = field(repr=False)  # view → Feast view object

    @classmethod
    def build(cls, registry: RegistrySnapshot) -> Snapshot:
        entities: dict[str, EntityInfo] = {}
        for e in sorted(registry.entities(), key=lambda e: e.name):
            if e.name == "__dummy":
                continue
            entities[e.name] = EntityInfo(
                name=e.name, description=e.description or "", owner=e.owner or "",
                tags=dict(e.tags), url=entity_url(e.name),
                join_keys=[JoinKey(name=e.join_key, dtype=e.value_type.name)],
                privacy=privacy_class(e.tags))
        join_keys = {name: [k.name for k in e.join_keys] for name, e in entities.items()}

        views: dict[str, ViewInfo] = {}
        objects: dict[str, Any] = {}
        for fv in sorted(registry.feature_views(), key=lambda v: v.name):
            names = [e for e in fv.entities if e in entities]
            views[fv.name] = ViewInfo(
                name=fv.name, kind="batch", description=fv.description or "",
                owner=fv.owner or "", tags=dict(fv.tags), entities=names,
                join_keys=[k for e in names for k in join_keys[e]],
                features=[f.name for f in fv.features],
                ttl_seconds=int(fv.ttl.total_seconds()) if fv.ttl else 0, online=bool(fv.online),
                source=_source(fv.batch_source), transformation=None,
                last_materialized=(_utc(fv.materialization_intervals[-1][1])
                                   if fv.materialization_intervals else None),
                url=view_url(fv.name))
            objects[fv.name] = fv
        for definition in sorted(registry.on_demand_views(), key=lambda d: d.name):
            odfv = definition.view  # its transformation is not loaded: only its text is shown
            inputs = [f"{p.name}:{f.name}" for p in odfv.source_feature_view_projections.values()
                      for f in p.features]
            request = [RequestField(source=rs.name, name=f.name, dtype=str(f.dtype),
                                    description=f.description or "",
                                    privacy=privacy_class(f.tags))
                       for rs in odfv.source_request_sources.values() for f in rs.schema]
            upstream = [views[p] for p in odfv.source_feature_view_projections if p in views]
            names = list(dict.fromkeys(e for v in upstream for e in v.entities))
            views[odfv.name] = ViewInfo(
                name=odfv.name, kind="on_demand", description=odfv.description or "",
                owner=odfv.owner or "", tags=dict(odfv.tags), entities=names,
                join_keys=[k for e in names for k in join_keys[e]],
                features=[f.name for f in odfv.features], ttl_seconds=None, online=True,
                source=None, last_materialized=None, url=view_url(odfv.name),
                transformation=Transformation(
                    mode=str(getattr(odfv, "mode", "") or ""),
                    code=definition.source.text, inputs=inputs,
                    request_fields=request))
            objects[odfv.name] = odfv

        services: dict[str, ServiceInfo] = {}
        in_services: dict[str, list[str]] = {}
        for fs in sorted(registry.feature_services(), key=lambda s: s.name):
            refs = [f"{p.name}:{f.name}" for p in fs.feature_view_projections for f in p.features]
            for ref in refs:
                in_services.setdefault(ref, []).append(fs.name)
            destination = getattr(getattr(fs, "logging_config", None), "destination", None)
            services[fs.name] = ServiceInfo(
                name=fs.name, description=fs.description or "", owner=fs.owner or "",
                tags=dict(fs.tags), features=refs,
                views=list(dict.fromkeys(p.name for p in fs.feature_view_projections)),
                logging_path=getattr(destination, "path", None) or None, url=service_url(fs.name))

        features: dict[str, FeatureInfo] = {}
        haystacks: dict[str, str] = {}
        for view in views.values():
            fields = {f.name: f for f in objects[view.name].features}
            for name in view.features:
                f = fields[name]
                ref = f"{view.name}:{name}"
                description = (f.description or view.tags.get(FEATURE_DESCRIPTION_TAG + name)
                               or "")
                info = FeatureInfo(
                    ref=ref, view=view.name, name=name, kind=view.kind, dtype=str(f.dtype),
                    description=description, owner=view.owner, tags=dict(f.tags),
                    view_tags=view.tags, entities=view.entities, join_keys=view.join_keys,
                    feature_services=in_services.get(ref, []), url=feature_url(view.name, name),
                    privacy=privacy_class(f.tags, view.tags, name))
                features[ref] = info
                haystacks[ref] = " ".join([
                    ref, description, view.description, view.owner,
                    *(f"{k} {v} {k}={v}" for k, v in {**view.tags, **info.tags}.items()),
                    *view.entities, *info.feature_services,
                ]).lower()
        return cls(project=registry.project, built_at=datetime.now(UTC), entities=entities,
                   views=views, services=services, features=features, haystacks=haystacks,
                   sources=objects)

    def all_tags(self, feature: FeatureInfo) -> dict[str, str]:
        return {**feature.view_tags, **feature.tags}

    def search(self, query: str = "", tag: str | None = None, owner: str | None = None,
               entity: str | None = None, privacy: str | None = None) -> list[FeatureInfo]:
        """Features matching every word of ``query`` (names, descriptions, tags, owners)
        and every filter. ``tag`` is ``key`` or ``key=value``; ``privacy`` a class or
        ``unclassified``."""
        words = query.lower().split()
        tag_key, _, tag_value = (tag or "").partition("=")
        hits = []
        for ref, feature in self.features.items():
            if words and not all(w in self.haystacks[ref] for w in words):
                continue
            if owner and feature.owner.lower() != owner.lower():
                continue
            if entity and entity not in feature.entities:
                continue
            if privacy and (feature.privacy or UNCLASSIFIED) != privacy:
                continue
            if tag_key:
                tags = self.all_tags(feature)
                if tag_key not in tags or ("=" in (tag or "") and tags[tag_key] != tag_value):
                    continue
            hits.append(feature)
        return hits

    @functools.cached_property
    def facets(self) -> tuple[list[str], list[str], list[str], list[str]]:
        """Every tag (key=value), owner, entity and privacy class: the index's filters."""
        tags = sorted({f"{k}={v}" for f in self.features.values()
                       for k, v in self.all_tags(f).items() if not k.startswith(
                           (FEATURE_DESCRIPTION_TAG, "monotone:", f"{PRIVACY_TAG}:"))})
        owners = sorted({f.owner for f in self.features.values() if f.owner})
        present = {f.privacy or UNCLASSIFIED for f in self.features.values()}
        privacy = [c for c in (*CLASSES, UNCLASSIFIED) if c in present]
        return tags, owners, sorted(self.entities), privacy


class RegistryWatcher:
    """The current :class:`Snapshot`, rebuilt when the Feast registry changes.

    A file registry is re-read when its modification time changes (checked at most every
    ``check_seconds``); any other registry (SQL, remote) every ``refresh_seconds``.
    """

    def __init__(self, store: Any, check_seconds: float = 1.0, refresh_seconds: float = 60.0):
        self.store = store
        self.check_seconds = check_seconds
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._checked = 0.0
        self._built = time.monotonic()
        self._stamp = self._file_stamp()
        self._snapshot = Snapshot.build(RegistrySnapshot.read(store))

    def _registry_file(self) -> Path | None:
        config = self.store.config.registry
        if getattr(config, "registry_type", "file") != "file":
            return None
        path = Path(config.path)
        if "://" in config.path:
            return None
        return path if path.is_absolute() else Path(self.store.repo_path) / path

    def _file_stamp(self) -> tuple[int, int] | None:
        path = self._registry_file()
        try:
            stat = path.stat() if path else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat else None

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        if now - self._checked < self.check_seconds:
            return self._snapshot
        with self._lock:
            if now - self._checked < self.check_seconds:
                return self._snapshot
            self._checked = now
            stamp = self._file_stamp()
            changed = (stamp != self._stamp if stamp is not None
                       else now - self._built > self.refresh_seconds)
            if changed:
                self._snapshot = Snapshot.build(RegistrySnapshot.read(self.store))
                self._stamp, self._built = stamp, now
                # Long-lived until the next change: keep full collections from rescanning it.
                gc.freeze()
        return self._snapshot
