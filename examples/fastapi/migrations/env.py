"""Alembic's environment: the app's engine and metadata, so migrations and the app always agree
on the database."""

from logging.config import fileConfig

from alembic import context

from app import models
from app.db import engine, prepare_sqlite_dir

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = models.Base.metadata  # with the models imported: every table is on it
# SQLite cannot ALTER most things: batch mode recreates the table instead
render_as_batch = engine.dialect.name == "sqlite"


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: the SQL, without a connection."""
    context.configure(url=engine.url.render_as_string(hide_password=False), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=render_as_batch)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    prepare_sqlite_dir()
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=render_as_batch)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
