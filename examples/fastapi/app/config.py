"""Settings from the environment: what changes between a laptop, the local target and production."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def database_url(raw: str | None, data_dir: Path) -> str:
    """SQLAlchemy's URL for DATABASE_URL. Heroku-style ``postgres://`` and plain
    ``postgresql://`` both mean psycopg 3 (SQLAlchemy would pick psycopg2 otherwise); unset,
    SQLite in the data directory."""
    if not raw:
        return f"sqlite:///{data_dir / 'notes.db'}"
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix):]
    return raw


@dataclass(frozen=True)
class Settings:
    database_url: str
    data_dir: Path
    max_page: int = 100

    @classmethod
    def from_env(cls) -> "Settings":
        data_dir = Path(os.environ.get("DATA_DIR", Path.cwd() / "data"))
        return cls(database_url=database_url(os.environ.get("DATABASE_URL"), data_dir), data_dir=data_dir)


settings = Settings.from_env()
