"""``ferry init``: a commented ferry.toml for the app in a directory.

Three parts, as everywhere in ferry: ``scan`` reads the few files that tell what the app is
(I/O, bounded), ``detect`` turns those facts into a ``Plan`` (pure: unit-tested on small
fixture trees), ``render`` writes the plan as TOML with comments (pure). ``init`` validates the
text with ferry.config's own parser before writing it, and never overwrites a file.

Detected: Django (manage.py and its settings: gunicorn on the WSGI module, collectstatic as a
build step when STATIC_ROOT is set, migrate as the release command), FastAPI and Starlette
(uvicorn, or ``fastapi run`` when fastapi-cli is a dependency), Flask (gunicorn on the app
factory ``pkg:create_app()`` or the module's ``app``). The Python comes from requires-python,
.python-version and uv.lock; the dependencies from uv.lock, pylock.toml, requirements.txt or
pyproject.toml, in that order.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError

# ferry's bases on the local target (images/base); 3.14 is Debian testing (forky)
BASE_PYTHONS = ("3.11", "3.13", "3.14")
TESTING_PYTHONS = ("3.14",)
REGISTRY = "127.0.0.1:5000"

_PRUNE = {".git", ".hg", ".venv", "venv", "env", ".env", "node_modules", "__pycache__", ".tox", ".nox",
          ".mypy_cache", ".pytest_cache", ".ruff_cache", "dist", "build", ".ferry", "site-packages",
          "htmlcov", ".idea", ".vscode", "migrations", "staticfiles", "media"}
_MAX_DEPTH = 4
_MAX_FILES = 5000
_MAX_TEXT = 512 * 1024
_READ_NAMES = {"manage.py", "pyproject.toml", "uv.lock", ".python-version", "poetry.lock", "Pipfile"}


@dataclass(frozen=True)
class Facts:
    """What ``scan`` saw: the directory's name, its files (relative, POSIX) and the text of
    those detection reads (Python files near the top, dependency and version files)."""

    name: str
    files: tuple[str, ...]
    texts: dict[str, str] = field(default_factory=dict)

    def text(self, path: str) -> str | None:
        return self.texts.get(path)


@dataclass(frozen=True)
class Plan:
    """What ``ferry init`` will write: every value ferry.toml gets, and why."""

    framework: str  # django, fastapi, starlette, flask
    name: str
    python: str
    python_why: str
    source: str
    requirements: str
    requirements_why: str
    entrypoint: tuple[str, ...]
    health_path: str
    build: tuple[tuple[str, ...], ...] = ()
    build_env: dict[str, str] = field(default_factory=dict)
    release_command: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the user still has to do before the first release
    package: str | None = None  # a uv workspace's member that is the app (image.package)
    packages: tuple[tuple[str, str], ...] = ()  # (Debian package, the dependency that needs it)

    @property
    def base(self) -> str:
        return f"{REGISTRY}/ferry/python:{self.python}"

    def to_json(self) -> dict:
        d = asdict(self)
        d["base"] = self.base
        return d


# --- scan (I/O) ------------------------------------------------------------------------------

def _wanted(rel: str, depth: int) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if name in _READ_NAMES or (name.startswith("requirements") and name.endswith(".txt")):
        return True
    if rel.startswith("requirements/") and name.endswith(".txt"):
        return True
    if name.startswith("pylock.") and name.endswith(".toml"):
        return True
    return name.endswith(".py") and depth <= 3


def scan(root: Path) -> Facts:
    """The directory's files (bounded in depth and count, build/virtualenv/VCS folders pruned)
    and the text of those ``detect`` reads."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory", "run ferry init in the app's directory, or name it")
    files: list[str] = []
    texts: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        depth = 0 if rel_dir == "." else rel_dir.count("/") + 1
        dirnames[:] = sorted(d for d in dirnames if d not in _PRUNE and not d.endswith(".egg-info")
                             and depth < _MAX_DEPTH)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            files.append(rel)
            if _wanted(rel, depth):
                p = Path(dirpath) / name
                try:
                    if p.stat().st_size <= _MAX_TEXT:
                        texts[rel] = p.read_text(errors="replace")
                except OSError:
                    pass
            if len(files) >= _MAX_FILES:
                break
        if len(files) >= _MAX_FILES:
            break
    return Facts(name=root.resolve().name, files=tuple(files), texts=texts)


