"""Feast's registry read once, as data: definitions without their code.

Feast's registry API turns an on-demand view's proto into an object by running its stored
transformation (the source text, or else the unpickled body). A :class:`RegistrySnapshot`
holds one read of the registry's proto and builds objects from it with Feast's own
``from_proto(..., skip_udf=True)``, so reading definitions runs nothing; a transformation is
read as :class:`~skewless.transformations.TransformationSource` and compiled only by whoever
runs it, after checking it. Everything resolved from one snapshot comes from the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skewless.transformations import TransformationSource

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureStore, FeatureView, OnDemandFeatureView
    from feast.protos.feast.core.OnDemandFeatureView_pb2 import (
        OnDemandFeatureView as OnDemandFeatureViewProto,
    )
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto


@dataclass(frozen=True)
class OnDemandDefinition:
    """An on-demand view: its definition (transformation not loaded) and its code as text."""

    proto: OnDemandFeatureViewProto = field(repr=False)
    view: OnDemandFeatureView  # sources, schema, mode, tags; feature_transformation is None
    source: TransformationSource

    @property
    def name(self) -> str:
        return self.view.name

    def runnable(self) -> OnDemandFeatureView:
        """A fresh copy of the view running the function compiled from its source text.

        Call ``source.check()`` first (``resolve_service`` does, for a feature service's views).
        """
        from feast import OnDemandFeatureView

        view = OnDemandFeatureView.from_proto(self.proto, skip_udf=True)
        view.feature_transformation = self.source.load()
        return view


class RegistrySnapshot:
    """One read of a Feast registry's proto, and the objects it defines for one project.

    It also answers the lookups of Feast's registry that ``FeatureServiceLoggingSource``
    makes, so Feast's logging schema is derived from the same read.
    """

    def __init__(self, proto: RegistryProto, project: str) -> None:
        self.proto = proto
        self.project = project

    @classmethod
    def read(cls, store: FeatureStore) -> RegistrySnapshot:
        """The registry as it is now: read through Feast's registry store, never deserialised
        into objects by Feast (its proto only; a copy, so Feast's cache stays its own)."""
        from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

        store.registry.refresh(store.project)
        return cls(RegistryProto.FromString(store.registry.proto().SerializeToString()),
                   store.project)

    @classmethod
    def from_bytes(cls, data: bytes, project: str) -> RegistrySnapshot:
        from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

        return cls(RegistryProto.FromString(data), project)

    def _mine(self, protos: Any) -> list[Any]:
        return [p for p in protos if p.spec.project == self.project]

    # Listing (the catalog) --------------------------------------------------------------------

    def entities(self) -> list[Entity]:
        from feast import Entity

        return [Entity.from_proto(p) for p in self._mine(self.proto.entities)]

    def feature_views(self) -> list[FeatureView]:
        from feast import FeatureView

        return [FeatureView.from_proto(p, skip_udf=True)
                for p in self._mine(self.proto.feature_views)]

    def on_demand_views(self) -> list[OnDemandDefinition]:
        return [self._on_demand(p) for p in self._mine(self.proto.on_demand_feature_views)]

    def feature_services(self) -> list[FeatureService]:
        from feast import FeatureService

        return [FeatureService.from_proto(p) for p in self._mine(self.proto.feature_services)]

    @property
    def on_demand_names(self) -> set[str]:
        return {p.spec.name for p in self._mine(self.proto.on_demand_feature_views)}

    # Lookups ----------------------------------------------------------------------------------

    def feature_service(self, name: str) -> FeatureService:
        from feast import FeatureService
        from feast.errors import FeatureServiceNotFoundException

        for p in self._mine(self.proto.feature_services):
            if p.spec.name == name:
                return FeatureService.from_proto(p)
        raise FeatureServiceNotFoundException(name, self.project)

    def feature_view(self, name: str) -> FeatureView:
        from feast import FeatureView
        from feast.errors import FeatureViewNotFoundException

        for p in self._mine(self.proto.feature_views):
            if p.spec.name == name:
                return FeatureView.from_proto(p, skip_udf=True)
        raise FeatureViewNotFoundException(name, self.project)

    def on_demand(self, name: str) -> OnDemandDefinition:
        from feast.errors import OnDemandFeatureViewNotFoundException

        for p in self._mine(self.proto.on_demand_feature_views):
            if p.spec.name == name:
                return self._on_demand(p)
        raise OnDemandFeatureViewNotFoundException(name, self.project)

    @staticmethod
    def _on_demand(proto: OnDemandFeatureViewProto) -> OnDemandDefinition:
        from feast import OnDemandFeatureView

        return OnDemandDefinition(proto, OnDemandFeatureView.from_proto(proto, skip_udf=True),
                                  TransformationSource.from_proto(proto))

    # Feast's registry interface, as far as FeatureServiceLoggingSource.get_schema uses it.

    def get_feature_view(self, name: str, project: str, allow_cache: bool = False) -> FeatureView:
        return self.feature_view(name)

    def get_on_demand_feature_view(self, name: str, project: str,
                                   allow_cache: bool = False) -> OnDemandFeatureView:
        return self.on_demand(name).view

    def get_stream_feature_view(self, name: str, project: str, allow_cache: bool = False) -> Any:
        from feast.errors import FeatureViewNotFoundException

        raise FeatureViewNotFoundException(name, project)
