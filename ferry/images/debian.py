"""Debian packages for any architecture, without dpkg ever installing anything.

apko builds images from apk packages; this module does the Debian half of the same job:

* an apt configuration private to one architecture (its own lists, cache and an empty or
  synthetic dpkg status under the cache directory), layered on this machine's apt settings,
  so arm64 packages resolve on an amd64 host without ``dpkg --add-architecture``;
* the mirror is read from this machine's apt sources at run time (no host name is ever
  written into the project);
* dependencies are resolved by apt's own solver (``apt-get --simulate install``); packages a
  container image has no use for (dpkg, debconf, awk, the openssl CLI) are "assumed installed"
  through a synthetic status file, so the solver neither installs them nor pulls their
  dependencies: the trick distroless and mmdebstrap use;
* ``apt-get download`` fetches the exact versions, checked against the archive's SHA256;
* a ``.deb`` is read in Python (ar + control/data tarballs), so no maintainer script runs.

Pure functions (parsing apt's output and sources, synthetic status) are unit-tested; the
``Apt`` class is the small runner that calls apt.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from ferry.errors import BuildError

# Debian architecture names for OCI ones (the Go names Docker uses).
DEB_ARCH = {"amd64": "amd64", "arm64": "arm64", "arm": "armhf", "386": "i386",
            "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}

HOST_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


@dataclass(frozen=True)
class Package:
    """One resolved binary package: what the lock records and the SBOM lists."""

    name: str
    version: str
    architecture: str          # the package's own (``all`` for arch-independent ones)
    filename: str = ""         # as apt-get download names it
    size: int = 0
    sha256: str = ""

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Package":
        return cls(**d)


# --------------------------------------------------------------------------- pure parsing

@dataclass(frozen=True)
class SourceEntry:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_deb822_sources(text: str) -> list[SourceEntry]:
    """Parse a ``.sources`` file (deb822): stanzas separated by blank lines."""
    entries = []
    for stanza in _stanzas(text):
        if "deb" not in stanza.get("Types", "").split():
            continue
        if stanza.get("Enabled", "yes").lower() == "no":
            continue
        for uri in stanza.get("URIs", "").split():
            entries.append(SourceEntry(
                uri=uri.rstrip("/"),
                suites=tuple(stanza.get("Suites", "").split()),
                components=tuple(stanza.get("Components", "").split()),
                signed_by=stanza.get("Signed-By", "").strip() or None,
            ))
    return entries


def parse_one_line_sources(text: str) -> list[SourceEntry]:
    """Parse a classic ``sources.list``: ``deb [opts] URI SUITE COMPONENT...``."""
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            opts, _, rest = rest[1:].partition("]")
            for opt in opts.split():
                key, _, value = opt.partition("=")
                options[key] = value
        parts = rest.split()
        if len(parts) < 2:
            continue
        entries.append(SourceEntry(parts[0].rstrip("/"), (parts[1],), tuple(parts[2:]),
                                   options.get("signed-by") or None))
    return entries


def read_host_sources(paths: tuple[Path, ...] = HOST_SOURCES) -> list[SourceEntry]:
    """Every ``deb`` entry of this machine's apt sources, read at run time."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".list", ".sources"))
        elif p.is_file():
            files.append(p)
    entries: list[SourceEntry] = []
    for f in files:
        text = f.read_text(errors="replace")
        entries += parse_deb822_sources(text) if f.suffix == ".sources" \
            else parse_one_line_sources(text)
    return entries


