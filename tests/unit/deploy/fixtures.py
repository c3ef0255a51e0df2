"""Fixture configs for the deploy unit tests (tests/fixtures/deploy/), never the top-level ferry.toml."""

from __future__ import annotations

from pathlib import Path

from ferry.config import Config, load

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "deploy"


def shop() -> Config:
    """release command, volumes data + media, processes worker (2 replicas) and beat (health command)."""
    return load(FIXTURES / "ferry.toml")


def plain() -> Config:
    """web only, no docker_host."""
    return load(FIXTURES / "plain.toml")
