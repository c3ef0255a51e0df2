"""A ferry.toml with accessories, parsed by ferry's own config reader (no host)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ferry.config import parse

ROOT = Path(__file__).resolve().parents[3]

ACCESSORIES = {
    "db": {"kind": "postgres", "version": "15", "port": 37432, "url_env": "DATABASE_URL",
           "backup": {"keep": 3}},
    "cache": {"kind": "redis", "port": 37379, "url_env": "REDIS_URL"},
}


def make_cfg(accessories=None, env=None, **deploy):
    doc = tomllib.loads((ROOT / "ferry.toml").read_text())
    doc["app"]["name"] = "shop"
    doc["deploy"].update(deploy)
    if env is not None:
        doc["deploy"]["env"] = env
    doc["accessories"] = ACCESSORIES if accessories is None else accessories
    return parse(doc, ROOT / "ferry.toml")


@pytest.fixture
def cfg():
    return make_cfg()