def debian_sources(host: list[SourceEntry], dist: str) -> str:
    """The deb822 sources for ``dist``, ``dist-updates`` and ``dist-security`` (main only).

    The mirror comes from the host's own entries. A host on another release (say trixie
    building a bookworm image) still works: a Debian archive URI serves every release, so
    the entry's URI is kept and the suites are replaced. Third-party repositories are left
    out: only Debian's archive may feed the base image.
    """
    archive = security = None
    for e in host:
        if "main" not in e.components:
            continue
        is_security = e.uri.endswith("-security") or any(s.endswith("-security") for s in e.suites)
        # a Debian archive is recognised by its suites (a release name) or its path
        looks_debian = e.uri.rstrip("/").split("/")[-1] in ("debian", "debian-security") or \
            any(s.split("-")[0] == dist for s in e.suites)
        if not looks_debian:
            continue
        if is_security:
            security = security or e
        else:
            archive = archive or e
    if archive is None:
        raise BuildError(
            "no Debian archive found in this machine's apt sources",
            "add a 'deb' entry for a Debian mirror with the 'main' component to "
            "/etc/apt/sources.list.d/debian.sources",
        )

    def stanza(e: SourceEntry, suites: str) -> str:
        lines = ["Types: deb", f"URIs: {e.uri}", f"Suites: {suites}", "Components: main"]
        if e.signed_by:
            lines.append(f"Signed-By: {e.signed_by}")
        return "\n".join(lines) + "\n"

    out = stanza(archive, f"{dist} {dist}-updates")
    if security is not None:
        out += "\n" + stanza(security, f"{dist}-security")
    return out


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs as dicts; continuation lines are joined with newlines."""
    current: dict[str, str] = {}
    key = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                yield current
            current, key = {}, None
            continue
        if raw[0] in " \t" and key:
            current[key] += "\n" + raw.strip()
            continue
        key, _, value = raw.partition(":")
        key = key.strip()
        current[key] = value.strip()
    if current:
        yield current


def parse_control(text: str) -> list[dict[str, str]]:
    """Paragraphs of a Debian control file (apt-cache show, a package's control)."""
    return list(_stanzas(text))


_INST = re.compile(r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[[^\]]*\] )?"
                   r"\((?P<version>\S+) .*\[(?P<arch>[^\]]+)\]\)")


def parse_simulation(output: str) -> list[Package]:
    """The packages ``apt-get --simulate install`` would unpack, sorted by name."""
    found = {}
    for line in output.splitlines():
        m = _INST.match(line)
        if m:
            found[m["name"]] = Package(m["name"], m["version"], m["arch"])
    return [found[k] for k in sorted(found)]


_URI = re.compile(r"^'(?P<uri>[^']+)' (?P<file>\S+) (?P<size>\d+) (?P<hash>\S+)$")


def parse_print_uris(output: str) -> dict[str, tuple[str, str, int, str]]:
    """``apt-get --print-uris download``: package name -> (uri, file name, size, sha256).

    The URI is used at once and never stored: it names the mirror's host.
    """
    out = {}
    for line in output.splitlines():
        m = _URI.match(line.strip())
        if not m:
            continue
        algo, _, digest = m["hash"].partition(":")
        if algo.upper() != "SHA256":
            raise BuildError(f"apt gave a {algo} hash for {m['file']}, not SHA256",
                             "use a Debian mirror that publishes SHA256 sums")
        name = m["file"].split("_", 1)[0]
        out[name] = (m["uri"], m["file"], int(m["size"]), digest.lower())
    return out


def synthetic_status(records: list[dict[str, str]]) -> str:
    """A dpkg status file claiming ``records`` (apt-cache show paragraphs) are installed.

    Only what apt's solver needs: name, version, architecture, Multi-Arch and Provides.
    No Depends, so apt never asks for their dependencies either.
    """
    out = []
    for r in sorted(records, key=lambda r: r["Package"]):
        lines = [f"Package: {r['Package']}", "Status: install ok installed",
                 f"Version: {r['Version']}", f"Architecture: {r['Architecture']}"]
        for key in ("Multi-Arch", "Provides", "Essential"):
            if r.get(key):
                lines.append(f"{key}: {r[key]}")
        lines += ["Maintainer: ferry <nobody@localhost>",
                  "Description: assumed installed by ferry's image assembler"]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def upstream_version(version: str) -> str:
    """``1:3.11.2-6+deb12u9`` -> ``3.11.2``: the epoch and Debian revision stripped."""
    v = version.split(":", 1)[-1]
    return v.rsplit("-", 1)[0] if "-" in v else v


