"""Feast's registry read once, as data: definitions without their code.

Feast's registry API turns an on-demand view's proto into an object by running its stored
transformation (the source text, or else the unpickled body). A :class:`RegistrySnapshot`
holds one read of the registry's proto and builds objects from it with Feast's own
``from_proto(..., skip_udf=True)``, so reading definitions runs nothing; a transformation is
read as :class:`~skewless.transformations.TransformationSource` and compiled only by whoever
runs it, after checking it. Everything resolved from one snapshot comes from the same bytes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skewless.errors import SkewlessError
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


# The repo's definitions before `feast apply` ---------------------------------------------------

class DefinitionsError(SkewlessError):
    """The repo's Python files could not be read as Feast definitions."""


def parse_repo_definitions(repo_path: Path, env: dict[str, str], timeout: float = 600.0,
                           yaml_name: str = "feature_store.yaml") -> RegistrySnapshot:
    """The repo's definitions as `feast apply` would register them, without applying them.

    Feast's own ``parse_repo`` imports the repo's Python files, as `feast plan` and `feast
    apply` do, and Feast's inference completes them (entity columns, the features of whole
    views). Both run in a child process, so the repo's code and its side effects stay there,
    against a throwaway registry, so nothing is written in the repo. ``yaml_name``: the
    profile's feature_store.yaml variant in the repo.
    """
    from feast.repo_config import load_repo_config

    from skewless.feast_cli import engine_installed

    repo = repo_path.absolute()
    with engine_installed(yaml_name):
        project = load_repo_config(repo, repo / yaml_name).project
    with tempfile.TemporaryDirectory(prefix="skewless-definitions-") as tmp:
        out = Path(tmp) / "registry.pb"
        result = subprocess.run(
            [sys.executable, "-c",
             "from skewless.definitions import _parse_repo_child; _parse_repo_child()",
             str(out), project, yaml_name],
            cwd=repo, env={**env, "PYTHONDONTWRITEBYTECODE": "1",
                           "FEAST_FS_YAML_FILE_PATH": str(repo / yaml_name)},
            capture_output=True,
            text=True, timeout=timeout)
        if result.returncode != 0 or not out.is_file():
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            raise DefinitionsError(
                f"the repo's definitions could not be read: {lines[-1] if lines else 'no output'}"
                f" (exit {result.returncode}; `feast plan` in {repo} shows the whole error)")
        return RegistrySnapshot.from_bytes(out.read_bytes(), project)


def _parse_repo_child() -> None:  # pragma: no cover - runs in the child process
    """In the repo's directory: parse it as `feast plan` does, write the registry proto."""
    import os
    import warnings

    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import parse_repo

    warnings.simplefilter("ignore")
    out, project, yaml_name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    repo = Path(os.getcwd())
    sys.path.insert(0, str(repo))  # as Feast's CLI does, so the repo's modules import
    config = load_repo_config(repo, repo / yaml_name)
    # A local file registry of its own, whatever the repo's registry is (a file, SQL, remote).
    config.registry_config = str(out.with_name("throwaway-registry.db"))
    config._registry = None
    store = FeatureStore(repo_path=str(repo), config=config)
    contents = parse_repo(repo)
    # The steps `feast plan` takes before it compares with the registry (Feast's own).
    store._validate_all_feature_views(contents.feature_views, contents.on_demand_feature_views,
                                      contents.stream_feature_views, contents.label_views)
    store._make_inferences(contents.data_sources, contents.entities, contents.feature_views,
                           contents.on_demand_feature_views, contents.stream_feature_views,
                           contents.feature_services, contents.label_views)
    proto = contents.to_registry_proto()
    for objects in (proto.entities, proto.feature_views, proto.on_demand_feature_views,
                    proto.feature_services, proto.stream_feature_views, proto.label_views):
        for obj in objects:
            obj.spec.project = project  # what `feast apply` records
    for source in proto.data_sources:
        source.project = project
    out.write_bytes(proto.SerializeToString())
