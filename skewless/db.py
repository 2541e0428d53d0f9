"""The metadata database: its engine, the declarative base its tables share, and Alembic.

Tables live with what they hold (the registry's in ``skewless/registry.py``); this module owns
how to reach the database and how its schema moves. The schema is created by Alembic
(``skewless/migrations/``, shipped inside the package, ``skewless db upgrade``), never by the
code that reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from sqlalchemy import JSON, DateTime, Engine, TypeDecorator, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from skewless.errors import Unavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# How long a new PostgreSQL connection may take (libpq's connect_timeout; a URL's own
# ?connect_timeout= wins): a database that is down or unreachable fails a call in seconds
# instead of the operating system's TCP timeout (minutes).
CONNECT_TIMEOUT_SECONDS = 3


class DatabaseUnavailable(Unavailable):
    """The metadata database cannot be reached or cannot serve now (503, retry later)."""

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def _reason(exc: Exception) -> str:
    """The driver's message on one line (psycopg's span several)."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split()) or type(orig).__name__


@contextmanager
def reachable() -> Iterator[None]:
    """Turns "cannot reach the metadata database" into :class:`DatabaseUnavailable`.

    Refused or dropped connections, a server starting up or shutting down, a locked SQLite
    file, no pooled connection free: SQLAlchemy raises these as ``OperationalError``,
    ``InterfaceError`` or a pool ``TimeoutError``. Errors of the data itself (an
    ``IntegrityError``, a missing table) pass through unchanged.
    """
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        raise DatabaseUnavailable(f"metadata database unavailable: {_reason(exc)}") from exc


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


READ_ONLY = "skewless_read_only"  # execution option of an engine whose transactions only read


def read_only(engine: Engine) -> Engine:
    """``engine`` for transactions that only read: on SQLite they take no write lock, so a page
    or a poll never waits behind (or holds up) a writer."""
    return engine.execution_options(**{READ_ONLY: True})


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for ``url``; on SQLite every writing transaction takes the write lock up front
    (``BEGIN IMMEDIATE``), so concurrent writers queue instead of failing half-way, while
    reading ones (:func:`read_only`) begin deferred and take none. On PostgreSQL (psycopg) a
    new connection gives up after :data:`CONNECT_TIMEOUT_SECONDS`, and a pooled one is pinged
    before use, so a restarted server costs one failed call, not a stale connection."""
    if not url.startswith("sqlite"):
        parsed = make_url(url)
        if (parsed.get_driver_name() in ("psycopg", "psycopg2")
                and "connect_timeout" not in parsed.query):
            options.setdefault("connect_args", {}).setdefault(
                "connect_timeout", CONNECT_TIMEOUT_SECONDS)
        return create_engine(url, pool_pre_ping=True, **options)
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, **options)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        reading = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

    return engine


def alembic_config(url: str) -> Any:
    """Alembic's config for ``url``: the migrations shipped in the package, no URL in a file."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` (the explicit step before serving or training)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def schema_problem(engine: Engine) -> str | None:
    """None when the database is at the migrations' head, else what to do about it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except (OperationalError, InterfaceError) as exc:
        return f"metadata database unavailable: {_reason(exc)}"
    if current != head:
        return (f"metadata database {engine.url.render_as_string(hide_password=True)} is at "
                f"revision {current or 'none'}, not {head}: run `skewless db upgrade`")
    return None


class MetadataStore:
    """What reads and writes the metadata database: its engine, and transactions that write
    (on SQLite they hold the write lock from their start) or only read (they take none).
    Use it in a ``with`` block so its connections are closed."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = sessionmaker(read_only(self.engine), expire_on_commit=False)

    def check_schema(self, error: type[Exception]) -> Self:
        """Itself, when the database is at the migrations' head; else closed, and ``error``
        raised saying what to do."""
        problem = schema_problem(self.engine)
        if problem:
            self.close()
            raise error(problem)
        return self

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction that writes."""
        with reachable(), self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads."""
        with reachable(), self.read_sessions() as session, session.begin():
            yield session