# --------------------------------------------------------------------------- .deb reading

@dataclass(frozen=True)
class DebMember:
    name: str
    data: bytes


def read_ar(data: bytes) -> list[DebMember]:
    """The members of an ar archive (a .deb is one): common format, 60-byte headers."""
    if not data.startswith(b"!<arch>\n"):
        raise BuildError("not a Debian package (no ar magic)", "delete the cached .deb")
    pos, out = 8, []
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        pos += 60
        out.append(DebMember(name, data[pos:pos + size]))
        pos += size + (size & 1)
    return out


def _open_tar(member: DebMember, deb: Path) -> tarfile.TarFile:
    name = member.name
    if name.endswith(".xz"):
        raw = lzma.decompress(member.data)
    elif name.endswith(".gz") or name.endswith(".bz2") or name.endswith(".tar"):
        return tarfile.open(fileobj=io.BytesIO(member.data), mode="r:*")
    elif name.endswith(".zst"):
        # Python 3.11 has no zstd; dpkg-deb has it on every Debian machine.
        which = "--ctrl-tarfile" if name.startswith("control") else "--fsys-tarfile"
        raw = subprocess.run(["dpkg-deb", which, str(deb)], check=True,
                             capture_output=True).stdout
    else:
        raise BuildError(f"{deb.name}: unknown member {name}", "delete the cached .deb")
    return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")


@dataclass(frozen=True)
class Deb:
    """A .deb opened for reading: its control paragraph and its filesystem tarball."""

    path: Path
    control: dict[str, str]
    control_text: str
    data: tarfile.TarFile

    @classmethod
    def open(cls, path: Path) -> "Deb":
        members = {m.name.split(".")[0]: m for m in read_ar(path.read_bytes())}
        if "control" not in members or "data" not in members:
            raise BuildError(f"{path.name} is not a complete Debian package",
                             "delete it from the cache; it will be downloaded again")
        ctrl_tar = _open_tar(members["control"], path)
        ctrl = ctrl_tar.extractfile("./control") or ctrl_tar.extractfile("control")
        text = ctrl.read().decode() if ctrl else ""
        paragraphs = parse_control(text)
        return cls(path, paragraphs[0] if paragraphs else {}, text,
                   _open_tar(members["data"], path))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- the apt runner

