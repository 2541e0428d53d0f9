"""`skewless init REPO`: add what Skewless needs to an existing Feast repo.

Two files change, no definition does (the ``.py`` files and the data are left alone):

``REPO/skewless.env``
    The repo's Skewless settings (dotenv, the usual ``SKEWLESS_*`` keys; read by every
    command for the repo ``SKEWLESS_REPO_PATH`` names, see :mod:`skewless.settings`): the
    feature service, the label source (events, labels, their columns), and
    ``SKEWLESS_VAR_DIR=.skewless``. Run-time state (the embedded Redis's data, trained
    models, the SQLite metadata database, reports) then lives in ``REPO/.skewless/``, beside
    the definitions it was made from, instead of in Skewless's own installation where every
    repo would share it; ``.skewless/.gitignore`` keeps it out of git. Paths inside the repo
    are written relative to it, so the file moves with the repo. An option not given is
    written as a commented line showing the default. An existing file is kept unless
    ``force`` (then it is saved beside as ``skewless.env.orig`` first).

``REPO/feature_store.yaml``
    The online store becomes Redis at ``${SKEWLESS_REDIS}`` (every command sets it: the
    configured server or an embedded one), because the predictor reads Feast's Redis layout
    directly; an offline store that is absent, ``file`` or ``dask`` becomes ``duckdb``,
    which keeps every label event (the ``file`` store drops those before an entity's first
    row). Every other key and comment is kept. The original is saved first as
    ``feature_store.yaml.orig`` (``.orig.1``, ``.orig.2``... when that exists: an earlier
    copy is never overwritten); Feast reads only ``feature_store.yaml``.

    Kept as they are: a Redis Cluster online store (the predictor reads it), a Redis store
    already at ``${SKEWLESS_REDIS}``, and an offline store of another engine (Spark,
    BigQuery...: the repo's sources may need it). A plain Redis store at another address is
    pointed at ``${SKEWLESS_REDIS}`` with its other keys kept, and its address is written to
    skewless.env as ``SKEWLESS_REDIS``, so commands keep using that server. Any other online
    store (a remote feature server, a cloud store, Redis Sentinel) is refused, naming it,
    unless ``force`` replaces it.

Running it again on a prepared repo changes nothing and says so.
"""

from __future__ import annotations

import io
import re
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from skewless.errors import InvalidInput
from skewless.files import write_text_atomic
from skewless.settings import REPO_SETTINGS_FILE, Settings

FEATURE_STORE_YAML = "feature_store.yaml"
SAVED_SUFFIX = ".orig"
VAR_DIR_NAME = ".skewless"
REDIS_CONNECTION = "${SKEWLESS_REDIS}"
# Feast's default connection string of a Redis online store that names none.
FEAST_DEFAULT_REDIS = "localhost:6379"
# Online stores replaced without asking: Feast's local default, or Redis elsewhere.
REPLACEABLE_ONLINE = frozenset({"sqlite", "redis", None})
# Offline stores that become duckdb: Feast's default (dask, also named `file`).
REPLACEABLE_OFFLINE = frozenset({"file", "dask", None})

ONLINE_COMMENT = ("# Skewless's predictor reads this Redis directly; every skewless command sets\n"
                  "# SKEWLESS_REDIS (its configured server, or an embedded one it starts).\n")
OFFLINE_COMMENT = ("# duckdb keeps every label event (also those before an entity's first row or\n"
                   "# past the TTL); Feast's default `file` store does not.\n")