# --- detect (pure) ---------------------------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _toml(facts: Facts, path: str) -> dict:
    text = facts.text(path)
    if text is None:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}", "fix it first: ferry reads it to build the image") from None


def _requirement_lines(facts: Facts, path: str, seen: set[str] | None = None) -> list[str]:
    """A requirements file's requirement lines, following -r/-c into files ``scan`` read."""
    seen = seen if seen is not None else set()
    if path in seen or facts.text(path) is None:
        return []
    seen.add(path)
    out: list[str] = []
    base = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    for raw in facts.text(path).splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(-r|--requirement)\s*=?\s*(\S+)", line)
        if m:
            out += _requirement_lines(facts, os.path.normpath(base + m.group(2)), seen)
            continue
        if line.startswith("-"):
            continue
        out.append(line.split(";", 1)[0].split("--hash", 1)[0].strip().rstrip("\\").strip())
    return out


def _parse_requirement(spec: str) -> tuple[str, set[str]] | None:
    """(normalised name, extras) of a PEP 508 string; None for what is not one (a URL, a path)."""
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[([^\]]*)\])?", spec)
    if not m:
        return None
    extras = {_norm(e.strip()) for e in (m.group(3) or "").split(",") if e.strip()}
    return _norm(m.group(1)), extras


@dataclass(frozen=True)
class Dependencies:
    file: str  # what image.requirements names
    why: str
    names: frozenset[str]  # normalised distribution names (a lock: everything it installs)
    extras: dict[str, frozenset[str]] = field(default_factory=dict)
    requires_python: str | None = None  # the lock's own, when it has one
    workspace: tuple[str, ...] = ()  # a uv workspace's member globs ([tool.uv.workspace] members)


def dependencies(facts: Facts) -> Dependencies:
    """Which file decides the dependency layer, and what it installs."""
    project = _toml(facts, "pyproject.toml")
    declared = list((project.get("project") or {}).get("dependencies") or [])

    def from_specs(specs: list[str]) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
        names, extras = set(), {}
        for s in specs:
            r = _parse_requirement(s)
            if r:
                names.add(r[0])
                extras[r[0]] = frozenset(extras.get(r[0], frozenset()) | r[1])
        return frozenset(names), extras

    if "uv.lock" in facts.files and "pyproject.toml" in facts.files:
        workspace = ((project.get("tool") or {}).get("uv") or {}).get("workspace") or {}
        lock = _toml(facts, "uv.lock")
        names = frozenset(_norm(p["name"]) for p in lock.get("package") or [] if p.get("name"))
        _, extras = from_specs(declared)
        for p in lock.get("package") or []:
            # a workspace member's own fastapi[standard] is in the lock's dependency lists
            for d in p.get("dependencies") or []:
                if d.get("name") and d.get("extra"):
                    extras[_norm(d["name"])] = frozenset(extras.get(_norm(d["name"]), frozenset()) | {_norm(e) for e in d["extra"]})
        why = "pyproject.toml with uv.lock: the lock, as `uv sync --frozen --no-dev` installs it"
        if workspace:
            why = "the uv workspace's pyproject.toml and uv.lock, for the member image.package names"
        return Dependencies("pyproject.toml", why, names, extras, lock.get("requires-python"),
                            tuple(workspace.get("members") or ()))
    pylocks = sorted(f for f in facts.files if "/" not in f and re.match(r"^pylock\.([\w-]+\.)?toml$", f))
    if pylocks:
        lock = _toml(facts, pylocks[0])
        names = frozenset(_norm(p["name"]) for p in lock.get("packages") or [] if p.get("name"))
        return Dependencies(pylocks[0], f"{pylocks[0]} (PEP 751): its files and hashes", names, {},
                            lock.get("requires-python"))
    for candidate in ("requirements.txt", "requirements/production.txt", "requirements/prod.txt",
                      "requirements/base.txt", "requirements/requirements.txt"):
        if candidate in facts.texts:
            names, extras = from_specs(_requirement_lines(facts, candidate))
            return Dependencies(candidate, f"{candidate}: its lines (pin every version for a reproducible layer)",
                                names, extras)
    if declared:
        names, extras = from_specs(declared)
        return Dependencies("pyproject.toml", "pyproject.toml [project] dependencies, resolved at each build "
                            "(not reproducible: `uv lock` makes a uv.lock ferry uses instead)", names, extras)
    if "poetry.lock" in facts.files or (project.get("tool") or {}).get("poetry"):
        raise ConfigError("only Poetry's files declare the dependencies, and ferry does not read poetry.lock",
                          "export them: poetry export -f requirements.txt -o requirements.txt, then run ferry init again")
    raise ConfigError("no requirements.txt, uv.lock, pylock.toml or pyproject.toml [project] dependencies found",
                      "ferry init needs the app's dependencies: write a requirements.txt (with the web server) first")


