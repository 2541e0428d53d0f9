"""`skewless doctor`: a Feast repo and the settings, checked before the pipeline meets them.

Each item says what works and what to change: the settings' paths, the online and offline
stores, the definitions, the feature service's sources, on-demand views, feature types and
TTLs, the served-feature log, and the label source. A need some command relies on is a
check of :mod:`skewless.requirements`, so the doctor prints the words that command raises.

The definitions come from Feast's registry once `feast apply` has written it: what serving
and training will read. Before that, they are read as `feast plan` reads them, by importing
the repo's Python files (in a child process, see
:func:`skewless.definitions.parse_repo_definitions`): the next step, `feast apply`, runs
that same code, and the repo is its owner's, whom the doctor serves.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skewless.contract import ServiceSpec, resolve_definitions
from skewless.reports.doctor import DoctorReport, Finding
from skewless.requirements import (
    MODEL_TYPES,
    feature_type_problem,
    logging_destination_problem,
    mode_note,
    offline_store_problem,
    online_store_problem,
    scalar_services,
    unserved_on_demand_inputs,
)
from skewless.served_log import LOG_DATE
from skewless.settings import Settings, feast_process_env

if TYPE_CHECKING:
    from skewless.definitions import RegistrySnapshot

# Settings that hold paths; a relative one is read against the directory a command starts in.
PATH_SETTINGS = ("repo_path", "var_dir", "events_path", "labels_path", "truth_path",
                 "model_path", "feature_log_dir", "feature_log_spool_dir", "redis_server_bin")


def diagnose(settings: Settings, now: datetime | None = None) -> DoctorReport:
    """Check the repo and the settings; ``now`` is when labels must be known by."""
    from feast.repo_config import load_repo_config

    from skewless.feast_cli import quiet_library_warnings

    quiet_library_warnings()
    now = now or datetime.now(UTC)
    repo = settings.repo_path.absolute()
    report = DoctorReport(repo=str(repo), feature_service=settings.feature_service,
                          findings=[settings_finding(settings)])
    findings = report.findings
    yaml_path = settings.feature_store_yaml.absolute()
    if not yaml_path.is_file():
        findings.append(Finding(
            item="repo", status="blocks", found=f"{yaml_path} does not exist",
            change=missing_yaml_change(settings)))
        return report
    from skewless.feast_cli import engine_installed

    try:
        with _feast_environment(settings), engine_installed(yaml_path.name):
            config = load_repo_config(repo, yaml_path)
    except Exception as exc:  # Feast's own validation: its message names the field
        findings.append(Finding(item="feature_store.yaml", status="blocks",
                                found=_first_lines(str(exc)),
                                change=f"fix {yaml_path} until `feast plan` accepts it"))
        return report
    findings += store_findings(settings, config, _raw_yaml(yaml_path))
    registry, found = read_definitions(settings, config)
    findings.append(found)
    spec = None
    if registry is not None:
        findings.append(privacy_finding(registry))
        findings.append(freshness_finding(registry))
        spec, more = service_findings(settings, registry)
        findings += more
    findings += label_source_findings(settings, spec, registry, now)
    return report


@contextlib.contextmanager
def _feast_environment(settings: Settings) -> Any:
    """Feast expands ``${SKEWLESS_REDIS}`` itself: let it see the configured address."""
    from skewless.settings import export_for_feast, redis_for_feast

    export_for_feast(settings=settings)
    if settings.redis:
        with redis_for_feast(settings.redis):
            yield
    else:
        yield


def _first_lines(text: str, n: int = 6) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines()[:n])


def _raw_yaml(path: Path) -> dict[str, Any]:
    """feature_store.yaml as written, before Feast expands its ``${VARIABLES}``."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


# The settings ----------------------------------------------------------------------------

