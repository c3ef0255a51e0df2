"""The app that is itself a package: installed as ``uv sync`` would, without building a wheel.

A ``pyproject.toml`` whose ``[project]`` is packaged (it has a ``[build-system]``, or
``tool.uv.package = true``) is installed by ``uv sync`` as an editable package: its metadata is
visible to ``importlib.metadata``, its ``[project.scripts]`` are commands on PATH, its
``[project.entry-points]`` are discoverable. ferry gives the image the same from the
pyproject alone, on every source change and with nothing run:

- ``<name>-<version>.dist-info/`` (METADATA, entry_points.txt, top_level.txt, INSTALLER,
  REQUESTED, direct_url.json marking it editable, RECORD) in the dependencies folder
  (``/app/deps``, on PYTHONPATH);
- a console-script wrapper per script in ``/app/deps/bin`` (on PATH), as pip writes them:
  ``#!<image python>`` then ``from module import func; sys.exit(func())``;
- the package's import root (``src/`` layout, hatch ``packages``, setuptools ``package-dir``
  / ``packages.find.where``, flit, pdm, poetry ``packages``, uv_build ``module-root``) on the
  image's PYTHONPATH when it is not the working directory itself. (A ``.pth`` file would not
  do: Python reads those only in site-packages, and /app/deps is a PYTHONPATH entry.)

The code itself is the source layer's: these entries belong there too, since they change with
the app's version and scripts, not with its dependencies. Pure: reads files, runs nothing.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import BuildError
from .layers import Entry
from .workspace import load_toml

INSTALLER = "ferry"
_SKIP_DIRS = {"tests", "test", "docs", "doc", "examples", "example", "scripts", "benchmarks", "build", "dist",
              "node_modules", "venv", ".venv", "site-packages"}
_ENTRY_RE = re.compile(r"^\s*(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+))?\s*(?P<extras>\[.*\])?\s*$")


@dataclass(frozen=True)
class ProjectInstall:
    """What the source layer gets for the app's own package."""

    name: str
    version: str
    entries: tuple[Entry, ...]  # dist-info and console scripts, paths under ``dest``
    pythonpath: tuple[str, ...]  # import roots in the image other than the working directory
    scripts: tuple[str, ...]  # console and GUI scripts, in dest/bin
    modules: tuple[str, ...]  # top-level import names

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "pythonpath": list(self.pythonpath),
                "scripts": list(self.scripts), "modules": list(self.modules)}


def is_packaged(doc: dict) -> bool:
    """uv's rule: ``tool.uv.package`` decides; otherwise a build system makes it a package."""
    if "project" not in doc:
        return False
    flag = doc.get("tool", {}).get("uv", {}).get("package")
    if flag is not None:
        return bool(flag)
    return "build-system" in doc


def _module_name(name: str) -> str:
    return re.sub(r"[-.]+", "_", name).lower()


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _exists(root: Path, module: str) -> bool:
    rel = module.replace(".", "/")
    return (root / rel).is_dir() or (root / f"{rel}.py").is_file()


def _top_levels(root: Path) -> list[str]:
    """Top-level packages and modules in an import root (setuptools-style discovery)."""
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith((".", "_")) or p.name in _SKIP_DIRS:
            continue
        if p.is_dir() and p.name.isidentifier() and any(p.glob("*.py")):
            out.append(p.name)
        elif p.is_file() and p.suffix == ".py" and p.stem.isidentifier() and p.stem not in ("setup", "conftest"):
            out.append(p.stem)
    return out