def _minor(version: str) -> tuple[int, int] | None:
    m = re.search(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def choose_python(facts: Facts, deps: Dependencies, bases: tuple[str, ...] = BASE_PYTHONS) -> tuple[str, str]:
    """(the base's Python, why): the oldest stable base every constraint accepts, which is what
    ``ferry local up`` builds by default for 3.11; Debian testing's only when nothing else fits."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    asks: list[tuple[str, str]] = []  # (who, constraint) for the message
    candidates = list(bases)
    project = _toml(facts, "pyproject.toml")
    for who, spec in (("pyproject.toml requires-python", (project.get("project") or {}).get("requires-python")),
                      (f"{deps.file}'s requires-python", deps.requires_python)):
        if not spec:
            continue
        try:
            s = SpecifierSet(spec)
        except InvalidSpecifier:
            raise ConfigError(f"{who}: {spec!r} is not a version specifier", 'e.g. requires-python = ">=3.11"') from None
        asks.append((who, spec))
        candidates = [v for v in candidates if s.contains(v, prereleases=True)]
    pinned = (facts.text(".python-version") or "").strip().splitlines()
    pinned_line = next((line.strip() for line in pinned if line.strip() and not line.startswith("#")), "")
    allowed = list(candidates)  # what requires-python leaves, before .python-version's pin
    if pinned_line:
        mm = _minor(pinned_line)
        if mm:
            asks.append((".python-version", pinned_line))
            candidates = [v for v in candidates if _minor(v) == mm]
    if not candidates:
        said = "; ".join(f"{who} {what!r}" for who, what in asks)
        if allowed and pinned_line:
            # uv init pins 3.12, which Debian (so ferry's bases) does not ship
            hint = (f"set .python-version to {allowed[0]} (the build's Python check reads it too), "
                    "or write image.base for a python image of yours by hand")
        else:
            hint = "widen the constraint to one of them, or write image.base for a python image of yours by hand"
        raise ConfigError(f"no ferry base has a Python that {said} accepts (bases: {', '.join(bases)})", hint)
    stable = [v for v in candidates if v not in TESTING_PYTHONS]
    chosen = (stable or candidates)[0]
    why = ", ".join(f"{who} {what}" for who, what in asks) or "nothing asks for a version: ferry's default base"
    return chosen, why


def _module_of(path: str) -> tuple[str, str]:
    """('src', 'pkg.main') for src/pkg/main.py; ('', 'app.main') for app/main.py."""
    root = ""
    if path.startswith("src/"):
        root, path = "src", path[len("src/"):]
    mod = path[: -len(".py")].replace("/", ".")
    if mod.endswith(".__init__"):
        mod = mod[: -len(".__init__")]
    return root, mod


def _python_files(facts: Facts, under: str = "") -> list[str]:
    """Python files read by scan, shallowest first, tests left out."""
    out = [p for p in facts.texts if p.endswith(".py") and p.startswith(under)
           and not re.search(r"(^|/)(tests?|docs?|examples?|scripts?)/|(^|/)(test_[^/]*|[^/]*_test|conftest|setup)\.py$", p)]
    return sorted(out, key=lambda p: (p.count("/"), p))


_HEALTH_PATH = r"""["'](/?[\w/-]*?(?:healthz?|ping|livez?|readyz?|status)[\w-]*/?)["']"""


def _health(text: str, default: str, owner: str | None = None) -> str:
    """A health-like URL the app itself serves. Only routes whose full path is certain count:
    ``@<app>.get(...)`` on the application object (a router's or blueprint's has a prefix
    elsewhere) or ``path(...)`` in Django's root URLconf."""
    if owner:
        pattern = rf"@{re.escape(owner)}\.(?:get|route|api_route|head)\(\s*{_HEALTH_PATH}"
    else:
        pattern = rf"\b(?:re_)?path\(\s*{_HEALTH_PATH}"
    m = re.search(pattern, text)
    if not m:
        return default
    path = m.group(1)
    return path if path.startswith("/") else "/" + path


def _placeholder(name: str) -> str:
    """A value for a setting the build's collectstatic needs present but never uses for real:
    URLs parse (django-environ's env.db, env.cache), secrets are plainly fake."""
    if name.endswith("URL"):
        if "DATABASE" in name or name.startswith("DB"):
            return "sqlite:////tmp/ferry-build.sqlite3"
        if "REDIS" in name or "BROKER" in name or "CACHE" in name:
            return "redis://127.0.0.1:6379/0"
        return "http://127.0.0.1/"
    return "ferry-build-only"


# settings read at import without a default: os.environ["X"], django-environ's env("X") / env.db("X")
_REQUIRED_ENV_RES = (re.compile(r"""os\.environ\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]"""),
                     re.compile(r"""\benv(?:\.\w+)?\(\s*["']([A-Z_][A-Z0-9_]*)["']\s*\)"""))


def _server_note(deps: Dependencies, dist: str, why: str) -> tuple[str, ...]:
    if dist in deps.names:
        return ()
    return (f"add {dist} to {deps.file}: {why}; without it the build stops at the entrypoint check",)


def _django(facts: Facts, deps: Dependencies, manage: str) -> dict:
    source = manage.rsplit("/", 1)[0] if "/" in manage else "."
    prefix = "" if source == "." else source + "/"
    m = re.search(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']""", facts.text(manage) or "")
    if not m:
        raise ConfigError(f"{manage}: no DJANGO_SETTINGS_MODULE default in it",
                          "set it as django-admin startproject does: os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"mysite.settings\")")
    settings = m.group(1)
    notes: list[str] = []
    # cookiecutter-django and others default manage.py to their local settings: deploy production's
    head, _, leaf = settings.rpartition(".")
    if head and leaf in ("local", "dev", "development", "settings_local"):
        for prod in ("production", "prod"):
            if f"{prefix}{head.replace('.', '/')}/{prod}.py" in facts.files:
                notes.append(f"manage.py defaults to {settings}; the image uses {head}.{prod}")
                settings = f"{head}.{prod}"
                break
    rel = prefix + settings.replace(".", "/")
    settings_files = [p for p in facts.texts if p == rel + ".py" or p.startswith(rel + "/")]
    # a settings module that imports from its siblings (base.py, components/): read the package
    pkg = rel.rsplit("/", 1)[0] + "/" if "/" in rel else prefix
    texts = "\n".join(facts.texts[p] for p in sorted(set(settings_files) | {p for p in facts.texts if p.startswith(pkg) and p.endswith(".py") and "settings" in p}))
    if not settings_files:
        raise ConfigError(f"{manage} names the settings module {settings}, but {rel}.py is not there",
                          "run ferry init in the project's directory (the one with manage.py and the settings)")
    w = re.search(r"""WSGI_APPLICATION\s*=\s*["']([\w.]+)["']""", texts)
    if w:
        mod, _, attr = w.group(1).rpartition(".")
    else:
        mod, attr = settings.split(".")[0] + ".wsgi", "application"
    if prefix + mod.replace(".", "/") + ".py" not in facts.files:
        raise ConfigError(f"the WSGI module {mod} ({prefix}{mod.replace('.', '/')}.py) is not there",
                          "set WSGI_APPLICATION in the settings, or add the wsgi.py startproject writes")
    notes += _server_note(deps, "gunicorn", "it serves the WSGI application")
    build: tuple[tuple[str, ...], ...] = ()
    if "STATIC_ROOT" in texts:
        build = (("python3", "manage.py", "collectstatic", "--noinput"),)
    else:
        notes.append("the settings have no STATIC_ROOT, so collectstatic is not a build step: set STATIC_ROOT "
                     "and add build = [[\"python3\", \"manage.py\", \"collectstatic\", \"--noinput\"]]")
    required = sorted({n for r in _REQUIRED_ENV_RES for n in r.findall(texts)} - {"DJANGO_SETTINGS_MODULE"})
    build_env = {"DJANGO_SETTINGS_MODULE": settings}
    if build:
        # the settings read these at import: collectstatic needs a value, not the real secret
        build_env.update({k: _placeholder(k) for k in required})
    notes.append("ALLOWED_HOSTS must accept 127.0.0.1 (ferry's health check) and app.domain")
    admin = "django.contrib.admin" in texts
    u = re.search(r"""ROOT_URLCONF\s*=\s*["']([\w.]+)["']""", texts)
    urls = facts.text(prefix + u.group(1).replace(".", "/") + ".py") if u else None
    return {
        "framework": "django", "source": source,
        "entrypoint": ("gunicorn", "--bind", "127.0.0.1:{port}", f"{mod}:{attr}"),
        "health_path": _health(urls or "", "/admin/login/" if admin else "/"),
        "build": build, "build_env": build_env,
        "release_command": ("python3", "manage.py", "migrate", "--noinput"),
        "secrets": tuple(required), "notes": tuple(notes),
    }


_APP_RE = {
    "fastapi": re.compile(r"^(\w+)\s*(?::\s*[\w.]+\s*)?=\s*(?:fastapi\.)?FastAPI\(", re.M),
    "starlette": re.compile(r"^(\w+)\s*(?::\s*[\w.]+\s*)?=\s*(?:starlette\.applications\.)?Starlette\(", re.M),
    "flask": re.compile(r"^(\w+)\s*(?::\s*[\w.]+\s*)?=\s*(?:flask\.)?Flask\(", re.M),
}
_FACTORY_RE = re.compile(r"^def (create_app|make_app|app_factory)\(", re.M)


def _find_app(facts: Facts, framework: str) -> tuple[str, str, bool] | None:
    """(file, attribute, is_factory) of the framework's application object, preferring
    module-level instances in main.py/app.py near the top, then an app factory."""
    files = _python_files(facts)
    favoured = sorted(files, key=lambda p: (p.count("/"), p.rsplit("/", 1)[-1] not in ("main.py", "app.py", "__init__.py", "asgi.py", "wsgi.py"), p))
    mark = {"fastapi": "FastAPI", "starlette": "Starlette", "flask": "Flask"}[framework]
    imports = re.compile(rf"^\s*(from\s+{framework}(\.\w+)*\s+import|import\s+{framework})", re.M)
    if framework == "flask":
        # the factory pattern of Flask's tutorial: a package whose __init__.py has create_app()
        for p in favoured:
            t = facts.texts[p]
            f = _FACTORY_RE.search(t)
            if f and mark in t and imports.search(t):
                return p, f.group(1), True
    for p in favoured:
        t = facts.texts[p]
        m = _APP_RE[framework].search(t)
        if m and imports.search(t):
            return p, m.group(1), False
    for p in favoured:
        t = facts.texts[p]
        f = _FACTORY_RE.search(t)
        if f and mark in t and imports.search(t):
            return p, f.group(1), True
    return None


def _asgi(facts: Facts, deps: Dependencies, framework: str, found: tuple[str, str, bool]) -> dict:
    path, attr, factory = found
    root, mod = _module_of(path)
    cli = framework == "fastapi" and ("fastapi-cli" in deps.names or "standard" in deps.extras.get("fastapi", ()))
    if cli and not factory and attr == "app" and not root:
        entrypoint: tuple[str, ...] = ("fastapi", "run", path, "--host", "127.0.0.1", "--port", "{port}")
        notes: tuple[str, ...] = ()
    else:
        entrypoint = ("uvicorn", *(("--factory",) if factory else ()), f"{mod}:{attr}",
                      *(("--app-dir", root) if root else ()), "--host", "127.0.0.1", "--port", "{port}")
        notes = _server_note(deps, "uvicorn", "it serves the ASGI application") if "standard" not in deps.extras.get("fastapi", ()) else ()
    default = "/"
    if framework == "fastapi":
        default = "/openapi.json" if re.search(r"docs_url\s*=\s*None", facts.texts[path]) else "/docs"
        if re.search(r"openapi_url\s*=\s*None", facts.texts[path]):
            default = "/"
    return {"framework": framework, "source": ".", "entrypoint": entrypoint,
            "health_path": _health(facts.texts[path], default, "app" if factory else attr), "notes": notes}


def _flask(facts: Facts, deps: Dependencies, found: tuple[str, str, bool]) -> dict:
    path, attr, factory = found
    root, mod = _module_of(path)
    spec = f"{mod}:{attr}()" if factory else f"{mod}:{attr}"
    entrypoint = ("gunicorn", *(("--pythonpath", root) if root else ()), "--bind", "127.0.0.1:{port}", spec)
    return {"framework": "flask", "source": ".", "entrypoint": entrypoint,
            "health_path": _health(facts.texts[path], "/", "app" if factory else attr),
            "notes": _server_note(deps, "gunicorn", "it serves the WSGI application")}


# Debian packages a dependency loads at run time but its wheels do not bundle; names that are
# the same in bookworm, trixie and forky (the t64 renames left these alone)
_SYSTEM_NEEDS = (
    ("pdf2image", "poppler-utils", ()),
    ("pydub", "ffmpeg", ()),
    ("ffmpeg-python", "ffmpeg", ()),
    ("moviepy", "ffmpeg", ("imageio-ffmpeg",)),
)


def system_packages(deps: Dependencies) -> tuple[tuple[str, str], ...]:
    """(Debian package, why) for the dependencies that run a system program or load a
    library by name."""
    out: dict[str, str] = {}
    for dist, deb, unless in _SYSTEM_NEEDS:
        if dist in deps.names and not any(u in deps.names for u in unless):
            out.setdefault(deb, dist)
    if _plain_psycopg(deps):
        out.setdefault("libpq5", "psycopg")
    return tuple(sorted(out.items()))


def _plain_psycopg(deps: Dependencies) -> bool:
    """psycopg 3 without its binary: the pure-Python build loads libpq, found by
    ctypes.util.find_library in the image's /etc/ld.so.cache (the packages layer's)."""
    return "psycopg" in deps.names and not {"psycopg-binary", "psycopg-c"} & deps.names \
        and not deps.extras.get("psycopg", frozenset()) & {"binary", "c"}


def _name(facts: Facts) -> str:
    project = _toml(facts, "pyproject.toml").get("project") or {}
    raw = project.get("name") or facts.name
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:40].strip("-")
    return name if name and name[0].isalnum() else "app"


def _app(facts: Facts, deps: Dependencies) -> dict | None:
    """The framework's parts of the plan for the app whose files ``facts`` holds, or None."""
    manages = sorted((f for f in facts.files if f.rsplit("/", 1)[-1] == "manage.py" and f.count("/") <= 2
                      and "django" in (facts.text(f) or "").lower()), key=lambda p: (p.count("/"), p))
    if manages:
        return _django(facts, deps, manages[0])
    for framework in ("fastapi", "starlette", "flask"):
        found = _find_app(facts, framework)
        if found:
            return _flask(facts, deps, found) if framework == "flask" else _asgi(facts, deps, framework, found)
    return None


def _within(facts: Facts, folder: str) -> Facts:
    """The facts of a sub-folder, its paths relative to it (a uv workspace's member)."""
    pre = folder.rstrip("/") + "/"
    return Facts(name=folder.rsplit("/", 1)[-1], files=tuple(f[len(pre):] for f in facts.files if f.startswith(pre)),
                 texts={p[len(pre):]: t for p, t in facts.texts.items() if p.startswith(pre)})


def _members(facts: Facts, globs: tuple[str, ...]) -> list[str]:
    """The workspace's member folders: those matching a members glob that have a pyproject.toml."""
    from fnmatch import fnmatch

    dirs = sorted({f.rsplit("/", 1)[0] for f in facts.files if f.endswith("/pyproject.toml")})
    return [d for d in dirs if any(fnmatch(d, g.strip("/")) for g in globs)]


def detect(facts: Facts) -> Plan:
    """The plan for the app ``facts`` describe (pure)."""
    deps = dependencies(facts)
    python, python_why = choose_python(facts, deps)
    parts, package = None, None
    if deps.workspace:
        # the FastAPI full-stack template's layout: the root holds uv.lock, the app is a member
        found = [(m, p) for m in _members(facts, deps.workspace) if (p := _app(_within(facts, m), deps))]
        if len(found) > 1:
            raise ConfigError(f"the uv workspace has web apps in several members ({', '.join(m for m, _ in found)})",
                              "run ferry init in one app's setup by hand: image.source and image.package (README: uv workspaces)")
        if found:
            member, parts = found[0]
            sub = _within(facts, member)
            package = (_toml(sub, "pyproject.toml").get("project") or {}).get("name")
            if not package:
                raise ConfigError(f"{member}/pyproject.toml: no [project] name", "name the member: image.package needs it")
            parts = {**parts, "source": member if parts["source"] == "." else f"{member}/{parts['source']}"}
    if parts is None:
        parts = _app(facts, deps)
    if parts is None:
        raise ConfigError(f"no Django, FastAPI, Starlette or Flask application found in {facts.name}",
                          "run ferry init in the app's directory, or write ferry.toml by hand (README: Configuration)")
    return Plan(name=_name(facts), python=python, python_why=python_why, requirements=deps.file,
                requirements_why=deps.why, package=package, packages=system_packages(deps),
                **parts)


# --- render (pure) ---------------------------------------------------------------------------

def _v(value) -> str:
    """A TOML value: JSON's strings, arrays and numbers are TOML's; tables inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_v(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_v(v) for v in value) + "]"
    return json.dumps(value)


def render(plan: Plan, local=None) -> str:
    """ferry.toml for ``plan``, on the local target (``ferry local up``), every choice explained."""
    from .config import LocalConfig

    s = local or LocalConfig()
    others = [v for v in BASE_PYTHONS if v != plan.python]
    lines = [
        f"# ferry.toml, written by `ferry init` for a {plan.framework} app. Every key is checked before",
        "# anything is built or contacted; README.md lists them all. Edit freely: ferry init never",
        "# touches this file again.",
        "",
        "[app]",
        f"name = {_v(plan.name)}",
        "# the name users reach (needed for [tls])",
        '# domain = "app.example.com"',
        "",
        "[image]",
        "# where `ferry build --push` sends the image (your ECR repository in production)",
        f"repository = {_v(f'{REGISTRY}/{plan.name}')}",
        f"# ferry's base on the local target; {', '.join(others)}: `ferry local up --python {','.join(others)}`",
        f"base = {_v(plan.base)}",
        f"# {plan.python_why}",
        f"python = {_v(plan.python)}",
        "# this folder becomes /app in the image",
        f"source = {_v(plan.source)}",
        f"# {plan.requirements_why}",
        f"requirements = {_v(plan.requirements)}",
        *([f"package = {_v(plan.package)}"] if plan.package else []),
        "# {port} is each colour's own port, put there when the container starts (the image has",
        "# image.port there); 127.0.0.1: containers share the host's network and nginx proxies to them",
        f"entrypoint = {_v(plan.entrypoint)}",
    ]
    if plan.packages:
        lines += ["# Debian packages in one layer under the dependencies: " + ", ".join(f"{d} for {why}" for d, why in plan.packages),
                  f"packages = {_v([d for d, _ in plan.packages])}"]
    if plan.build:
        lines += ["# run in a sandbox over the built image, no network; what they write is one more layer",
                  f"build = {_v(plan.build)}"]
    if plan.build_env:
        lines += [f"build_env = {_v(plan.build_env)}"]
    lines += [
        "",
        "[deploy]",
        "# the local target (`ferry local up`); on AWS: stack = \"dev\" and ssh_key (README: On AWS)",
        f"hosts = [\"root@127.0.0.1:{s.ssh_port}\"]",
        f"ssh_key = {_v(f'{s.state_dir}/ssh/id_ed25519')}",
        f"docker_host = {_v(f'unix://{s.state_dir}/docker.sock')}",
        f"nginx_conf = {_v(f'{s.state_dir}/nginx/nginx.conf')}",
        "# must answer 200 on 127.0.0.1 without a login (or a database, for the first release)",
        f"health = {{ path = {_v(plan.health_path)} }}",
    ]
    if plan.release_command:
        lines += ["# runs once per release, before traffic moves (a failure leaves the live release serving)",
                  f"release_command = {_v(plan.release_command)}"]
    if plan.secrets:
        lines += ["# the settings read these from the environment: set them where ferry runs, or in env_file",
                  f"secrets = {_v(plan.secrets)}"]
    lines += [
        "",
        "[proxy]",
        "# nginx answers here on the local target; a real host: listen = \"0.0.0.0\", http_port = 80",
        'listen = "127.0.0.1"',
        "http_port = 8090",
        "https_port = 8453",
    ]
    if plan.notes:
        lines += ["", "# Before the first release:"] + [f"# - {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"


# --- init (I/O) ------------------------------------------------------------------------------

def init(directory: Path | str = ".") -> dict:
    """Write ``<directory>/ferry.toml`` for the app there. Refuses to overwrite anything; the
    text is checked with ferry.config's parser before a byte is written."""
    from .config import load, parse

    root = Path(directory).absolute()
    target = root / "ferry.toml"
    if target.exists():
        raise ConfigError(f"{target} already exists: ferry init never overwrites a file",
                          "edit it, or move it away and run ferry init again")
    plan = detect(scan(root))
    text = render(plan)
    try:
        parse(tomllib.loads(text), target)
    except ConfigError as e:  # a bug in init, not in the app: say so
        raise ConfigError(f"ferry init made a ferry.toml its own checks refuse: {e.message}",
                          "nothing was written; please report this with the app's layout") from None
    try:
        with open(target, "x") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigError(f"{target} appeared while ferry init ran: not overwritten", "run ferry init again") from None
    load(target)
    return {"ok": True, "path": str(target), "plan": plan.to_json()}


def register(main) -> None:
    import click

    from .cli import Context, command, emit

    @command(main, "init", help="""Write a commented ferry.toml for the app in DIR (default: here).

    \b
    Detects Django (gunicorn on the WSGI module, collectstatic, migrate), FastAPI or
    Starlette (uvicorn, or `fastapi run`), Flask (gunicorn on create_app() or app);
    the Python from requires-python / .python-version; the dependencies from uv.lock,
    pylock.toml, requirements.txt or pyproject.toml. Never overwrites a file.

    \b
    Examples:
      ferry init                 # ./ferry.toml for the app here
      ferry init ~/src/flaskr --json
    """)
    @click.argument("directory", default=".", type=click.Path(file_okay=False))
    def init_cmd(ctx: Context, directory: str) -> None:
        r = init(directory)

        def text(r: dict) -> str:
            p = r["plan"]
            out = [f"wrote {r['path']}: {p['framework']} app {p['name']!r}, Python {p['python']}, "
                   f"{p['requirements']}", f"  entrypoint: {' '.join(p['entrypoint'])}"]
            out += [f"  before the first release: {n}" for n in p["notes"]]
            return "\n".join(out)

        emit(ctx, r, text)
