"""ferry's package data: the nginx templates and DH parameters (``nginx/``), the monitoring
stack's templates, rules and Grafana provisioning (``monitoring/``), and the base image recipes
(``base/``). They ship inside the wheel and are read through ``importlib.resources``, so an
installed ferry works from any directory, not only from its repository.

A repository overrides them from ferry.toml: ``proxy.templates`` (nginx, template by template)
and ``monitoring.dir`` (the whole monitoring folder).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import FerryError


def path(*parts: str) -> Path:
    """The packaged file or folder ``parts`` (e.g. ``path("nginx")``) as a filesystem path.

    Jinja's FileSystemLoader, globbing and ``read_bytes`` all want a real path; pip and uv always
    install a wheel unpacked, so the package's files are on disk. A zipped ferry (zipapp, zipimport)
    cannot lend its folders to nginx's loader and is refused clearly rather than half working."""
    root = resources.files(__name__)
    if not isinstance(root, Path):
        raise FerryError(f"ferry's package data is inside an archive ({root}), not on disk",
                         "install ferry as a wheel with pip or uv (unzipped), not from a zip file")
    p = root.joinpath(*parts)
    if not p.exists():
        raise FerryError(f"ferry's package data has no {'/'.join(parts)} (looked in {p})",
                         "reinstall ferry: its wheel ships ferry/assets/** (pyproject.toml package-data)")
    return p
