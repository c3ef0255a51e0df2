"""The stack's images, built from Debian's binaries with ferry's own image code (no Docker).

Each exporter, Prometheus and Alertmanager are Go programs that link only glibc. An image is
two layers on nothing (distroless-style):

- ``runtime``: the ELF loader and the libraries the binaries ask for (found with ``ldd``), the
  Mozilla CA set from Debian's ca-certificates (not the machine's bundle, which may hold a
  local proxy's CA), ``passwd``/``group`` with nobody, ``nsswitch.conf`` and ``/tmp``. The
  same bytes in every image, so a registry and a host store it once.
- the component: its binaries from the installed Debian package (``dpkg -L`` names them).

Layers are reproducible (``ferry.images.layers``): the same Debian packages give the same
digests on any machine. Images run as nobody (65534). Only amd64 (the machine's own
binaries) is built here; arm64 needs the arm64 ``.deb``s (not done).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from ..images.layers import Entry, content_key, normalise_mode, write_layer
from ..images.oci import OCI_CONFIG, OCI_LAYER_GZIP, Blob, Image, Platform, canonical_json
from ..progress import NULL, Progress

CREATED = "1970-01-01T00:00:00Z"
MTIME = 1
NOBODY = "65534:65534"
PLATFORM = Platform("linux", "amd64")


@dataclass(frozen=True)
class Component:
    name: str  # the image's repository name under the prefix: ferry/<name>
    package: str  # the Debian package the binaries come from
    binaries: tuple[str, ...]  # installed paths; the first is the entrypoint
    title: str
    # the package's data files the program reads at run time (Debian's builds load their web
    # UI and notification templates from here instead of embedding them)
    data: tuple[str, ...] = ()


COMPONENTS: tuple[Component, ...] = (
    Component("prometheus", "prometheus", ("/usr/bin/prometheus", "/usr/bin/promtool"),
              "Prometheus (Debian's build), assembled by ferry", ("/usr/share/prometheus/web/",)),
    Component("alertmanager", "prometheus-alertmanager", ("/usr/bin/prometheus-alertmanager", "/usr/bin/amtool"),
              "Alertmanager (Debian's build), assembled by ferry", ("/usr/share/prometheus/alertmanager/",)),
    Component("node-exporter", "prometheus-node-exporter", ("/usr/bin/prometheus-node-exporter",),
              "node_exporter (Debian's build), assembled by ferry"),
    Component("nginx-exporter", "prometheus-nginx-exporter", ("/usr/bin/prometheus-nginx-exporter",),
              "NGINX Prometheus exporter (Debian's build), assembled by ferry"),
    Component("blackbox-exporter", "prometheus-blackbox-exporter", ("/usr/bin/prometheus-blackbox-exporter",),
              "blackbox_exporter (Debian's build), assembled by ferry"),
)
BY_NAME = {c.name: c for c in COMPONENTS}
# Grafana has no Debian package: ferry does not build it, you mirror the official image into
# the same place (monitoring/README.md). Its repository is named like the built ones.
MIRRORED: tuple[str, ...] = ("grafana",)
DEFAULT_PREFIX = "ferry"


def repository_name(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The repository (without registry) an image of the stack lives in: PREFIX/NAME."""
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def repository_names(prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """Every repository the stack's images live in: what `push` writes to (the five built
    images) plus Grafana's mirror. The Pulumi program (infra/) creates exactly these in ECR
    and lets the hosts pull from them."""
    return tuple(repository_name(n, prefix) for n in (*(c.name for c in COMPONENTS), *MIRRORED))

PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"
MOZILLA_CAS = Path("/usr/share/ca-certificates/mozilla")


def upstream_version(debian_version: str) -> str:
    """'2.42.0+ds-5+deb12u1' -> '2.42.0'; '1:1.2-3' -> '1.2' (a tag-safe upstream version)."""
    v = debian_version.split(":", 1)[-1]
    v = v.rsplit("-", 1)[0] if "-" in v else v
    v = re.split(r"[+~]", v, maxsplit=1)[0]
    return v


def _run(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} is not installed", "this builder needs a Debian machine (dpkg-query, ldd)") from None
    if r.returncode != 0:
        raise BuildError(f"`{' '.join(argv)}` failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return r.stdout


def package_version(package: str) -> str:
    try:
        return _run(["dpkg-query", "-W", "-f", "${Version}", package]).strip()
    except BuildError:
        raise BuildError(f"the Debian package {package} is not installed",
                         f"apt-get install {package} (the Makefile's setup does)") from None


def shared_libraries(binary: str) -> list[str]:
    """Absolute paths a dynamically linked binary loads (its loader included), from ldd."""
    out = _run(["ldd", binary])
    paths = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            paths.append(m.group(1))
    return paths


def runtime_entries(binaries: list[str]) -> list[Entry]:
    libs: set[str] = set()
    for b in binaries:
        libs.update(shared_libraries(b))
    entries = [Entry(p.lstrip("/"), "file", 0o755, source=Path(os.path.realpath(p))) for p in sorted(libs)]
    certs = sorted(MOZILLA_CAS.glob("*.crt"))
    if not certs:
        raise BuildError(f"no CA certificates in {MOZILLA_CAS}", "apt-get install ca-certificates")
    bundle = b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs)
    entries += [
        Entry("etc/ssl/certs/ca-certificates.crt", data=bundle),
        Entry("etc/passwd", data=PASSWD.encode()),
        Entry("etc/group", data=GROUP.encode()),
        Entry("etc/nsswitch.conf", data=NSSWITCH.encode()),
        Entry("tmp", "dir", 0o1777),
    ]
    return entries


def package_files(package: str, prefixes: tuple[str, ...]) -> list[str]:
    """Regular files the installed package owns under ``prefixes`` (``dpkg -L``)."""
    if not prefixes:
        return []
    out = []
    for line in _run(["dpkg", "-L", package]).splitlines():
        p = line.strip()
        if p.startswith(prefixes) and os.path.isfile(p) and not os.path.islink(p):
            out.append(p)
    return sorted(out)


def component_entries(c: Component) -> list[Entry]:
    out = []
    for b in c.binaries:
        p = Path(b)
        if not p.is_file():
            raise BuildError(f"{b} is missing", f"apt-get install {c.package}")
        out.append(Entry(b.lstrip("/"), "file", 0o755, source=p))
    for f in package_files(c.package, c.data):
        out.append(Entry(f.lstrip("/"), "file", normalise_mode(os.stat(f).st_mode), source=Path(f)))
    return out


class LayerCache:
    """Compressed layers by content key: an unchanged binary is never gzipped twice."""

    def __init__(self, root: Path):
        self.root = root

    def layer(self, entries: list[Entry]) -> tuple[Blob, str]:
        key = content_key(entries)
        meta = self.root / f"{key.split(':')[-1]}.json"
        if meta.exists():
            m = json.loads(meta.read_text())
            blob_path = self.root / "blobs" / m["digest"].split(":")[1]
            if blob_path.exists() and blob_path.stat().st_size == m["size"]:
                return Blob(m["digest"], m["size"], OCI_LAYER_GZIP, path=blob_path), m["diff_id"]
        tmp = self.root / "tmp" / f"{os.getpid()}.tar.gz"
        lf = write_layer(entries, tmp, MTIME)
        dest = self.root / "blobs" / lf.digest.split(":")[1]
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        meta.write_text(json.dumps({"digest": lf.digest, "diff_id": lf.diff_id, "size": lf.size}))
        return Blob(lf.digest, lf.size, OCI_LAYER_GZIP, path=dest), lf.diff_id


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferry" / "monitoring-images"


def image_config(c: Component, version: str, debian_version: str, diff_ids: list[str]) -> dict:
    return {
        "architecture": PLATFORM.architecture,
        "os": PLATFORM.os,
        "created": CREATED,
        "config": {
            "User": NOBODY,
            "Entrypoint": [c.binaries[0]],
            "Env": ["PATH=/usr/bin:/bin"],
            "WorkingDir": "/tmp",
            "Labels": {
                "org.opencontainers.image.title": c.title,
                "org.opencontainers.image.version": version,
                "dev.ferry.debian.package": f"{c.package}={debian_version}",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": CREATED, "created_by": "ferry monitoring images: glibc, CA set, passwd"},
            {"created": CREATED, "created_by": f"ferry monitoring images: {c.package} {debian_version}"},
        ],
    }


@dataclass(frozen=True)
class Built:
    component: Component
    image: Image
    version: str  # the tag: upstream version of the Debian package
    debian_version: str


def build(components: tuple[Component, ...] = COMPONENTS, cache_dir: Path | None = None,
          progress: Progress = NULL) -> list[Built]:
    cache = LayerCache(cache_dir or default_cache())
    all_binaries = [b for c in components for b in c.binaries]
    for b in all_binaries:
        if not Path(b).is_file():
            owner = next(c.package for c in components if b in c.binaries)
            raise BuildError(f"{b} is missing", f"apt-get install {owner}")
    # the runtime layer is made from every component's needs, so all images share it
    progress.step("runtime layer (glibc, CA set, passwd)")
    runtime, runtime_diff = cache.layer(runtime_entries(sorted(set(all_binaries))))
    out = []
    for c in components:
        debian_version = package_version(c.package)
        version = upstream_version(debian_version)
        progress.step(f"{c.name} {version} from {c.package} {debian_version}")
        layer, diff = cache.layer(component_entries(c))
        config = canonical_json(image_config(c, version, debian_version, [runtime_diff, diff]))
        image = Image(Blob.from_bytes(config, OCI_CONFIG), (runtime, layer), PLATFORM,
                      annotations={"org.opencontainers.image.version": version,
                                   "dev.ferry.debian.package": f"{c.package}={debian_version}"})
        out.append(Built(c, image, version, debian_version))
    return out


def push(built: list[Built], registry: str, prefix: str = DEFAULT_PREFIX, progress: Progress = NULL,
         auth_mode: str = "auto") -> list[dict]:
    """Push each image as <registry>/<prefix>/<name>:<version>; return the pinned references."""
    from ..images.auth import auth_for
    from ..images.publish import RegistryPublisher
    from ..images.registry import RegistryClient

    results = []
    with RegistryClient(registry, auth=auth_for(registry, auth_mode), progress=progress) as client:
        for b in built:
            repo = repository_name(b.component.name, prefix)
            r = RegistryPublisher(client, repo, progress=progress).publish(b.image, [b.version])
            results.append({"component": b.component.name, "reference": f"{registry}/{repo}@{r.digest}",
                            "tag": f"{registry}/{repo}:{b.version}", "digest": r.digest,
                            "package": f"{b.component.package}={b.debian_version}",
                            "bytes_uploaded": r.bytes_uploaded})
    return results


def digest_of(built: list[Built]) -> str:
    """One hash of every image built: equal when the builds are byte-identical."""
    h = hashlib.sha256()
    for b in built:
        h.update(b.image.digest.encode())
    return "sha256:" + h.hexdigest()
