"""Feast on the repo: its own CLI, exactly as a Feast user runs it, and its SDK store."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skewless.errors import SkewlessError
from skewless.settings import Settings, export_for_feast, feast_process_env

logger = logging.getLogger(__name__)


def quiet_library_warnings() -> None:
    """Silence the warnings Feast, ibis, dask and Spark raise about their own internals.

    Users can do nothing about them. Feast puts ``simplefilter("once", ...)`` in front of
    every filter when it is imported, so this runs again after the import.
    """
    for category in (DeprecationWarning, FutureWarning, RuntimeWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(feast|ibis|dask|pyspark)(\.|$)")


def open_store(settings: Settings) -> Any:  # feast.FeatureStore; imported here (slow import)
    """Feast's store on the repo, whose relative file sources mean the repo's files."""
    from feast import FeatureStore

    quiet_library_warnings()
    export_for_feast(settings=settings)
    with engine_installed(settings.feature_store_yaml.name):
        store = FeatureStore(repo_path=str(settings.repo_path),
                             fs_yaml_file=settings.feature_store_yaml.absolute())
    _read_relative_paths_in_repo(store)
    return store


def in_repo(repo_path: Path | str, path: str) -> str:
    """A source path from the registry as a file Skewless can open: relative means in the repo.

    The rule of Feast's own ``FileSource.get_uri_for_file_path``; remote URIs are kept.
    """
    from feast.infra.offline_stores.file_source import FileSource

    return FileSource.get_uri_for_file_path(repo_path, path)


def source_file(source: Any, repo_path: Path | str) -> str | None:
    """Where a source's parquet file is, as :func:`in_repo` gives it: a ``FileSource``'s, or
    a ``SparkSource`` over a parquet path (the cluster profile renders the same files so);
    None for any other source (a table, a query, another format)."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.infra.offline_stores.file_source import FileSource

    if isinstance(source, FileSource):
        return in_repo(repo_path, source.path)
    if (isinstance(source, SparkSource) and source.path
            and (source.file_format or "").lower() == "parquet"):
        return in_repo(repo_path, source.path)
    return None


# Offline-store methods that read or write a source's files, and the argument that holds it.
_FILE_ARGUMENTS = {
    "get_historical_features": "feature_views",
    "pull_latest_from_table_or_query": "data_source",
    "pull_all_from_table_or_query": "data_source",
    "write_logged_features": "logging_config",
    "offline_write_batch": "feature_view",
}


def _read_relative_paths_in_repo(store: Any) -> None:
    """Hand Feast's offline store sources whose relative paths point into the repo.

    Feast's duckdb (ibis) store opens ``FileSource.path`` and a logging destination's path
    as they are, against the process's working directory; ``feast`` itself runs in the repo,
    but Skewless must work wherever it is started, without changing directory. The store
    gets copies of the registry's objects with those paths made absolute; the registry and
    its objects stay as written.
    """
    provider = store._get_provider()
    offline = getattr(provider, "offline_store", None)
    if offline is None or not hasattr(provider, "_offline_store"):
        logger.warning("Feast's provider %s does not expose its offline store: relative file "
                       "sources are read against the working directory",
                       type(provider).__name__)
        return
    repo = Path(store.repo_path).absolute()
    base = type(offline)
    methods: dict[str, Any] = {}
    for name, argument in _FILE_ARGUMENTS.items():
        # Feast's offline stores declare these as static methods (the provider calls
        # ``offline_write_batch`` on the class); others are left as they are.
        if isinstance(inspect.getattr_static(base, name, None), staticmethod):
            methods[name] = staticmethod(_resolving(getattr(base, name), argument, repo))
    provider._offline_store = type(f"InRepo{base.__name__}", (base,), methods)()


def _resolving(method: Callable[..., Any], argument: str, repo: Path) -> Callable[..., Any]:
    signature = inspect.signature(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        value = bound.arguments.get(argument)
        if value is not None:
            bound.arguments[argument] = (
                [_view_in_repo(v, repo) for v in value] if argument == "feature_views"
                else _logging_in_repo(value, repo) if argument == "logging_config"
                else _view_in_repo(value, repo) if argument == "feature_view"
                else _source_in_repo(value, repo))
        return method(*bound.args, **bound.kwargs)

    return call


def _with(obj: Any, **changes: Any) -> Any:
    """A shallow copy of ``obj`` with some attributes replaced (Feast's ``__copy__``
    rebuilds a feature view and drops what its subclasses add)."""
    clone = object.__new__(type(obj))
    clone.__dict__.update(obj.__dict__, **changes)
    return clone


def _source_in_repo(source: Any, repo: Path) -> Any:
    from feast.infra.offline_stores.file_source import FileSource

    if not isinstance(source, FileSource):
        return source
    path = in_repo(repo, source.path)
    if path == source.path:
        return source
    return _with(source, file_options=_with(source.file_options, uri=path))


def _view_in_repo(view: Any, repo: Path) -> Any:
    source = getattr(view, "batch_source", None)
    if source is None:
        return view
    resolved = _source_in_repo(source, repo)
    return view if resolved is source else _with(view, batch_source=resolved)


def _logging_in_repo(config: Any, repo: Path) -> Any:
    destination = getattr(config, "destination", None)
    path = getattr(destination, "path", None)
    if not path or in_repo(repo, path) == path:
        return config
    return _with(config, destination=_with(destination, path=in_repo(repo, path)))


class EngineMissing(SkewlessError):
    """The profile's feature_store.yaml names an engine that is not installed."""


@contextmanager
def engine_installed(yaml_name: str) -> Iterator[None]:
    """Loading ``yaml_name``'s config in the block: an engine it names whose package is not
    installed (Feast imports a store's module to read its config) is an :class:`EngineMissing`
    saying how to add it, not an import error."""
    from feast.errors import FeastModuleImportError

    try:
        yield
    except (ModuleNotFoundError, FeastModuleImportError) as exc:
        cause = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
        missing = getattr(cause, "name", None) or str(exc)
        raise EngineMissing(
            f"{yaml_name} names an engine whose package is not installed ({missing}): the "
            f"cluster profile's Spark comes with the spark extra (`make spark`, or `pip "
            f"install 'skewless[spark]'`) and needs Java 17") from exc


class FeastCommandError(SkewlessError):
    """Feast's own CLI exited with an error."""


def run_feast(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``feast -c <repo> -f <the profile's yaml> ARGS`` in the repo; raises with Feast's
    output when it fails.

    Feast reads a relative source path against its working directory, so the child runs in
    the repo (its arguments are Skewless's own, never a path the user typed). The child
    sees ``SKEWLESS_REDIS`` from settings when set, else the process's own (set by
    :func:`skewless.embedded_redis.redis_for` while an embedded server runs).
    """
    feast = Path(sys.executable).with_name("feast")
    repo = settings.repo_path.absolute()
    yaml_file = str(settings.feature_store_yaml.absolute())
    cmd = [str(feast) if feast.exists() else "feast", "-c", str(repo), "-f", yaml_file, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=repo,
                            env={**feast_process_env(settings.redis, settings),
                                 "FEAST_FS_YAML_FILE_PATH": yaml_file})
    if result.returncode != 0:
        raise FeastCommandError(
            f"`feast {' '.join(args)}` failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    return result
