"""PEP 751 lock files (``pylock.toml``): what to install for the *image's* platform.

Every lock ferry installs goes through here: a ``pylock.toml`` the app ships (``uv export
--format pylock.toml``, ``pip lock``), a ``uv.lock`` exported to one, and a requirements file
that names a package published only as an sdist (``uv pip compile --format pylock.toml``).
Selection is PEP 751's (``packaging.pylock``) evaluated for the image, not for the build
machine: markers with the image's ``sys_platform``/``platform_machine``/Python, wheel tags
``cp311-cp311-manylinux_2_28_x86_64`` down to ``py3-none-any``. The result names, per
package, the one wheel to install, or the sdist to build into a pure-Python wheel
(``sdist.py``); ferry writes that choice back as a small lock with exactly one wheel per
package, and uv installs it, checking every hash.

Why not ``uv pip install -r pylock.toml`` directly: a lock for another platform, or a package
with no wheel at all, is then named (all of them, with the wheels the lock has) before anything
is downloaded, and an sdist becomes a wheel built once and cached by its hash.

Pure: no network, no subprocess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import BuildError

NAME_RE = re.compile(r"^pylock\.([^.]+\.)?toml$")
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_LEGACY_ARCHES = {"manylinux2014": ("x86_64", "aarch64", "i686", "ppc64le", "s390x", "armv7l"),
                  "manylinux2010": ("x86_64", "i686"), "manylinux1": ("x86_64", "i686")}


def is_pylock(path: Path) -> bool:
    return bool(NAME_RE.match(path.name))


@dataclass(frozen=True)
class Target:
    """The environment the image's Python runs in."""

    python: str  # "3.11" (or "3.11.2")
    arch: str  # "x86_64" | "aarch64"
    manylinux: str = "manylinux_2_28"

    @property
    def full_version(self) -> str:
        parts = self.python.split(".")
        return ".".join(parts + ["0"] * (3 - len(parts)))

    @property
    def cp(self) -> str:
        major, minor = self.python.split(".")[:2]
        return f"cp{major}{minor}"

    def describe(self) -> str:
        return f"CPython {self.python}, {self.manylinux}_{self.arch} wheels"

    def environment(self) -> dict[str, str]:
        """PEP 508 marker variables for the image (what ``packaging.markers.default_environment``
        would say inside it)."""
        return {
            "implementation_name": "cpython",
            "implementation_version": self.full_version,
            "os_name": "posix",
            "platform_machine": self.arch,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": self.full_version,
            "python_version": ".".join(self.python.split(".")[:2]),
            "sys_platform": "linux",
        }

    def platforms(self) -> list[str]:
        """manylinux platform tags the image accepts, most specific first (glibc N down to 2.5)."""
        newest = int(self.manylinux.rsplit("_", 1)[-1])
        out = []
        for minor in range(newest, 4, -1):
            out.append(f"manylinux_2_{minor}_{self.arch}")
            legacy = _LEGACY_MANYLINUX.get(minor)
            if legacy and self.arch in _LEGACY_ARCHES[legacy]:
                out.append(f"{legacy}_{self.arch}")
        return out

    def tags(self):
        """Wheel tags in priority order, as an installer running in the image would rank them."""
        from packaging.tags import compatible_tags, cpython_tags

        major, minor = (int(x) for x in self.python.split(".")[:2])
        plats = self.platforms()
        return [*cpython_tags((major, minor), abis=[self.cp], platforms=plats),
                *compatible_tags((major, minor), interpreter=self.cp, platforms=plats)]


@dataclass(frozen=True)
class Pick:
    """One file chosen for one package."""

    name: str
    version: str
    kind: str  # "wheel" | "sdist"
    filename: str
    url: str | None = None
    path: str | None = None  # as written in the lock (relative to its folder), or absolute
    hashes: dict = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.name} {self.version}".strip()


@dataclass(frozen=True)
class Selection:
    picks: tuple[Pick, ...]

    @property
    def sdists(self) -> tuple[Pick, ...]:
        return tuple(p for p in self.picks if p.kind == "sdist")


