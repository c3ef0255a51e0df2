"""uv projects and workspaces: which ``pyproject.toml`` and ``uv.lock`` decide the dependencies.

A uv workspace (the FastAPI full-stack template's layout) has a root ``pyproject.toml`` with
``[tool.uv.workspace] members = ["backend"]`` and one ``uv.lock`` for every member; the app is
one member (``image.package``). ``image.requirements`` may name the member's pyproject.toml or
the root's: the root is found by walking up, as uv does. The lock is exported for that member
alone (``uv export --package``), so what goes in is what ``uv sync --package`` would install.

The dependency layer's key covers the lock, the root's pyproject.toml and the pyproject.toml of
every member the app depends on (itself included): editing an unrelated member does not
rebuild the app's dependencies.

Pure: reads files, runs nothing.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError

LOCK = "uv.lock"


def canonical(name: str) -> str:
    """PEP 503 normalised name: ``My_App`` and ``my-app`` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise BuildError(f"{path}: not valid TOML: {e}", "fix the syntax at the line named") from None
    except OSError as e:
        raise BuildError(f"cannot read {path}: {e.strerror}", "check image.requirements in ferry.toml") from None


@dataclass(frozen=True)
class Member:
    name: str  # canonical project name
    path: Path  # the member's folder
    pyproject: Path


@dataclass(frozen=True)
class Project:
    """The uv project (or workspace) a pyproject.toml belongs to, and the package chosen in it."""

    root: Path  # where uv.lock lives: the workspace root, or the project's own folder
    package: Member | None  # the app's project; None for a virtual root without a choice
    members: tuple[Member, ...]  # every member (a lone project is a workspace of one)
    workspace: bool  # the root declares [tool.uv.workspace]

    @property
    def lock(self) -> Path:
        return self.root / LOCK


def _member_dirs(root: Path, ws: dict) -> list[Path]:
    excluded = {p.resolve() for pat in ws.get("exclude", []) for p in root.glob(pat)}
    out = []
    for pat in ws.get("members", []):
        for d in sorted(root.glob(pat)):
            if d.is_dir() and (d / "pyproject.toml").is_file() and d.resolve() not in excluded:
                out.append(d.resolve())
    return out


def _members(root: Path, root_doc: dict) -> tuple[Member, ...]:
    found: dict[Path, Member] = {}
    if "project" in root_doc:
        name = root_doc["project"].get("name")
        if name:
            found[root] = Member(canonical(name), root, root / "pyproject.toml")
    for d in _member_dirs(root, root_doc.get("tool", {}).get("uv", {}).get("workspace", {})):
        doc = load_toml(d / "pyproject.toml")
        name = doc.get("project", {}).get("name")
        if name:
            found.setdefault(d, Member(canonical(name), d, d / "pyproject.toml"))
    return tuple(found.values())


def find_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` whose pyproject.toml declares a uv workspace
    that has ``start`` as a member (or is ``start`` itself)."""
    start = start.resolve()
    for d in (start, *start.parents):
        py = d / "pyproject.toml"
        if not py.is_file():
            continue
        doc = load_toml(py)
        ws = doc.get("tool", {}).get("uv", {}).get("workspace")
        if ws is None:
            continue
        if d == start or start in _member_dirs(d, ws):
            return d
        return None  # inside a workspace's folder but not one of its members: a project of its own
    return None


def discover(pyproject: Path, package: str | None = None) -> Project:
    """The project (and workspace) of ``pyproject``; ``package`` picks a workspace member."""
    pyproject = pyproject.resolve()
    here = pyproject.parent
    root = find_root(here)
    if root is None:
        doc = load_toml(pyproject)
        name = doc.get("project", {}).get("name")
        member = Member(canonical(name), here, pyproject) if name else None
        if package is not None and (member is None or member.name != canonical(package)):
            raise BuildError(f"image.package is {package!r}, but {pyproject} is not a uv workspace "
                             f"(no [tool.uv.workspace] here or above)"
                             + (f" and its project is {member.name!r}" if member else ""),
                             "remove image.package, or point image.requirements at the workspace's pyproject.toml")
        return Project(here, member, (member,) if member else (), False)

    members = _members(root, load_toml(root / "pyproject.toml"))
    names = ", ".join(f"{m.name} ({m.path.relative_to(root).as_posix() or '.'})" for m in members) or "none"
    if package is not None:
        chosen = next((m for m in members if m.name == canonical(package)), None)
        if chosen is None:
            raise BuildError(f"image.package: {package!r} is not a member of the uv workspace at {root} "
                             f"(members: {names})",
                             "set image.package to one of the members, or add the app's folder to "
                             "[tool.uv.workspace] members in the root pyproject.toml")
    else:
        chosen = next((m for m in members if m.path == here), None)
        if chosen is None:
            others = [m for m in members if m.path != root]
            if len(others) == 1:
                chosen = others[0]
            else:
                raise BuildError(f"{root / 'pyproject.toml'} is a uv workspace with {len(members)} members "
                                 f"({names}); ferry cannot tell which is the app",
                                 'set image.package in ferry.toml to the app\'s member, e.g. package = "app"')
    return Project(root, chosen, members, True)


def require_lock(project: Project) -> Path:
    if not project.lock.is_file():
        where = "the uv workspace at" if project.workspace else "the uv project at"
        raise BuildError(f"{where} {project.root} has no {LOCK}: the image's dependencies would not be locked",
                         f"run `uv lock` in {project.root} and commit {LOCK}")
    return project.lock


def members_needed(project: Project, lock_doc: dict) -> tuple[Member, ...]:
    """The chosen member and every workspace member it depends on (through the lock's
    dependency graph, extras included), in a stable order."""
    if project.package is None:
        return project.members
    by_name: dict[str, list[dict]] = {}
    for p in lock_doc.get("package", []):
        by_name.setdefault(canonical(p.get("name", "")), []).append(p)
    member_names = {m.name for m in project.members}
    seen: set[str] = set()
    todo = [project.package.name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for p in by_name.get(name, []):
            deps = list(p.get("dependencies", []))
            for extra in (p.get("optional-dependencies") or {}).values():
                deps += extra
            for d in deps:
                dn = canonical(d.get("name", ""))
                if dn in member_names and dn not in seen:
                    todo.append(dn)
    return tuple(m for m in project.members if m.name in seen)
