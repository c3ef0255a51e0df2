"""What the builder must know about a base image, and the Python check.

Any Python image may be a base: ferry's own (assembled from Debian packages, with labels and
annotations saying what it is), an official ``python:3.x-slim`` mirrored to the team's
registry, distroless. The facts come first from the image config (labels, ``PYTHON_VERSION``,
``PATH``, the entrypoint), and, when those do not tell, from the base's own files
(``/etc/os-release``, ``/var/lib/dpkg/status`` or distroless' ``status.d``), which the builder
reads from the base's unpacked tree (``trees.py``) only when it must.

ferry's bases (``baseimage.py``, recipes in ``ferry/assets/base``) say it all in their config:
``dev.ferry.base.suite`` ("trixie"), ``dev.ferry.base.python`` ("3.13.5") and
``dev.ferry.base.interpreter`` ("/usr/bin/python3"), beside the recipe hash; their manifests
list every Debian package (``dev.ferry.debian.packages``). An official ``python:3.x-slim``
says its Python in ``PYTHON_VERSION`` and where it lives in ``PATH`` (``/usr/local/bin``), and
its Debian release and packages in its files (os-release, ``/var/lib/dpkg/status``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from ..errors import BuildError
from .debian import parse_control, upstream_version

# what ferry's bases carry in their config labels (written by baseimage.image_config)
LABEL_BASE_SUITE = "dev.ferry.base.suite"  # the Debian suite: "trixie"
LABEL_BASE_PYTHON = "dev.ferry.base.python"  # the interpreter's version: "3.13.5"
LABEL_BASE_INTERPRETER = "dev.ferry.base.interpreter"  # what console scripts start with
# older and hand-made labels, still read: the suite (also the manifests' annotation of
# ferry's bases), and a version or an interpreter's path
LABEL_SUITE = "dev.ferry.debian.suite"
LABEL_PYTHON = "dev.ferry.python"
LABEL_RECIPE = "dev.ferry.base.recipe"
ANNOTATION_PACKAGES = "dev.ferry.debian.packages"
OCI_VERSION = "org.opencontainers.image.version"

_VERSION_RE = re.compile(r"^3\.\d+(\.\d+)?([a-z]+\d*)?$")
_LOCAL_BASE_RE = re.compile(r"^(?P<registry>(127\.0\.0\.1|localhost)(:\d+)?)/ferry/python:(?P<python>3\.\d+)$")


@dataclass(frozen=True)
class BaseFacts:
    suite: str | None = None  # the Debian suite ("bookworm"); None: not Debian, or not known yet
    python: str | None = None  # "3.11.2"
    interpreter: str | None = None  # the absolute path console scripts should start with
    debian: bool | None = None  # None: not known from the config alone (read the files)
    installed: tuple[dict[str, str], ...] = field(default=(), compare=False)  # dpkg records
    ferry: bool = False  # assembled by ferry (ferry/assets/base recipes)
    files_read: bool = False
    path: tuple[str, ...] = ()  # the config's PATH, where the base's programs are looked for
    python_path: str | None = None  # the python3 the image's PATH finds (read from its files)
    site_packages: str | None = None  # that interpreter's own site directory, when it has one

    @property
    def python_minor(self) -> str | None:
        if not self.python:
            return None
        m = re.match(r"^(3\.\d+)", self.python)
        return m.group(1) if m else None

    def installed_names(self) -> set[str]:
        return {r["Package"] for r in self.installed if "Package" in r}


def _env(config: dict) -> dict[str, str]:
    out = {}
    for item in (config.get("config") or {}).get("Env") or []:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def from_config(config: dict, annotations: dict[str, str] | None = None) -> BaseFacts:
    """The facts an image config (and its manifest's annotations) states. Pure."""
    c = config.get("config") or {}
    labels = c.get("Labels") or {}
    annotations = annotations or {}
    env = _env(config)
    ferry = LABEL_RECIPE in labels or LABEL_RECIPE in annotations
    suite = labels.get(LABEL_BASE_SUITE) or labels.get(LABEL_SUITE) or annotations.get(LABEL_SUITE)
    python = labels[LABEL_BASE_PYTHON] if _VERSION_RE.match(labels.get(LABEL_BASE_PYTHON, "")) else None
    interpreter = labels[LABEL_BASE_INTERPRETER] if labels.get(LABEL_BASE_INTERPRETER, "").startswith("/") else None
    label_python = labels.get(LABEL_PYTHON, "")
    if python is None and _VERSION_RE.match(label_python):
        python = label_python
    elif interpreter is None and label_python.startswith("/"):
        interpreter = label_python
    if python is None and _VERSION_RE.match(env.get("PYTHON_VERSION", "")):
        python = env["PYTHON_VERSION"]  # official images; ferry's base sets it too
    if python is None and ferry and _VERSION_RE.match(labels.get(OCI_VERSION, "")):
        python = labels[OCI_VERSION]
    if interpreter is None:
        if ferry:
            interpreter = "/usr/bin/python3"  # ferry's base has no /usr/bin/env
        else:
            # distroless and the like run their Python directly: ["/usr/bin/python3.11"]
            first = (c.get("Entrypoint") or c.get("Cmd") or [""])[0]
            if first.startswith("/") and re.search(r"/python3(\.\d+)?$", first):
                interpreter = first
    installed: tuple[dict[str, str], ...] = ()
    if ferry and annotations.get(ANNOTATION_PACKAGES):
        installed = tuple({"Package": n, "Version": v}
                          for n, _, v in (p.partition("=") for p in annotations[ANNOTATION_PACKAGES].split(",")) if n)
    debian = True if (suite or ferry) else None
    path = tuple(d for d in env.get("PATH", "").split(":") if d.startswith("/"))
    return BaseFacts(suite, python, interpreter, debian, installed, ferry, path=path)


def find_python(path: tuple[str, ...], read: Callable[[str], bytes | None],
                listdir: Callable[[str], Iterable[str]] | None = None) -> tuple[str | None, str | None]:
    """The ``python3`` the image's PATH finds first (``/usr/local/bin/python3`` in an official
    image, ``/usr/bin/python3`` in a Debian one), and its site directory: an interpreter under
    /usr/local/bin has ``/usr/local/lib/python3.X/site-packages``, Debian's has
    ``/usr/lib/python3/dist-packages``."""
    for d in path or ("/usr/local/bin", "/usr/bin", "/bin"):
        cand = f"{d.rstrip('/')}/python3"
        if read(cand.lstrip("/")) is None:
            continue
        prefix = cand.rsplit("/bin/", 1)[0] if "/bin/" in cand else ""
        site = None
        if listdir is not None:
            lib = f"{prefix}/lib".lstrip("/")
            minors = sorted((n for n in listdir(lib) if re.fullmatch(r"python3\.\d+", n)),
                            key=lambda n: int(n.split(".")[1]))
            for name in reversed(minors):
                for sub in ("site-packages", "dist-packages"):
                    if sub in listdir(f"{lib}/{name}"):
                        site = f"/{lib}/{name}/{sub}"
                        break
                if site:
                    break
            if site is None and "dist-packages" in listdir(f"{lib}/python3"):
                site = f"/{lib}/python3/dist-packages"
        return cand, site
    return None, None


def parse_dpkg_status(text: str) -> tuple[dict[str, str], ...]:
    """The installed packages of a dpkg status file (or the status.d paragraphs joined)."""
    out = []
    for rec in parse_control(text):
        status = rec.get("Status", "install ok installed").split()
        if rec.get("Package") and status[-1:] == ["installed"]:
            out.append(rec)
    return tuple(out)


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip().strip('"').strip("'")
    return out


def with_files(info: BaseFacts, read: Callable[[str], bytes | None],
               listdir: Callable[[str], Iterable[str]] | None = None) -> BaseFacts:
    """Complete the facts from the base's own files: ``read(path)`` returns a file's bytes (a
    path without the leading slash) or None; ``listdir(path)`` the names in a directory."""
    osr = parse_os_release((read("etc/os-release") or read("usr/lib/os-release") or b"").decode("utf-8", "replace"))
    status_text = (read("var/lib/dpkg/status") or b"").decode("utf-8", "replace")
    if listdir is not None:
        parts = [(read(f"var/lib/dpkg/status.d/{n}") or b"").decode("utf-8", "replace")
                 for n in sorted(listdir("var/lib/dpkg/status.d")) if not n.endswith(".md5sums")]
        status_text = "\n\n".join([status_text, *parts])
    installed = parse_dpkg_status(status_text) or info.installed
    like = {osr.get("ID", "")} | set(osr.get("ID_LIKE", "").split())
    debian = bool(installed) or "debian" in like or read("etc/debian_version") is not None
    suite = info.suite or (osr.get("VERSION_CODENAME") or None if debian else None)
    python = info.python
    if python is None:
        versions = sorted((rec["Package"], rec.get("Version", "")) for rec in installed
                          if re.fullmatch(r"python3\.\d+(-minimal)?", rec["Package"]))
        if versions:
            python = upstream_version(versions[-1][1])
    interpreter = info.interpreter
    python_path, site = find_python(info.path, read, listdir)
    if interpreter is None and not any(r["Package"] == "coreutils" for r in installed) and installed:
        # no /usr/bin/env (distroless): the interpreter itself, the one PATH finds
        interpreter = python_path
    return replace(info, suite=suite, python=python, interpreter=interpreter, debian=debian,
                   installed=installed, files_read=True, python_path=python_path, site_packages=site)


# --- the Python check ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PythonRequest:
    """One place that asks for a Python: ``where`` names it in errors."""

    where: str  # "image.python", "pyproject.toml requires-python", ".python-version"
    value: str

    def accepts(self, version: str) -> bool:
        if self.where.endswith("requires-python"):
            from packaging.specifiers import InvalidSpecifier, SpecifierSet
            from packaging.version import InvalidVersion, Version

            try:
                return Version(version) in SpecifierSet(self.value)
            except (InvalidSpecifier, InvalidVersion):
                raise BuildError(f"{self.where}: {self.value!r} is not a version specifier",
                                 'e.g. requires-python = ">=3.11"') from None
        # image.python and .python-version name a minor version (a pinned patch, "3.11.9" from
        # pyenv, still runs on the base's 3.11.x: the wheels are the same)
        want = self.value.strip().removeprefix("cpython-").removeprefix("python").split("-", 1)[0]
        want = ".".join(want.split(".")[:2])
        return version == want or version.startswith(want + ".")

    def minor(self) -> str | None:
        m = re.search(r"3\.\d+", self.value)
        return m.group(0) if m else None


def read_python_version_file(text: str) -> str | None:
    """The first version in a .python-version file (pyenv, uv): comments and blanks skipped."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            return line
    return None


def local_base_python(base: str) -> str | None:
    """"3.X" when ``base`` is ferry's local base 127.0.0.1:5000/ferry/python:3.X, else None."""
    m = _LOCAL_BASE_RE.match(base)
    return m["python"] if m else None


def missing_local_base(base: str) -> tuple[str, str] | None:
    """The error (message, hint) when ferry's local base ``base`` is not in the registry: the
    command that makes it, or the bases ferry can make when it has no recipe for that Python."""
    python = local_base_python(base)
    if python is None:
        return None
    if python not in ferry_pythons():
        return (f"the base image {base} does not exist: ferry has no base for Python {python}",
                f"use one of {', '.join(local_base_ref(base, p) for p in ferry_pythons())} (image.base)")
    command = "ferry local up" if python == _default_python() else f"ferry local up --python {python}"
    return f"the base image {base} (Python {python}) is not in the local registry", f"`{command}` makes it"


def local_base_ref(base: str, python: str) -> str:
    m = _LOCAL_BASE_RE.match(base)
    return f"{m['registry'] if m else '127.0.0.1:5000'}/ferry/python:{python}"


def _default_python() -> str:
    from .baseimage import DEFAULT_PYTHON

    return DEFAULT_PYTHON


def ferry_pythons() -> tuple[str, ...]:
    """The Pythons ferry has a base for (its recipes, ferry/assets/base/python-3.X.toml)."""
    from .baseimage import available_pythons

    return available_pythons()


# CPython minors an official ``python:3.X-slim`` exists for, to name one that fits a foreign base
OFFICIAL_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14")


def fitting(requests: Iterable[PythonRequest], candidates: Iterable[str]) -> list[str]:
    """The minor versions every request accepts (image.python aside: it follows the base). A
    minor fits when one of its releases may: its first or a late patch (">=3.12.3" takes 3.12)."""
    asked = [r for r in requests if r.where != "image.python"]
    return [c for c in candidates if all(any(r.accepts(v) for v in (c + ".0", c + ".99")) for r in asked)]


def local_base_hint(base: str, minor: str | None) -> str | None:
    """For ferry's local base (127.0.0.1:5000/ferry/python:3.X): the setting and the command
    that make the one for ``minor`` (a Python ferry has a recipe for)."""
    m = _LOCAL_BASE_RE.match(base)
    if not m or not minor or minor not in ferry_pythons():
        return None
    return (f'set image.base = "{m["registry"]}/ferry/python:{minor}" and image.python = "{minor}"; '
            f"`ferry local up --python {minor}` makes that base")


def _hint(requests: list[PythonRequest], wrong: PythonRequest, base: BaseFacts, base_ref: str) -> str:
    """Which bases would fit every request, for ferry's local base or any other."""
    m = _LOCAL_BASE_RE.match(base_ref)
    wanted = wrong.minor() if wrong.where == "image.python" else None
    if m:
        fits = [wanted] if wanted in ferry_pythons() else fitting(requests, ferry_pythons())
        if not fits:
            return (f"ferry has bases for Python {', '.join(ferry_pythons())} and none of them fits; "
                    f"set image.base to an image with a Python {wrong.where} accepts")
        if wrong.where == "image.python" and wanted not in ferry_pythons():
            return f"use one of ferry's bases (Python {', '.join(ferry_pythons())}; there is none for {wanted})"
        first = local_base_hint(base_ref, fits[0])
        others = "".join(f", or :{f}" for f in fits[1:])
        return first + (f" (bases that fit: {m['registry']}/ferry/python:{fits[0]}{others})" if others else "")
    fits = [wanted] if wanted else fitting(requests, OFFICIAL_PYTHONS)
    if not fits:
        return "use a base with a Python it accepts"
    newest = fits[-1]
    which = f"Python {' or '.join(fits)}" if len(fits) <= 3 else f"Python {fits[0]} to {fits[-1]}"
    return f"use a base with {which} (e.g. python:{newest}-slim mirrored to your registry)"


def check_python(requests: Iterable[PythonRequest], base: BaseFacts, base_ref: str) -> list[str]:
    """Fail before anything is resolved when what the app asks for is not the base's Python;
    the error names the bases that would fit every request. Returns warnings (the base's
    Python could not be told)."""
    requests = list(requests)
    if base.python is None:
        asked = next((r.value for r in requests if r.where == "image.python"), "?")
        return [f"cannot tell which Python {base_ref} has (no PYTHON_VERSION, no {LABEL_BASE_PYTHON} label, "
                f"no python3.X in its dpkg status): assuming Python {asked} (image.python)"]
    # the files first (requires-python, .python-version): they say what the app needs, and
    # image.python then only has to follow the base that fits them
    for r in sorted(requests, key=lambda r: r.where == "image.python"):
        if r.accepts(base.python):
            continue
        other = _hint(requests, r, base, base_ref)
        if r.where == "image.python":
            hint = f'set image.python = "{base.python_minor}" to build for the base\'s Python, or {other}'
        else:
            hint = f"{other}, or change {r.where}"
        raise BuildError(f"{r.where} asks for Python {r.value}, but the base image {base_ref} has Python {base.python}",
                         hint)
    return []