def _fail(source: str, message: str, hint: str) -> BuildError:
    return BuildError(f"{source}: {message}", hint)


RELOCK_HINT = ("lock for the image's platform: `uv lock` makes a universal lock (export it with "
               "`uv export --format pylock.toml`), `pip lock` locks only the machine it runs on")


def _wheel_tags(filename: str) -> str:
    return filename[:-4].split("-", 2)[-1] if filename.endswith(".whl") else filename


def select(doc: dict, target: Target, source: str, extras: Iterable[str] = (),
           groups: Iterable[str] | None = None) -> Selection:
    """PEP 751's installer steps for ``target``; every package the image cannot get is named
    in one error. ``source`` names the lock in messages (e.g. ``pylock.toml`` or ``uv.lock``)."""
    from packaging.pylock import Pylock, PylockUnsupportedVersionError, PylockValidationError
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    try:
        lock = Pylock.from_dict(doc)
    except PylockUnsupportedVersionError as e:
        raise _fail(source, f"lock-version is not supported ({e})",
                    "ferry reads pylock.toml lock-version 1.x; regenerate it with a current uv or pip") from None
    except PylockValidationError as e:
        raise _fail(source, f"not a valid pylock.toml: {e}",
                    "regenerate it with `uv export --format pylock.toml` or `pip lock`") from None

    env = target.environment()
    version = Version(target.full_version)
    where = f"linux/{'amd64' if target.arch == 'x86_64' else 'arm64'} ({target.describe()})"
    if lock.requires_python and not lock.requires_python.contains(version):
        raise _fail(source, f"the lock needs Python {lock.requires_python}, the image has {target.python}",
                    "set image.python to a version the lock allows, or lock again for that Python")
    if lock.environments is not None and not any(m.evaluate(env) for m in lock.environments):
        listed = "; ".join(str(m) for m in lock.environments)
        raise _fail(source, f"the lock was made for other environments ({listed}), not for {where}",
                    RELOCK_HINT)

    lock_env = dict(env, extras=frozenset(canonicalize_name(e) for e in extras),
                    dependency_groups=frozenset(lock.default_groups or [] if groups is None else groups))
    tags = target.tags()
    rank = {t: i for i, t in enumerate(tags)}
    chosen: dict[str, object] = {}
    for p in lock.packages:
        if p.marker is not None and not p.marker.evaluate(lock_env, context="lock_file"):
            continue
        if p.requires_python and not p.requires_python.contains(version):
            raise _fail(source, f"{p.name} {p.version or ''} needs Python {p.requires_python}, the image has {target.python}",
                        "set image.python to a version every locked package allows, or lock again for that Python")
        if p.name in chosen:
            raise _fail(source, f"{p.name} is listed twice for {where}", "lock again: a lock names one version per environment")
        chosen[p.name] = p

    picks: list[Pick] = []
    missing: list[str] = []
    for p in chosen.values():
        ver = str(p.version) if p.version is not None else ""
        if p.vcs is not None:
            raise _fail(source, f"{p.name} comes from version control ({p.vcs.url or p.vcs.path}); ferry installs "
                                "published wheels and sdists only",
                        f"publish {p.name} to your package index and lock that version, or vendor it in the source folder")
        if p.directory is not None:
            raise _fail(source, f"{p.name} is a local folder ({p.directory.path}); its code is not in the lock",
                        "make it a uv workspace member the app depends on, publish it to your index, or vendor it "
                        "in the source folder")
        best = None
        if p.archive is not None:
            fn = (p.archive.path or p.archive.url or "").rsplit("/", 1)[-1]
            kind = "wheel" if fn.endswith(".whl") else "sdist"
            if kind == "wheel" and not (set(_tags_of(fn, parse_wheel_filename, InvalidWheelFilename)) & set(rank)):
                missing.append(f"{p.name} {ver} (archive {fn})")
                continue
            picks.append(Pick(p.name, ver, kind, fn, p.archive.url, p.archive.path, dict(p.archive.hashes)))
            continue
        for w in p.wheels or ():
            fn = w.filename
            ranks = [rank[t] for t in _tags_of(fn, parse_wheel_filename, InvalidWheelFilename) if t in rank]
            if ranks and (best is None or min(ranks) < best[0]):
                best = (min(ranks), w)
        if best is not None:
            w = best[1]
            picks.append(Pick(p.name, ver, "wheel", w.filename, w.url, w.path, dict(w.hashes)))
        elif p.sdist is not None:
            s = p.sdist
            picks.append(Pick(p.name, ver, "sdist", s.filename, s.url, s.path, dict(s.hashes)))
        else:
            have = sorted({_wheel_tags(w.filename) for w in p.wheels or ()})
            shown = ", ".join(have[:4]) + (f", and {len(have) - 4} more" if len(have) > 4 else "")
            missing.append(f"{p.name} {ver} (wheels: {shown or 'none'})")
    if missing:
        raise _fail(source, f"no wheel (and no sdist) for {where} in the lock for: {'; '.join(missing)}; "
                            "it was locked for another platform",
                    RELOCK_HINT + ", or pin versions that publish wheels for this platform")
    return Selection(tuple(sorted(picks, key=lambda k: k.name)))