def settings_finding(settings: Settings) -> Finding:
    relative = [f"SKEWLESS_{name.upper()}={value}" for name in PATH_SETTINGS
                if (value := getattr(settings, name)) is not None
                and not Path(value).is_absolute()]
    if relative:
        return Finding(
            item="settings", status="warn",
            found=f"{', '.join(relative)}: relative, so each command reads it against the "
                  f"directory it starts in (here {Path.cwd()})",
            change="give absolute paths, so every command finds the same files wherever it "
                   "runs")
    return Finding(item="settings", status="ok",
                   found=f"repo {settings.repo_path}, feature service "
                         f"{settings.feature_service}; every path setting is absolute")


# The stores ------------------------------------------------------------------------------

def store_findings(settings: Settings, config: Any, raw: dict[str, Any]) -> list[Finding]:
    findings = []
    problem = online_store_problem(config)
    if problem:
        findings.append(Finding.of("online store", problem))
    else:
        findings.append(Finding(item="online store", status="ok",
                                found="Redis (`type: redis`): the predictor reads it directly, "
                                      "one round trip per request"))
        findings.append(connection_finding(settings, config, raw))
    offline = offline_store_problem(config)
    kind = getattr(config.offline_store, "type", "")
    if offline:
        findings.append(Finding.of("offline store", offline))
    elif kind == "duckdb":
        findings.append(Finding(
            item="offline store", status="ok",
            found="duckdb: keeps every label event (also one before its entity's first "
                  "feature row or past the TTL) and breaks timestamp ties on the created "
                  "timestamp"))
    else:
        findings.append(Finding(
            item="offline store", status="warn",
            found=f"the offline store is {kind!r}: Skewless has not checked its point-in-time "
                  "join (duckdb is the one it is tested on); a training set that loses a label "
                  "event is refused",
            change="use `offline_store: {type: duckdb}` while the data fits one machine"))
    return findings


def connection_finding(settings: Settings, config: Any, raw: dict[str, Any]) -> Finding:
    """`feast materialize` writes where feature_store.yaml points; the predictor reads
    SKEWLESS_REDIS (or the embedded server): both must be the same server."""
    from skewless.embedded_redis import running_detached

    expanded = str(config.online_store.connection_string)
    written = str((raw.get("online_store") or {}).get("connection_string")
                  or f"unset (Feast's default, {expanded})")
    item = "online store address"
    if "SKEWLESS_REDIS" in written:
        if settings.redis:
            error = _ping(settings.redis)
            if error:
                return Finding(
                    item=item, status="warn",
                    found=f"SKEWLESS_REDIS={settings.redis} (feature_store.yaml's "
                          f"connection_string) does not answer: {error}",
                    change="start that Redis, or unset SKEWLESS_REDIS to let each command "
                           "start an embedded redis-server")
            return Finding(item=item, status="ok",
                           found=f"connection_string is {written}, set to {settings.redis}: "
                                 "`feast materialize` writes where the predictor reads")
        detached = running_detached(settings)
        return Finding(
            item=item, status="ok",
            found=f"connection_string is {written} and SKEWLESS_REDIS is unset: "
                  + (f"commands use the embedded redis-server running at {detached}"
                     if detached else "each command starts an embedded redis-server (its "
                     f"data in {settings.var_dir / 'redis'}) and hands its address to Feast"))
    if settings.redis and expanded == settings.redis:
        return Finding(
            item=item, status="warn",
            found=f"connection_string is {written!r} and SKEWLESS_REDIS the same: one server, "
                  "but its address is kept in two places",
            change="write `connection_string: ${SKEWLESS_REDIS}` in feature_store.yaml")
    return Finding(
        item=item, status="blocks",
        found=f"connection_string is {written!r}: `feast materialize` writes there, while the "
              f"predictor reads SKEWLESS_REDIS ("
              + (settings.redis if settings.redis else "unset: an embedded redis-server") + ")",
        change="write `connection_string: ${SKEWLESS_REDIS}` in feature_store.yaml (or run "
               f"`skewless init {settings.repo_path}`) and set SKEWLESS_REDIS to the server")


def _ping(address: str) -> str | None:
    """None when the Redis at Feast's connection string answers a PING within a second."""
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        nodes, params = RedisOnlineStore._parse_connection_string(address)
        client = redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params,
                             socket_timeout=1, socket_connect_timeout=1,
                             retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure is the answer: what it said
        return str(exc) or type(exc).__name__
    return None


