"""Alembic environment: the URL from Skewless settings, the metadata from the registry models."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.pool import NullPool

import skewless.registry  # noqa: F401  # its tables join Base.metadata
import skewless.tokens  # noqa: F401  # … the API tokens
import skewless.validations  # noqa: F401  # … and the validation results
from skewless.db import Base, make_engine
from skewless.settings import get_settings

config = context.config
url: str | None = config.attributes.get("url")
if url is None:  # the `alembic` command itself: its logging setup and our settings
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = get_settings().resolved_database_url
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit SQL instead of running it (`alembic upgrade head --sql`)."""
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url, poolclass=NullPool)  # one connection, closed afterwards
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode copies a table and drops the original, which a table referencing
                # it (stage_transitions → model_versions) would refuse: SQLite's own recipe
                # for altering a table turns enforcement off around it (a no-op inside a
                # transaction, hence before it) and checks every reference afterwards.
                # On the driver's connection: through SQLAlchemy it would begin one first.
                connection.connection.driver_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA foreign_keys = OFF")
            # render_as_batch: SQLite alters tables by copying them.
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=True, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left broken references: {broken[:10]}")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
