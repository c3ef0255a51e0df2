"""What the builder must know about a base image, and the Python check.

Any Python image may be a base: ferry's own (assembled from Debian packages, with labels and
annotations saying what it is), an official ``python:3.x-slim`` mirrored to the team's
registry, distroless. The facts come first from the image config (labels, ``PYTHON_VERSION``,
``PATH``, the entrypoint), and, when those do not tell, from the base's own files
(``/etc/os-release``, ``/var/lib/dpkg/status`` or distroless' ``status.d``), which the builder
reads from the base's unpacked tree (``trees.py``) only when it must.

The "bases" helper is adding ``ferry/images/baseinfo.py`` with the same shape
(``from_config``, ``with_files``, ``parse_dpkg_status``, ``check_python``); the builder calls
only the functions below, so swapping this module for that one is one import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from ..errors import BuildError
from .debian import parse_control, upstream_version

LABEL_SUITE = "dev.ferry.debian.suite"
LABEL_PYTHON = "dev.ferry.python"  # a version ("3.11.2"), or (older images) the interpreter's path
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
    ferry: bool = False  # assembled by ferry (images/base)
    files_read: bool = False

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
    suite = labels.get(LABEL_SUITE) or annotations.get(LABEL_SUITE)
    python = None
    interpreter = None
    label_python = labels.get(LABEL_PYTHON, "")
    if _VERSION_RE.match(label_python):
        python = label_python
    elif label_python.startswith("/"):
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
    return BaseFacts(suite, python, interpreter, debian, installed, ferry)


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
    if interpreter is None and not any(r["Package"] == "coreutils" for r in installed) and installed:
        # no /usr/bin/env (distroless): the interpreter itself
        for cand in ("usr/bin/python3", "usr/local/bin/python3"):
            if read(cand) is not None:
                interpreter = "/" + cand
                break
    return replace(info, suite=suite, python=python, interpreter=interpreter, debian=debian,
                   installed=installed, files_read=True)


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


def local_base_hint(base: str, minor: str | None) -> str | None:
    """For ferry's local base (127.0.0.1:5000/ferry/python:3.X): the command that makes the one
    for ``minor``."""
    m = _LOCAL_BASE_RE.match(base)
    if not m or not minor:
        return None
    return (f'set image.base = "{m["registry"]}/ferry/python:{minor}" and image.python = "{minor}"; '
            f"`ferry local up --python {minor}` makes that base")


def check_python(requests: Iterable[PythonRequest], base: BaseFacts, base_ref: str) -> list[str]:
    """Fail before anything is resolved when what the app asks for is not the base's Python.
    Returns warnings (the base's Python could not be told)."""
    requests = list(requests)
    if base.python is None:
        asked = next((r.value for r in requests if r.where == "image.python"), "?")
        return [f"cannot tell which Python {base_ref} has (no PYTHON_VERSION, no {LABEL_PYTHON} label, "
                f"no python3.X in its dpkg status): assuming Python {asked} (image.python)"]
    for r in requests:
        if r.accepts(base.python):
            continue
        minor = r.minor()
        other = local_base_hint(base_ref, minor) or (
            f"use a base with Python {minor} (e.g. python:{minor}-slim mirrored to your registry)" if minor
            else "use a base with a Python it accepts")
        if r.where == "image.python":
            hint = f'set image.python = "{base.python_minor}" to build for the base\'s Python, or {other}'
        else:
            hint = f"{other}, or change {r.where}"
        raise BuildError(f"{r.where} asks for Python {r.value}, but the base image {base_ref} has Python {base.python}",
                         hint)
    return []