@dataclass(frozen=True)
class LabelSource:
    """What `skewless init` writes to skewless.env; None leaves a setting to its default.

    The names are those of :class:`~skewless.settings.Settings`; paths are as the user gave
    them (relative ones meaning the working directory's).
    """

    feature_service: str | None = None
    events_path: Path | None = None
    labels_path: Path | None = None
    event_id_column: str | None = None
    event_timestamp_column: str | None = None
    label_column: str | None = None
    label_timestamp_column: str | None = None
    truth_path: Path | None = None

    def given(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


@dataclass
class InitReport:
    """What `skewless init` did, for the CLI to print."""

    repo: Path
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def init_repo(repo: Path, source: LabelSource, force: bool = False) -> InitReport:
    """Prepare ``repo`` for Skewless (see the module docstring); refusals change nothing."""
    repo = repo.resolve()
    yaml_path = repo / FEATURE_STORE_YAML
    if not yaml_path.is_file():
        raise InvalidInput(
            f"{repo} has no {FEATURE_STORE_YAML}: give the directory of a Feast repo (for "
            f"`feast init NAME`, NAME/feature_repo)")
    report = InitReport(repo)
    text = yaml_path.read_text()
    new_text, redis_address = _plan_feature_store(text, yaml_path, force, report)

    env_path = repo / REPO_SETTINGS_FILE
    env_text = settings_file_text(repo, source, redis_address)
    write_env = _plan_settings_file(env_path, env_text, source, force, redis_address, report)
    for name, path in (("events", source.events_path), ("labels", source.labels_path),
                       ("truth", source.truth_path)):
        if path is not None and not path.exists():
            report.notes.append(f"the {name} file {path.absolute()} does not exist yet")
    if source.feature_service is None and write_env:
        report.notes.append(f"no feature service given: commands use the default "
                            f"{_default('feature_service')}; set SKEWLESS_FEATURE_SERVICE in "
                            f"{env_path}")

    # Every refusal above came before the first change below.
    if new_text is not None:
        saved = save_beside(yaml_path)
        write_text_atomic(yaml_path, new_text)
        report.changed.append(f"saved the original {FEATURE_STORE_YAML} as {saved.name}")
    if write_env:
        if env_path.exists():
            report.changed.append(f"saved the previous {env_path.name} as "
                                  f"{save_beside(env_path).name}")
        write_text_atomic(env_path, env_text)
        report.changed.append(f"wrote {env_path.name} (the feature service, the label source, "
                              f"SKEWLESS_VAR_DIR={VAR_DIR_NAME})")
    ignore = repo / VAR_DIR_NAME / ".gitignore"
    if write_env and not ignore.exists():
        ignore.parent.mkdir(exist_ok=True)
        ignore.write_text("# Skewless's run-time state (models, Redis data, the database).\n*\n")
        report.changed.append(f"created {VAR_DIR_NAME}/ for run-time state (git-ignored)")
    return report


def _plan_feature_store(text: str, path: Path, force: bool,
                        report: InitReport) -> tuple[str | None, str | None]:
    """The new feature_store.yaml (None: already right) and the Redis address it named."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidInput(f"{path} is not a mapping of Feast settings")
    online, redis_address = _plan_online_store(config.get("online_store"), path, force, report)
    offline = _plan_offline_store(config.get("offline_store"), report)
    if online is None and offline is None:
        return None, redis_address
    wanted = dict(config)
    new_text = text
    for key, block, comment in (("online_store", online, ONLINE_COMMENT),
                                ("offline_store", offline, OFFLINE_COMMENT)):
        if block is not None:
            wanted[key] = block
            new_text = replace_top_level_block(new_text, key, block, comment,
                                               after="online_store")
    if not _reads_as(new_text, wanted):
        # A layout the line-wise edit does not follow (anchors, quoted keys): write the
        # mapping plainly; the comments survive in the saved original.
        new_text = yaml.safe_dump(wanted, sort_keys=False, default_flow_style=False)
        report.notes.append(f"{path.name} was rewritten without its comments (they are in "
                            f"the saved original)")
    return new_text, redis_address


def _reads_as(text: str, wanted: dict[str, Any]) -> bool:
    """Whether ``text`` is YAML holding exactly ``wanted``, each key once."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    keys = [key.value for key, _ in node.value] if isinstance(node, yaml.MappingNode) else []
    return config == wanted and len(keys) == len(set(keys))


def _store_type(block: Any) -> str | None:
    """A store's type as Feast reads it: a mapping's ``type``, a bare name, or None (unset)."""
    if isinstance(block, dict):
        kind = block.get("type")
        return None if kind is None else str(kind)
    if isinstance(block, str) and block.lower() not in ("none", "null"):
        return block
    return None


def _plan_online_store(block: Any, path: Path, force: bool,
                       report: InitReport) -> tuple[dict[str, Any] | None, str | None]:
    """The online_store to write (None: keep it) and a Redis address to carry over."""
    kind = _store_type(block)
    settings = block if isinstance(block, dict) else {}
    redis_type = str(settings.get("redis_type", "redis"))
    if kind == "redis" and redis_type == "redis_cluster":
        report.kept.append("the Redis Cluster online store, as it is")
        return None, None
    if kind == "redis" and redis_type == "redis" and settings.get(
            "connection_string") == REDIS_CONNECTION:
        report.kept.append(f"the online store: Redis at {REDIS_CONNECTION} already")
        return None, None
    if kind not in REPLACEABLE_ONLINE or redis_type != "redis":
        what = f"redis ({redis_type})" if kind == "redis" else kind
        if not force:
            raise InvalidInput(
                f"{path} has a {what!r} online store; Skewless's predictor reads Redis or "
                f"Redis Cluster. --force replaces it with Redis at {REDIS_CONNECTION} (the "
                f"original is saved beside it)")
        report.changed.append(f"online store: {what} → Redis at {REDIS_CONNECTION} (--force)")
        return {"type": "redis", "connection_string": REDIS_CONNECTION}, None
    if kind == "redis":  # plain Redis elsewhere: same store, Skewless's address
        address = str(settings.get("connection_string", FEAST_DEFAULT_REDIS))
        report.changed.append(f"online store: Redis at {address} → {REDIS_CONNECTION} (its "
                              f"other settings kept; the address goes to {REPO_SETTINGS_FILE})")
        return {**settings, "connection_string": REDIS_CONNECTION}, address
    report.changed.append(f"online store: {kind or 'sqlite (the default)'} → Redis at "
                          f"{REDIS_CONNECTION}")
    return {"type": "redis", "connection_string": REDIS_CONNECTION}, None


def _plan_offline_store(block: Any, report: InitReport) -> dict[str, Any] | None:
    """The offline_store to write (None: keep it)."""
    kind = _store_type(block)
    if kind == "duckdb":
        report.kept.append("the offline store: duckdb already")
        return None
    if kind not in REPLACEABLE_OFFLINE:
        report.kept.append(f"the {kind!r} offline store, as it is (the repo's sources may "
                           f"need it)")
        return None
    report.changed.append(f"offline store: {kind or 'file (the default)'} → duckdb")
    return {"type": "duckdb"}


def replace_top_level_block(text: str, key: str, block: dict[str, Any], comment: str,
                            after: str | None = None) -> str:
    """``text`` with its top-level ``key:`` entry replaced by ``block``.

    An absent entry is added after the ``after`` entry (else at the end). An entry runs from
    its ``key:`` line to its last indented line; comments and blank lines after it stay with
    what follows. The file's own indentation is reused.
    """
    lines = text.splitlines(keepends=True)
    indent = next((m.group(0) for line in lines if (m := re.match(r"[ \t]+(?=[^\s#])", line))),
                  "  ")
    entry = (f"{key}:\n" + textwrap.indent(comment, indent)
             + textwrap.indent(yaml.safe_dump(block, sort_keys=False, default_flow_style=False),
                               indent))
    span = _entry_span(lines, key)
    if span is None:
        previous = _entry_span(lines, after) if after else None
        if previous is None:
            return text + ("\n" if text and not text.endswith("\n") else "") + entry
        span = (previous[1], previous[1])
    return "".join(lines[:span[0]]) + entry + "".join(lines[span[1]:])


def _entry_span(lines: list[str], key: str) -> tuple[int, int] | None:
    """The lines ``[start, end)`` of the top-level ``key:`` entry, or None."""
    start = next((i for i, line in enumerate(lines) if re.match(rf"{key}\s*:", line)), None)
    if start is None:
        return None
    end = start + 1
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.strip() and not line[0].isspace() and not line.startswith("#"):
            break  # the next top-level key
        if line.strip() and line[0].isspace():
            end = i + 1
    return start, end


def _plan_settings_file(path: Path, text: str, source: LabelSource, force: bool,
                        redis_address: str | None, report: InitReport) -> bool:
    """Whether to write skewless.env; refuses to drop options the user gave for nothing.

    An existing file is right when it sets what ``text`` sets to the same values (whatever
    else it holds: settings added by hand, an earlier run's ``SKEWLESS_REDIS``).
    """
    if not path.exists():
        return True
    existing = dotenv_values(path)
    wanted = dotenv_values(stream=io.StringIO(text))
    if all(existing.get(key) == value for key, value in wanted.items()):
        report.kept.append(f"{path.name}: it has these settings already")
        return False
    if force:
        return True
    if source.given():
        differing = ", ".join(key for key, value in wanted.items() if existing.get(key) != value)
        raise InvalidInput(
            f"{path} exists and differs from these options ({differing}); edit it, or give "
            f"--force to replace it (the old one is saved beside it)")
    report.kept.append(f"{path.name}, as it is (--force rewrites it from the options)")
    if redis_address is not None:
        report.notes.append(f"the online store used Redis at {redis_address}: set "
                            f"SKEWLESS_REDIS={redis_address} in {path} to keep using it")
    return False


def settings_file_text(repo: Path, source: LabelSource, redis_address: str | None) -> str:
    """The commented skewless.env for ``source`` (options not given: commented defaults)."""

    def line(name: str, value: Any, default: Any) -> str:
        key = f"SKEWLESS_{name.upper()}"
        if value is None:
            return f"# {key}={default.as_posix() if isinstance(default, Path) else default}\n"
        shown = _in_repo(repo, value) if isinstance(value, Path) else str(value)
        return f"{key}={dotenv_value(shown)}\n"

    defaults = Settings.model_construct(repo_path=Path())  # the defaults, repo-relative
    path_defaults = {"events_path": defaults.resolved_events_path,
                     "labels_path": defaults.resolved_labels_path,
                     "truth_path": defaults.resolved_truth_path}

    def setting(name: str) -> str:
        return line(name, getattr(source, name), path_defaults.get(name, _default(name)))

    redis = (f"SKEWLESS_REDIS={dotenv_value(redis_address)}\n" if redis_address
             else f"# SKEWLESS_REDIS={FEAST_DEFAULT_REDIS}\n")
    return (
        "# Skewless settings of this Feast repo, written by `skewless init`. Every skewless\n"
        "# command reads them when SKEWLESS_REPO_PATH names this directory (in the\n"
        "# environment or in a .env where it runs); the environment and that .env win over\n"
        "# this file. Relative paths here are paths in this repo. Any SKEWLESS_* setting\n"
        "# may be added, except SKEWLESS_REPO_PATH. A commented line shows the default.\n"
        "\n"
        "# The feature service the model is trained on and served with.\n"
        + setting("feature_service")
        + "\n"
        "# The label source: events (an id, a time, the entity keys and request fields)\n"
        "# and their labels (the event id, the label, when it became known), in parquet.\n"
        + setting("events_path") + setting("labels_path")
        + setting("event_id_column") + setting("event_timestamp_column")
        + setting("label_column") + setting("label_timestamp_column")
        + "# Optional: the true probability of each event (event id, probability).\n"
        + setting("truth_path")
        + "\n"
        "# Run-time state (the embedded Redis's data, models, the SQLite database, reports)\n"
        "# stays with this repo, not in Skewless's installation; it is git-ignored.\n"
        f"SKEWLESS_VAR_DIR={VAR_DIR_NAME}\n"
        "\n"
        "# The Redis feature_store.yaml reads as ${SKEWLESS_REDIS}; unset, each command\n"
        "# starts an embedded redis-server (its data under the run-time state).\n"
        + redis
    )


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def _in_repo(repo: Path, path: Path) -> str:
    """``path`` (relative: to the working directory) as skewless.env holds it: relative to
    the repo when inside it, else absolute."""
    full = path.resolve()
    return full.relative_to(repo).as_posix() if full.is_relative_to(repo) else str(full)


def dotenv_value(value: str) -> str:
    """``value`` quoted for a dotenv file when it needs it (single quotes: no expansion)."""
    if re.fullmatch(r"[\w./:@+,=-]+", value):
        return value
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_beside(path: Path) -> Path:
    """Copy ``path`` to ``NAME.orig`` (or ``.orig.1``, ...): an earlier copy is never replaced."""
    data = path.read_bytes()
    for n in range(1000):
        saved = path.with_name(path.name + SAVED_SUFFIX + (f".{n}" if n else ""))
        try:
            with saved.open("xb") as file:
                file.write(data)
            return saved
        except FileExistsError:
            continue
    raise InvalidInput(f"{path.parent} holds too many saved copies of {path.name}")