# The definitions -------------------------------------------------------------------------

def missing_yaml_change(settings: Settings) -> str:
    if settings.profile != "local":
        return (f"SKEWLESS_PROFILE={settings.profile} reads {settings.feature_store_yaml.name}: "
                "write that variant of the repo's feature_store.yaml, or use the local profile")
    return ("set SKEWLESS_REPO_PATH to a Feast repo (the directory of its feature_store.yaml, "
            "e.g. what `feast init` made)")


def definitions(settings: Settings) -> RegistrySnapshot:
    """The project's definitions: the registry when applied, else the repo's files (raises
    :class:`~skewless.definitions.DefinitionsError` when neither can be read)."""
    from feast.repo_config import load_repo_config

    from skewless.definitions import DefinitionsError

    repo = settings.repo_path.absolute()
    yaml_path = settings.feature_store_yaml.absolute()
    if not yaml_path.is_file():
        raise DefinitionsError(f"{yaml_path} does not exist: {missing_yaml_change(settings)}")
    from skewless.feast_cli import engine_installed

    try:
        with _feast_environment(settings), engine_installed(yaml_path.name):
            config = load_repo_config(repo, yaml_path)
    except Exception as exc:  # Feast's own validation: its message names the field
        raise DefinitionsError(f"{yaml_path}: {_first_lines(str(exc))}") from exc
    snapshot, finding = read_definitions(settings, config)
    if snapshot is None:
        raise DefinitionsError(f"{finding.found}; {finding.change}")
    return snapshot


def read_definitions(settings: Settings, config: Any) -> tuple[RegistrySnapshot | None, Finding]:
    """The registry when `feast apply` wrote one for the project, else the repo's files.

    A local registry file is only opened when it exists: Feast's SDK creates an empty one.
    """
    from skewless.definitions import DefinitionsError, RegistrySnapshot, parse_repo_definitions
    from skewless.feast_cli import open_store

    repo = settings.repo_path.absolute()
    registry_config = config.registry
    location = str(registry_config.path)
    local = getattr(registry_config, "registry_type", "file") == "file" and "://" not in location
    path = Path(location) if Path(location).is_absolute() else repo / location
    if local and not path.is_file():
        note = f"no registry at {path} yet"
    else:
        try:
            with _feast_environment(settings):
                snapshot = RegistrySnapshot.read(open_store(settings))
        except Exception as exc:  # the registry's own error says what is wrong
            note = f"the registry at {location} could not be read ({_first_lines(str(exc), 2)})"
        else:
            if snapshot.feature_services() or snapshot.feature_views():
                return snapshot, Finding(
                    item="registry", status="ok",
                    found=f"{path if local else location}: applied ("
                          f"{len(snapshot.feature_views())} feature views, "
                          f"{len(snapshot.on_demand_views())} on-demand views, "
                          f"{len(snapshot.feature_services())} feature services); the checks "
                          "below read it, as serving and training will")
            note = f"the registry at {location} holds nothing for project {snapshot.project}"
    try:
        snapshot = parse_repo_definitions(repo, feast_process_env(settings.redis, settings),
                                          yaml_name=settings.feature_store_yaml.name)
    except DefinitionsError as exc:
        return None, Finding(item="definitions", status="blocks", found=str(exc),
                             change="fix the repo's Python files until `feast plan` runs")
    return snapshot, Finding(
        item="registry", status="warn",
        found=f"{note}: the definitions below were read from the repo's Python files, imported "
              "as `feast plan` imports them",
        change="run `skewless apply` (or `feast apply`): serving and training read the registry")