def _tags_of(filename: str, parse, invalid) -> tuple:
    try:
        return tuple(parse(filename)[-1])
    except invalid:
        return ()


def is_pure(wheel_filename: str) -> bool:
    """A wheel that runs on any platform: every tag is ``*-none-any``."""
    from packaging.utils import parse_wheel_filename

    tags = parse_wheel_filename(wheel_filename)[-1]
    return all(t.abi == "none" and t.platform == "any" for t in tags)


def only_hashes(doc: dict, allowed: dict[str, set[str]], source: str) -> dict:
    """Keep, for each package that ``allowed`` names, only the files whose sha256 is allowed
    (a hashed requirements file pins files, not just versions)."""
    from packaging.utils import canonicalize_name

    out = dict(doc)
    packages = []
    for p in doc.get("packages", []):
        name = canonicalize_name(p.get("name", ""))
        ok = allowed.get(name)
        if ok is None:
            packages.append(p)
            continue
        q = dict(p)
        q["wheels"] = [w for w in p.get("wheels", []) if w.get("hashes", {}).get("sha256") in ok]
        if not q["wheels"]:
            q.pop("wheels")
        if "sdist" in p and p["sdist"].get("hashes", {}).get("sha256") not in ok:
            q.pop("sdist")
        if "wheels" not in q and "sdist" not in q:
            raise _fail(source, f"no file of {p.get('name')} {p.get('version', '')} the index serves matches its --hash",
                        "regenerate the hashes (uv pip compile --generate-hashes) or check what the index serves")
        packages.append(q)
    out["packages"] = packages
    return out


# --- writing the chosen files back as a lock uv installs ---------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if re.match(r"^[A-Za-z0-9_-]+$", k) else json.dumps(k)


def render(picks: Iterable[Pick], base: Path | None = None) -> str:
    """A pylock.toml naming exactly one wheel per package (no markers: the choice is made).
    Relative paths are made absolute against ``base`` (the original lock's folder)."""
    lines = ['lock-version = "1.0"', 'created-by = "ferry"', ""]
    for p in picks:
        if p.kind != "wheel":
            raise ValueError(f"{p.name}: only wheels can be written, not {p.kind}")
        wheel: dict = {"name": p.filename}
        if p.path is not None:
            path = Path(p.path)
            wheel["path"] = str(path if path.is_absolute() or base is None else (base / path).resolve())
        else:
            wheel["url"] = p.url
        wheel["hashes"] = dict(sorted(p.hashes.items()))
        lines += ["[[packages]]", f"name = {_toml_value(p.name)}"]
        if p.version:
            lines.append(f"version = {_toml_value(p.version)}")
        lines += [f"wheels = [{_toml_value(wheel)}]", ""]
    return "\n".join(lines)