def import_roots(doc: dict, project_dir: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """(import root, top-level modules there), from the build backend's configuration or, when
    it says nothing, from the layouts backends find by default (``src/<name>``, ``<name>``)."""
    project = doc.get("project", {})
    name = project.get("name", "")
    mod = _module_name(name)
    tool = doc.get("tool", {})
    backend = doc.get("build-system", {}).get("build-backend", "")
    found: dict[Path, list[str]] = {}

    def add(root: Path, modules: Iterable[str]) -> None:
        lst = found.setdefault(root.resolve(), [])
        for m in modules:
            if m not in lst:
                lst.append(m)

    def default(*candidates: Path) -> bool:
        for root in candidates:
            if _exists(root, mod):
                add(root, [mod])
                return True
        return False

    uvb = tool.get("uv", {}).get("build-backend")
    hatch = tool.get("hatch", {}).get("build", {}).get("targets", {}).get("wheel", {})
    setuptools = tool.get("setuptools", {})
    poetry = tool.get("poetry", {})
    if uvb is not None or backend.startswith("uv_build"):
        uvb = uvb or {}
        root = project_dir / uvb.get("module-root", "src")
        names = uvb.get("module-name", mod)
        add(root, [n.split(".")[0] for n in ([names] if isinstance(names, str) else names)])
    elif hatch.get("packages"):
        for pkg in hatch["packages"]:
            p = project_dir / pkg
            add(p.parent, [p.name.removesuffix(".py")])
    elif hatch.get("sources") and backend.startswith("hatchling"):
        src = hatch["sources"]
        prefix = next(iter(src)) if isinstance(src, dict) else src[0]
        root = project_dir / prefix
        add(root, [mod] if _exists(root, mod) else _top_levels(root))
    elif setuptools.get("package-dir") or setuptools.get("packages") or setuptools.get("py-modules"):
        pkg_dir = setuptools.get("package-dir") or {}
        base = project_dir / pkg_dir.get("", ".")
        packages = setuptools.get("packages")
        if isinstance(packages, dict) and "find" in packages:
            for where in packages["find"].get("where", ["."]):
                root = project_dir / where
                add(root, _top_levels(root))
        elif isinstance(packages, list):
            for p in packages:
                top = p.split(".")[0]
                add((project_dir / pkg_dir[top]).parent if top in pkg_dir else base, [top])
        elif not setuptools.get("py-modules"):
            add(base, _top_levels(base))
        for m in setuptools.get("py-modules") or []:
            add(base, [m])
    elif tool.get("flit", {}).get("module", {}).get("name"):
        mod = tool["flit"]["module"]["name"]
        default(project_dir, project_dir / "src")
    elif tool.get("pdm", {}).get("build", {}).get("package-dir"):
        root = project_dir / tool["pdm"]["build"]["package-dir"]
        add(root, [mod] if _exists(root, mod) else _top_levels(root))
    elif poetry.get("packages"):
        for p in poetry["packages"]:
            add(project_dir / p.get("from", "."), [p["include"].split("/")[0].split(".")[0]])
    else:
        if not default(project_dir / "src", project_dir) and backend.startswith("setuptools"):
            root = project_dir / "src" if (project_dir / "src").is_dir() else project_dir
            add(root, _top_levels(root))
    return [(root, tuple(mods)) for root, mods in found.items() if mods]


# --- the version (static, or read without running anything) ----------------------------------

def _assigned(path: Path, names=("__version__", "VERSION", "version")) -> str | None:
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id in names and isinstance(getattr(node, "value", None), ast.Constant) \
                    and isinstance(node.value.value, str):
                return node.value.value
    return None


def _module_file(roots, dotted: str) -> Path | None:
    rel = dotted.replace(".", "/")
    for root, _ in roots:
        for cand in (root / rel / "__init__.py", root / f"{rel}.py"):
            if cand.is_file():
                return cand
    return None


def version_of(doc: dict, project_dir: Path, roots) -> str:
    project = doc["project"]
    if "version" in project:
        return str(project["version"])
    tool = doc.get("tool", {})
    hatch_path = tool.get("hatch", {}).get("version", {}).get("path")
    if hatch_path and (v := _assigned(project_dir / hatch_path)):
        return v
    dyn = tool.get("setuptools", {}).get("dynamic", {}).get("version", {})
    if dyn.get("attr"):
        module, _, attr = dyn["attr"].rpartition(".")
        f = _module_file(roots, module)
        if f and (v := _assigned(f, (attr,))):
            return v
    if dyn.get("file"):
        files = dyn["file"] if isinstance(dyn["file"], list) else [dyn["file"]]
        try:
            return (project_dir / files[0]).read_text().strip()
        except OSError:
            pass
    pdm = tool.get("pdm", {}).get("version", {})
    if pdm.get("source") == "file" and pdm.get("path") and (v := _assigned(project_dir / pdm["path"])):
        return v
    for _, mods in roots:  # flit and most others: the package's __version__
        for m in mods:
            f = _module_file(roots, m)
            if f and (v := _assigned(f, ("__version__",))):
                return v
    return "0+unknown"  # computed at build time (from git, by a plugin): not knowable without building


# --- the files --------------------------------------------------------------------------------

def metadata(doc: dict, version: str) -> str:
    p = doc["project"]
    lic = p.get("license")
    expr = lic if isinstance(lic, str) else None
    lines = [f"Metadata-Version: {'2.4' if expr else '2.1'}", f"Name: {p['name']}", f"Version: {version}"]
    if p.get("description"):
        lines.append(f"Summary: {p['description']}")
    if expr:
        lines.append(f"License-Expression: {expr}")
    elif isinstance(lic, dict) and lic.get("text"):
        lines.append("License: " + " ".join(lic["text"].split()))
    people = [a for a in p.get("authors", []) if isinstance(a, dict)]
    names = [a["name"] for a in people if a.get("name") and not a.get("email")]
    emails = [f"{a['name']} <{a['email']}>" if a.get("name") else a["email"] for a in people if a.get("email")]
    if names:
        lines.append(f"Author: {', '.join(names)}")
    if emails:
        lines.append(f"Author-email: {', '.join(emails)}")
    if p.get("keywords"):
        lines.append(f"Keywords: {','.join(p['keywords'])}")
    for label, url in (p.get("urls") or {}).items():
        lines.append(f"Project-URL: {label}, {url}")
    for c in p.get("classifiers", []):
        lines.append(f"Classifier: {c}")
    if p.get("requires-python"):
        lines.append(f"Requires-Python: {p['requires-python']}")
    for d in p.get("dependencies", []):
        lines.append(f"Requires-Dist: {d}")
    for extra, deps in (p.get("optional-dependencies") or {}).items():
        lines.append(f"Provides-Extra: {extra}")
        for d in deps:
            req, _, marker = d.partition(";")
            cond = f'({marker.strip()}) and extra == "{extra}"' if marker.strip() else f'extra == "{extra}"'
            lines.append(f"Requires-Dist: {req.strip()} ; {cond}")
    return "\n".join(lines) + "\n"


def _entry_points(doc: dict) -> dict[str, dict[str, str]]:
    p = doc["project"]
    groups: dict[str, dict[str, str]] = {}
    if p.get("scripts"):
        groups["console_scripts"] = dict(p["scripts"])
    if p.get("gui-scripts"):
        groups["gui_scripts"] = dict(p["gui-scripts"])
    for group, eps in (p.get("entry-points") or {}).items():
        groups.setdefault(group, {}).update(eps)
    return groups


def entry_points_txt(groups: dict[str, dict[str, str]]) -> str:
    out = []
    for group, eps in groups.items():
        out.append(f"[{group}]")
        out += [f"{k} = {v}" for k, v in eps.items()]
        out.append("")
    return "\n".join(out)


def script(shebang: str, spec: str, where: str) -> str:
    """pip's console-script wrapper for ``module:attr``."""
    m = _ENTRY_RE.match(spec)
    if not m or not m.group("attr"):
        raise BuildError(f"{where} = {spec!r} is not 'module:function'",
                         'write it as e.g. serve = "myapp.cli:main"')
    module, attr = m.group("module"), m.group("attr")
    return (f"#!{shebang}\n"
            "# -*- coding: utf-8 -*-\n"
            "import re\n"
            "import sys\n"
            f"from {module} import {attr.split('.')[0]}\n"
            "if __name__ == \"__main__\":\n"
            "    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n"
            f"    sys.exit({attr}())\n")


def _record_line(rel: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{rel},sha256={digest},{len(data)}"


def _image_path(host: Path, source_root: Path, workdir: str, what: str, pyproject: Path) -> str:
    try:
        rel = host.resolve().relative_to(source_root.resolve()).as_posix()
    except ValueError:
        raise BuildError(f"{pyproject}: the app's package ({what}) is in {host}, outside image.source "
                         f"({source_root}), so the image would not have its code",
                         "set image.source to the folder that holds the package (the workspace member's folder)") from None
    return workdir.rstrip("/") + ("/" + rel if rel and rel != "." else "")


def entries_for(pyproject: Path, source_root: Path, workdir: str, dest: str, shebang: str) -> ProjectInstall | None:
    """The source-layer entries that install the project of ``pyproject`` in the image, or
    None when it is not a package (no ``[project]``, no build system, ``tool.uv.package = false``)."""
    doc = load_toml(pyproject)
    if not is_packaged(doc):
        return None
    project = doc["project"]
    name = project.get("name")
    if not name:
        raise BuildError(f"{pyproject}: [project] has no name", 'add name = "your-app"')
    project_dir = pyproject.resolve().parent
    roots = import_roots(doc, project_dir)
    roots = [(r, tuple(m for m in mods if _exists(r, m))) for r, mods in roots]
    roots = [(r, mods) for r, mods in roots if mods]
    if not roots:
        mod = _module_name(name)
        raise BuildError(f"{pyproject}: cannot find the code of the package {name!r} "
                         f"(looked for {mod}/ and src/{mod}/ and the build backend's settings)",
                         "declare where it is (e.g. [tool.hatch.build.targets.wheel] packages = [\"src/app\"]), "
                         "or set [tool.uv] package = false if the app is not a package")
    version = version_of(doc, project_dir, roots)
    pythonpath = []
    modules: list[str] = []
    for root, mods in roots:
        path = _image_path(root, source_root, workdir, ", ".join(mods), pyproject)
        if path != workdir.rstrip("/") and path not in pythonpath:
            pythonpath.append(path)
        modules += [m for m in mods if m not in modules]

    dest = dest.strip("/")
    info = f"{_dist_name(name)}-{version}.dist-info"
    groups = _entry_points(doc)
    files: dict[str, bytes] = {}
    scripts = []
    for group in ("console_scripts", "gui_scripts"):
        for script_name, spec in groups.get(group, {}).items():
            where = f"{pyproject.name}: [project.{'scripts' if group == 'console_scripts' else 'gui-scripts'}] {script_name}"
            files[f"bin/{script_name}"] = script(shebang, spec, where).encode()
            scripts.append(script_name)
    try:
        project_url = _image_path(project_dir, source_root, workdir, "its folder", pyproject)
    except BuildError:
        project_url = _image_path(roots[0][0], source_root, workdir, "its folder", pyproject)
    files[f"{info}/METADATA"] = metadata(doc, version).encode()
    files[f"{info}/INSTALLER"] = f"{INSTALLER}\n".encode()
    files[f"{info}/REQUESTED"] = b""
    files[f"{info}/top_level.txt"] = ("\n".join(sorted(modules)) + "\n").encode()
    files[f"{info}/direct_url.json"] = json.dumps({"dir_info": {"editable": True}, "url": f"file://{project_url}"},
                                                  sort_keys=True).encode()
    if groups:
        files[f"{info}/entry_points.txt"] = entry_points_txt(groups).encode()
    record = [_record_line(rel, data) for rel, data in sorted(files.items())] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()

    entries = tuple(Entry(f"{dest}/{rel}", "file", 0o755 if rel.startswith("bin/") else 0o644, data=data)
                    for rel, data in sorted(files.items()))
    return ProjectInstall(name, version, entries, tuple(pythonpath), tuple(scripts), tuple(sorted(modules)))


def entries_for_all(pyprojects: Iterable[Path], source_root: Path, workdir: str, dest: str,
                    shebang: str) -> ProjectInstall | None:
    """The app and the workspace members it depends on, merged (the first is the app)."""
    found = [pi for py in pyprojects if (pi := entries_for(py, source_root, workdir, dest, shebang)) is not None]
    if not found:
        return None
    first = found[0]
    entries, pythonpath, scripts, modules = [], [], [], []
    for pi in found:
        entries += pi.entries
        pythonpath += [p for p in pi.pythonpath if p not in pythonpath]
        scripts += [s for s in pi.scripts if s not in scripts]
        modules += [m for m in pi.modules if m not in modules]
    return ProjectInstall(first.name, first.version, tuple(entries), tuple(pythonpath), tuple(scripts),
                          tuple(sorted(modules)))