def privacy_finding(registry: RegistrySnapshot) -> Finding:
    """Every entity key, feature and request field with a privacy class (a warning, never a
    block: the class documents the data, nothing reads it to serve)."""
    from skewless.privacy import CLASSES, PRIVACY_TAG, unclassified

    missing = unclassified(registry.entities(), registry.feature_views(),
                           [d.view for d in registry.on_demand_views()])
    if not missing:
        return Finding(item="privacy classes", status="ok",
                       found="every entity key, feature and request field has one")
    shown = "; ".join(m.describe() for m in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return Finding(
        item="privacy classes", status="warn",
        found=f"{len(missing)} without a class: {shown}{more}",
        change=f"tag each with {PRIVACY_TAG}={'|'.join(CLASSES)} (a field's tags, an entity's "
               f"tags, or its view's tags `{PRIVACY_TAG}` / `{PRIVACY_TAG}:<feature>`); the "
               "catalog shows and filters by it")


def freshness_finding(registry: RegistrySnapshot) -> Finding:
    """Each batch view's freshness objective parses (the predictor refuses to start on one
    that does not)."""
    from skewless.freshness import FRESHNESS_TAG, FreshnessError, objectives

    views = registry.feature_views()
    try:
        declared = objectives(views)
    except FreshnessError as exc:
        return Finding(item="freshness objectives", status="blocks", found=str(exc),
                       change=f"set {FRESHNESS_TAG} to a duration such as 30h, or none")
    if not declared:
        return Finding(item="freshness objectives", status="ok",
                       found="none declared: no alert on the served values' age")
    return Finding(item="freshness objectives", status="ok", found="; ".join(
        f"{view} {seconds / 3600:g} h" for view, seconds in sorted(declared.items())))


# The feature service ---------------------------------------------------------------------

def service_findings(settings: Settings,
                     registry: RegistrySnapshot) -> tuple[ServiceSpec | None, list[Finding]]:
    """The feature service: its on-demand views, feature types, TTLs, sources and log."""
    from skewless.transformations import TransformationError

    name = settings.feature_service
    names = sorted(s.name for s in registry.feature_services())
    if name not in names:
        scalar = scalar_services(registry)
        return None, [Finding(
            item="feature service", status="blocks",
            found=f"{name} (SKEWLESS_FEATURE_SERVICE) is not defined in the repo; it defines "
                  f"{', '.join(names) or 'none'}",
            change="set SKEWLESS_FEATURE_SERVICE to the model's feature service"
                   + (f" (with scalar features only: {', '.join(scalar)})" if scalar else ""))]
    findings = []
    odfv_names = registry.on_demand_names
    for projection in registry.feature_service(name).feature_view_projections:
        if projection.name not in odfv_names:
            continue
        definition = registry.on_demand(projection.name)
        item = f"on-demand view {projection.name_to_use()}"
        try:
            definition.source.check()
        except TransformationError as exc:
            findings.append(Finding(
                item=item, status="blocks", found=str(exc),
                change="Skewless serves and trains on on-demand views written as a Python "
                       "function, mode=\"python\" (the fast path) or mode=\"pandas\", applied "
                       "with this environment's Python"))
        else:
            findings.append(Finding(item=item, status="ok", found=mode_note(definition.view.mode)))
    try:
        spec = resolve_definitions(registry, name)
    except TransformationError:
        return None, findings  # named above
    findings += [Finding(item=f"on-demand view {view} inputs", status="ok", found=note)
                 for view, note in unserved_on_demand_inputs(spec).items()]
    problem = feature_type_problem(spec)
    findings.append(Finding.of("feature types", problem) if problem else Finding(
        item="feature types", status="ok",
        found=f"{len(spec.features)} features, of types a model takes "
              f"({', '.join(t for t in MODEL_TYPES if t in {f.dtype for f in spec.features})})"))
    findings += ttl_findings(spec)
    sources, source_findings = file_source_findings(settings, registry, spec)
    findings += source_findings
    findings.append(logging_finding(settings, registry, spec, sources))
    return spec, findings


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} s"