class Apt:
    """apt for one architecture, with its own lists, cache and dpkg status.

    Everything lives under ``root``; the host's apt.conf.d still applies (proxies, mirror
    quirks), but not its sources, preferences or installed packages.
    """

    def __init__(self, root: Path, arch: str, dist: str,
                 host_sources: tuple[Path, ...] = HOST_SOURCES):
        self.root = root
        self.arch = arch
        self.dist = dist
        self.host_sources = host_sources

    # the configuration is a pure function of the paths, so tests can read it exactly
    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State": r / "state",
            "Dir::State::status": r / "status",
            "Dir::Cache": r / "cache",
            "Dir::Cache::pkgcache": r / "cache" / "pkgcache.bin",
            "Dir::Cache::srcpkgcache": r / "cache" / "srcpkgcache.bin",
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::Preferences": r / "preferences",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "APT::Get::List-Cleanup": "true",
            "Acquire::Languages": "none",
            # the private directories belong to root; apt's _apt sandbox user cannot write them
            "APT::Sandbox::User": "root",
        }
        out = []
        for key, value in opts.items():
            out += ["-o", f"{key}={value}"]
        return out

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        argv = [tool, *self.options(), *args]
        env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env)
        except FileNotFoundError:
            raise BuildError(
                f"{tool} is not installed: the base image is assembled from Debian packages with apt",
                "build it on a Debian or Ubuntu machine, or set image.base to a Python image "
                "in your own registry") from None
        if proc.returncode != 0:
            err = proc.stderr.strip().splitlines()
            raise BuildError(
                f"{tool} {args[0] if args else ''} for {self.arch} failed: "
                f"{err[-1] if err else 'exit ' + str(proc.returncode)}",
                "check this machine's apt sources and network to the Debian mirror",
            )
        return proc.stdout

    def prepare(self) -> None:
        for d in ("state/lists/partial", "cache/archives/partial", "sources.list.d",
                  "preferences.d"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "sources.list").write_text("")
        (self.root / "preferences").write_text("")
        sources = debian_sources(read_host_sources(self.host_sources), self.dist)
        (self.root / "sources.list.d" / "debian.sources").write_text(sources)
        status = self.root / "status"
        if not status.exists():
            status.write_text("")

    def update(self) -> None:
        self.prepare()
        (self.root / "status").write_text("")
        self._run("apt-get", "update", "-q")

    def show(self, names: list[str]) -> list[dict[str, str]]:
        if not names:
            return []
        return parse_control(self._run("apt-cache", "show", "--no-all-versions", *names))

    def resolve(self, install: list[str], assume_installed: list[str]) -> list[Package]:
        """apt's solver on an empty system where ``assume_installed`` are already there."""
        (self.root / "status").write_text("")
        assumed = self.show(sorted(assume_installed)) if assume_installed else []
        missing = set(assume_installed) - {r["Package"] for r in assumed}
        if missing:
            raise BuildError(f"assume_installed names unknown packages for {self.arch}: "
                             f"{', '.join(sorted(missing))}", "fix the recipe's package names")
        (self.root / "status").write_text(synthetic_status(assumed))
        out = self._run("apt-get", "--simulate", "--quiet", "install", *install)
        packages = parse_simulation(out)
        names = {p.name for p in packages}
        absent = [n for n in install if n not in names and n not in assume_installed]
        if absent:
            raise BuildError(f"apt did not select {', '.join(absent)} for {self.arch}",
                             "check the package names in the recipe")
        return packages

    def locate(self, packages: list[Package]) -> list[Package]:
        """Add file name, size and SHA256 (from the signed archive index) to each package."""
        out = parse_print_uris(self._run("apt-get", "--print-uris", "download",
                                         *[p.spec for p in packages]))
        located = []
        for p in packages:
            if p.name not in out:
                raise BuildError(f"apt has no download for {p.spec} ({self.arch})",
                                 "run again to refresh the package lists")
            _, filename, size, digest = out[p.name]
            located.append(Package(p.name, p.version, p.architecture, filename, size, digest))
        return located

    def download(self, packages: list[Package], dest: Path) -> list[Path]:
        """Download what ``dest`` lacks; every file is checked against its SHA256."""
        dest.mkdir(parents=True, exist_ok=True)
        missing = [p for p in packages if not _cached(dest / p.filename, p)]
        if missing:
            work = dest / f".partial-{self.arch}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            self._run("apt-get", "download", "--quiet", *[p.spec for p in missing], cwd=work)
            for p in missing:
                got = work / p.filename
                if not got.exists() or sha256_file(got) != p.sha256:
                    raise BuildError(f"downloaded {p.filename} does not match the archive's "
                                     "SHA256", "run again; the mirror may be updating")
                os.replace(got, dest / p.filename)
            shutil.rmtree(work, ignore_errors=True)
        return [dest / p.filename for p in packages]


def _cached(path: Path, p: Package) -> bool:
    return path.exists() and path.stat().st_size == p.size and sha256_file(path) == p.sha256


def lock_json(arch: str, packages: list[Package]) -> str:
    """The resolution recorded for one architecture (no mirror host in it)."""
    return json.dumps({"architecture": arch, "packages": [p.to_json() for p in packages]},
                      indent=1, sort_keys=True) + "\n"


def ensure_base_image(*args, **kwargs) -> dict:
    """The base image entry point ``ferry local up`` calls (see ferry.images.baseimage)."""
    from ferry.images.baseimage import ensure_base_image as ensure

    return ensure(*args, **kwargs)