def ttl_findings(spec: ServiceSpec) -> list[Finding]:
    """What each batch view's TTL means for training, serving and a first materialization."""
    findings = []
    for view, definition in spec.definitions["views"].items():
        if definition["kind"] != "batch":
            continue
        ttl = int(definition.get("ttl_seconds") or 0)
        item = f"ttl of {view}"
        if ttl:
            findings.append(Finding(
                item=item, status="ok",
                found=f"ttl {_duration(ttl)}: a value older than that is missing (null in a "
                      "training row, OUTSIDE_MAX_AGE when served); `feast materialize-"
                      "incremental` on a fresh repo starts at now − ttl, so nothing it leaves "
                      "out would be served"))
            continue
        findings.append(Finding(
            item=item, status="warn",
            found="ttl=0: values never expire, so a training row takes the latest value before "
                  "its event however old, and the predictor serves whatever Redis holds however "
                  "old; and `feast materialize-incremental` (`skewless materialize`) on a fresh "
                  "repo looks back only one year (52 weeks) for a view without a ttl: older "
                  "values are never materialized",
            change="set a ttl as long as a value stays true, or run `feast materialize START "
                   "END` once over the whole history before the first `skewless materialize`"))
    return findings


def file_source_findings(settings: Settings, registry: RegistrySnapshot,
                         spec: ServiceSpec) -> tuple[dict[str, Path], list[Finding]]:
    """The files behind the service's feature views (on-demand views' sources included):
    present, and where a relative path is read. Returns each local file by source name."""
    from skewless.feast_cli import source_file

    repo = settings.repo_path.absolute()
    views = [v for v, d in spec.definitions["views"].items() if d["kind"] == "batch"]
    for definition in spec.on_demand.values():
        views += [p.name for p in definition.view.source_feature_view_projections.values()]
    batch_views = {view.name: view for view in registry.feature_views()}
    files: dict[str, Path] = {}
    findings = []
    for view_name in dict.fromkeys(v for v in views if v in batch_views):
        source: Any = batch_views[view_name].batch_source
        if source is None or source.name in files:
            continue
        item = f"source {source.name}"
        location = source_file(source, repo)
        if location is None:
            findings.append(Finding(item=item, status="ok",
                                    found=f"{type(source).__name__}: read by the offline store, "
                                          "not checked here"))
            continue
        if "://" in location and not location.startswith("file://"):
            findings.append(Finding(item=item, status="ok",
                                    found=f"{location}: remote, not checked here"))
            continue
        path = Path(location.removeprefix("file://"))
        relative = not Path(source.path).is_absolute()
        where = (f"{source.path} (relative: the repo's {path}; Skewless and `feast` in the "
                 "repo read it there, Feast's SDK opened elsewhere reads it against its own "
                 "working directory)" if relative else str(path))
        if not path.exists():
            findings.append(Finding(
                item=item, status="blocks", found=f"{where} does not exist",
                change=f"write the feature table there or point {source.name}'s path at it"))
            continue
        files[source.name] = path
        findings.append(Finding(item=item, status="ok", found=where))
    return files, findings


def logging_finding(settings: Settings, registry: RegistrySnapshot, spec: ServiceSpec,
                    sources: dict[str, Path]) -> Finding:
    """Where the predictor logs served features, and whether that place is the log's own."""
    from skewless.feast_cli import in_repo

    item = "served-feature log"
    if settings.feature_log_dir is not None:
        destination = settings.feature_log_dir.absolute()
        found = f"SKEWLESS_FEATURE_LOG_DIR: served features are logged under {destination}"
    else:
        config = registry.feature_service(spec.feature_service).logging_config
        path = getattr(getattr(config, "destination", None), "path", None)
        if not path:
            return Finding.of(item, logging_destination_problem(spec.feature_service))
        destination = Path(in_repo(settings.repo_path.absolute(), path))
        found = (f"served features are logged under {destination} (the feature service's "
                 f"FileLoggingDestination {path!r})")
    others = [p for p in [*sources.values(), settings.resolved_events_path,
                          settings.resolved_labels_path]
              if p.absolute().is_relative_to(destination.absolute())]
    if others:  # harmless: the log's readers read only its own partitions
        found += (f"; it also holds {', '.join(str(p.relative_to(destination)) for p in others)}"
                  f", which the log's readers leave alone (they read only its {LOG_DATE}= "
                  "partitions)")
    return Finding(item=item, status="ok", found=found)


# The label source ------------------------------------------------------------------------

_INTEGER = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT"}


def _family(sql_type: str) -> str:
    if sql_type in _INTEGER:
        return "integer"
    if sql_type in ("FLOAT", "DOUBLE") or sql_type.startswith("DECIMAL"):
        return "float"
    if sql_type.startswith("TIMESTAMP") or sql_type == "DATE":
        return "timestamp"
    return {"VARCHAR": "string", "BOOLEAN": "bool"}.get(sql_type, sql_type)


# The column families that can hold each Feast type a model takes.
_FITS = {"Int32": {"integer"}, "Int64": {"integer"}, "Float32": {"integer", "float"},
         "Float64": {"integer", "float"}, "String": {"string"}, "Bool": {"bool"}}


def _ident(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _parquet(path: Path) -> str:
    return str(path / "**" / "*.parquet") if path.is_dir() else str(path)


def label_source_findings(settings: Settings, spec: ServiceSpec | None,
                          registry: RegistrySnapshot | None, now: datetime) -> list[Finding]:
    """The events and labels a training set is built from: present, with the columns the
    feature service needs, joinable, and how many label events would be kept now."""
    import duckdb

    events, labels = settings.resolved_events_path, settings.resolved_labels_path
    missing = [f"{path} (SKEWLESS_{name.upper()}"
               + (")" if getattr(settings, name) else ", the demo's default when unset)")
               for path, name in ((events, "events_path"), (labels, "labels_path"))
               if not path.exists()]
    if missing:
        return [Finding(
            item="label source", status="blocks",
            found=f"{' and '.join(missing)} "
                  + ("does not exist" if len(missing) == 1 else "do not exist")
                  + _label_views_note(registry),
            change="set SKEWLESS_EVENTS_PATH and SKEWLESS_LABELS_PATH to parquet files of the "
                   "model's events and their labels (SKEWLESS_EVENT_ID_COLUMN, "
                   "SKEWLESS_EVENT_TIMESTAMP_COLUMN, SKEWLESS_LABEL_COLUMN and "
                   "SKEWLESS_LABEL_TIMESTAMP_COLUMN name their columns)")]
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        problems, described = _column_problems(con, settings, spec, events, labels)
        if problems:
            return [Finding(
                item="label source", status="blocks", found="; ".join(problems),
                change="name the columns with SKEWLESS_EVENT_ID_COLUMN, SKEWLESS_EVENT_"
                       "TIMESTAMP_COLUMN, SKEWLESS_LABEL_COLUMN and SKEWLESS_LABEL_TIMESTAMP_"
                       "COLUMN, or write the files with them")]
        findings = [Finding(item="label source", status="ok",
                            found=f"events {events} ({', '.join(described['events'])}); labels "
                                  f"{labels} ({', '.join(described['labels'])})"
                                  + _label_views_note(registry))]
        findings += _label_counts(con, settings, events, labels, now)
        if spec is not None and registry is not None:
            findings += _entity_coverage(con, settings, spec, registry, events)
    except duckdb.Error as exc:
        return [Finding(item="label source", status="blocks",
                        found=f"the events or labels cannot be read: {_first_lines(str(exc), 2)}",
                        change="write them as parquet files")]
    finally:
        con.close()
    return findings


def _label_views_note(registry: RegistrySnapshot | None) -> str:
    if registry is None:
        return ""
    names = [p.spec.name for p in registry.proto.label_views
             if p.spec.project == registry.project]
    if not names:
        return ""
    return (f" (the repo's label view {', '.join(names)} is not read: Skewless takes labels "
            "from SKEWLESS_LABELS_PATH)")


def _describe(con: Any, path: Path) -> dict[str, str]:
    rows = con.sql("DESCRIBE SELECT * FROM read_parquet(?)", params=[_parquet(path)]).fetchall()
    return {row[0]: row[1] for row in rows}


def _column_problems(con: Any, settings: Settings, spec: ServiceSpec | None, events: Path,
                     labels: Path) -> tuple[list[str], dict[str, list[str]]]:
    """What is missing or of the wrong type, and each file's columns in use."""
    event_types, label_types = _describe(con, events), _describe(con, labels)
    service = spec.feature_service if spec else ""
    needs = [("events", event_types, settings.event_id_column, "SKEWLESS_EVENT_ID_COLUMN", None),
             ("events", event_types, settings.event_timestamp_column,
              "SKEWLESS_EVENT_TIMESTAMP_COLUMN", "timestamp")]
    if spec is not None:
        needs += [("events", event_types, k.name, f"an entity key of {service}", k.dtype)
                  for k in spec.entity_keys]
        needs += [("events", event_types, r.name, f"a request field of {service}", r.dtype)
                  for r in spec.request_fields]
    needs += [("labels", label_types, settings.event_id_column, "SKEWLESS_EVENT_ID_COLUMN", None),
              ("labels", label_types, settings.label_column, "SKEWLESS_LABEL_COLUMN", "label"),
              ("labels", label_types, settings.label_timestamp_column,
               "SKEWLESS_LABEL_TIMESTAMP_COLUMN", "timestamp")]
    problems = []
    described: dict[str, list[str]] = {"events": [], "labels": []}
    for file, types, column, role, want in needs:
        if column not in types:
            problems.append(f"the {file} have no column {column} ({role})")
            continue
        described[file].append(column)
        family = _family(types[column])
        if want == "timestamp" and family != "timestamp":
            problems.append(f"{file} column {column} is {types[column]}, not a timestamp")
        elif want == "label" and family not in ("bool", "integer", "float"):
            problems.append(f"labels column {column} is {types[column]}, not 0/1 or a boolean")
        elif want in _FITS and family not in _FITS[want]:
            problems.append(f"{file} column {column} is {types[column]}; {service} takes it "
                            f"as {want}")
    key = settings.event_id_column
    if key in event_types and key in label_types and \
            _family(event_types[key]) != _family(label_types[key]):
        problems.append(f"{key} is {event_types[key]} in the events and {label_types[key]} in "
                        "the labels: they do not join")
    return problems, described


def _label_counts(con: Any, settings: Settings, events: Path, labels: Path,
                  now: datetime) -> list[Finding]:
    """Ids, labels, and the label events a training set built now would hold."""
    key, ts = _ident(settings.event_id_column), _ident(settings.event_timestamp_column)
    label, label_ts = _ident(settings.label_column), _ident(settings.label_timestamp_column)
    row = con.execute(
        f"""WITH e AS (SELECT {key} AS id, CAST({ts} AS TIMESTAMPTZ) AS ts
                       FROM read_parquet($events)),
                 l AS (SELECT {key} AS id, CAST({label_ts} AS TIMESTAMPTZ) AS known,
                              CAST({label} AS DOUBLE) AS y FROM read_parquet($labels)),
                 j AS (SELECT * FROM e JOIN l USING (id))
            SELECT (SELECT count(*) FROM e), (SELECT count(*) - count(id) FROM e),
                   (SELECT count(id) - count(DISTINCT id) FROM e),
                   (SELECT count(*) FILTER (WHERE ts IS NULL) FROM e),
                   (SELECT count(*) FROM l), (SELECT count(*) - count(id) FROM l),
                   (SELECT count(id) - count(DISTINCT id) FROM l),
                   (SELECT count(*) FILTER (WHERE y IS NULL OR y NOT IN (0, 1)) FROM l),
                   (SELECT count(*) FILTER (WHERE known <= $now AND ts < $now) FROM j),
                   (SELECT count(*) FILTER (WHERE known <= $now AND ts < $now AND y = 1)
                    FROM j),
                   (SELECT count(*) FILTER (WHERE known IS NULL OR known > $now) FROM j),
                   (SELECT count(*) FROM e ANTI JOIN l USING (id)),
                   (SELECT count(*) FROM l ANTI JOIN e USING (id))""",
        {"events": _parquet(events), "labels": _parquet(labels), "now": now},
    ).fetchall()[0]
    (n_events, event_null_ids, event_dups, no_time, n_labels, label_null_ids, label_dups,
     not_binary, kept, positives, pending, unlabelled, orphans) = (int(v) for v in row)
    id_column = settings.event_id_column
    findings = []
    id_problems = [text for count, text in (
        (event_dups, f"{event_dups:,} repeated {id_column} values in the events"),
        (event_null_ids, f"{event_null_ids:,} events without {id_column}"),
        (label_dups, f"{label_dups:,} repeated {id_column} values in the labels"),
        (not_binary, f"{not_binary:,} labels that are not 0 or 1"),
    ) if count]
    if id_problems:
        findings.append(Finding(
            item="label ids and values", status="blocks",
            found=", ".join(id_problems) + ": a training set needs one event and one 0/1 "
                  f"label per {id_column}",
            change="remove the repeats and the rows without an id, and write labels as 0/1"))
    else:
        findings.append(Finding(
            item="label ids and values", status="ok",
            found=f"{n_events:,} events and {n_labels:,} labels, one per {id_column}; labels "
                  "are 0/1" + (f" ({label_null_ids:,} labels without an id are ignored)"
                               if label_null_ids else "")))
    counts = (f"{kept:,} of {n_events:,} events would be kept ({positives:,} positive, "
              f"{kept - positives:,} negative): {unlabelled:,} have no label, {pending:,} have "
              f"a label not known by {now.isoformat(timespec='seconds')}, "
              f"{orphans:,} labels match no event"
              + (f", {no_time:,} events have no time" if no_time else ""))
    if kept == 0 or positives in (0, kept):
        findings.append(Finding(
            item="label events kept", status="blocks",
            found=counts + ": a model needs label events of both classes",
            change="check that the label source's ids match the events' and that its label "
                   "times have passed"))
    else:
        findings.append(Finding(item="label events kept", status="ok", found=counts))
    return findings


def _entity_coverage(con: Any, settings: Settings, spec: ServiceSpec,
                     registry: RegistrySnapshot, events: Path) -> list[Finding]:
    """For each batch view with a parquet source: how many events' entity keys it holds."""
    from skewless.feast_cli import source_file

    findings = []
    repo = settings.repo_path.absolute()
    for view_name, definition in spec.definitions["views"].items():
        if definition["kind"] != "batch":
            continue
        view = registry.feature_view(view_name)
        source: Any = view.batch_source
        location = source_file(source, repo)
        if location is None:
            continue
        path = Path(location.removeprefix("file://"))
        if not path.exists():
            continue  # named with the source
        to_source = {v: k for k, v in source.field_mapping.items()}
        pairs = [(event_key, to_source.get(column.name, column.name))
                 for event_key, column in zip(definition["entities"], view.entity_columns,
                                              strict=True)]
        condition = " AND ".join(f"s.{_ident(b)} = e.{_ident(a)}" for a, b in pairs)
        keys = ", ".join(a for a, _ in pairs)
        item = f"entity keys of {view_name}"
        try:
            covered, total = con.execute(
                f"""SELECT count(*) FILTER (WHERE EXISTS (
                           SELECT 1 FROM read_parquet($source) s WHERE {condition})),
                           count(*)
                    FROM read_parquet($events) e""",
                {"source": _parquet(path), "events": _parquet(events)}).fetchall()[0]
        except Exception as exc:  # duckdb names the column or the types that do not compare
            findings.append(Finding(
                item=item, status="blocks",
                found=f"the events' {keys} do not join {source.name}: {_first_lines(str(exc), 2)}",
                change=f"give the events' {keys} the type of the feature table's"))
            continue
        found = (f"{covered:,} of {total:,} events have a {keys} that {source.name} holds"
                 + ("; the others get no value from this view" if covered < total else ""))
        findings.append(Finding(
            item=item, status="warn" if covered == 0 and total else "ok", found=found,
            change="check that the events' keys are the feature table's" if covered == 0 and total
            else ""))
    return findings

