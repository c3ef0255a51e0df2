"""The accessories' images: PostgreSQL, Redis and postgres_exporter from Debian's binaries.

Assembled with the base image's code (``ferry.images.debian``, ``rootfs``), not with Docker:
apt's solver resolves the recipe's packages for the suite that ships the wanted major
(PostgreSQL 15 is bookworm's, 17 trixie's, 18 forky's), the exact ``.deb`` files are
downloaded and checked by SHA256, unpacked in Python (no maintainer script runs) into one
tree, and written as one reproducible layer: the same resolution gives the same digest on any
machine. The resolution is cached per recipe hash, so a rebuild is the same image until
``--refresh`` asks apt again (Debian security updates).

What the maintainer scripts would have done is done here instead: ``passwd``/``group`` with
the server's own non-root user (postgres 65530, redis 65531: neither the app's 65532 nor
nobody), an entrypoint script (``ferry-postgres`` / ``ferry-redis``, run by dash) that
prepares the data directory on first start and then ``exec``s the server as PID 1.
Packages a server never uses at run time (perl, postgresql-common's wrappers, adduser, ucf,
the LLVM JIT) are "assumed installed", as the base recipe does with dpkg and debconf.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError, ConfigError
from ..images import debian, rootfs
from ..images.baseimage import Cache, default_cache_dir, write_atomic
from ..images.layers import gzip_bytes
from ..images.oci import OCI_CONFIG, OCI_LAYER_GZIP, Blob, Image, Platform, canonical_json, sha256
from ..progress import NULL, Progress
from .spec import (DEFAULT_POSTGRES, DEFAULT_PREFIX, POSTGRES_SUITES, POSTGRES_UID, REDIS_UID,  # noqa: F401
                   repository_name)

# bump when the assembler's output changes for the same recipe (part of the recipe hash)
ASSEMBLER_VERSION = "1"
CREATED = "1970-01-01T00:00:00Z"
MTIME = 1
PLATFORM = Platform("linux", "amd64")
REDIS_SUITE = "bookworm"

EXPORTER_UID = 65534  # nobody, like the monitoring images

# Never unpacked though something depends on them: the server binaries need none of them at
# run time (perl and postgresql-common serve pg_ctlcluster, which the entrypoint replaces;
# libllvm is only PostgreSQL's JIT, turned off and left out).
ASSUMED = ("dpkg", "debconf", "mawk", "perl", "perl-base", "perl-modules-5.36", "perl-modules-5.40",
           "libperl5.36", "libperl5.40", "adduser", "passwd", "ucf", "sensible-utils", "lsb-base",
           "sysvinit-utils", "init-system-helpers", "usrmerge", "ssl-cert", "locales", "openssl",
           "postgresql-common", "postgresql-client-common", "postgresql-common-dev", "libjson-perl",
           "libfile-find-rule-perl", "libnumber-compare-perl", "libtext-glob-perl", "logrotate",
           "cron", "libllvm14", "libllvm19", "libllvm20", "libllvm21", "libz3-4")
DROP = ("usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/lintian/",
        "usr/share/locale/", "usr/share/i18n/", "usr/share/bug/", "usr/share/common-licenses/",
        "usr/lib/postgresql/*/lib/llvmjit*", "usr/lib/postgresql/*/lib/bitcode/",
        "usr/lib/*/gconv/", "etc/init.d/", "etc/logrotate.d/", "usr/lib/systemd/", "etc/systemd/",
        "etc/cron.d/", "etc/postgresql-common/", "usr/share/postgresql-common/")
KEEP = ("usr/share/doc/*/copyright",)

POSTGRES_ENTRYPOINT = """\
#!/bin/sh
# ferry's PostgreSQL entrypoint: on first start, initdb into $PGDATA with the password from a
# file (never the environment or the command line); then the server itself becomes PID 1.
set -eu
: "${PGDATA:=/data/pgdata}"
: "${PGPORT:=5432}"
: "${PGUSER:=postgres}"
: "${PGDATABASE:=$PGUSER}"
pwfile="${FERRY_PASSWORD_FILE:-/run/secrets/password}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ ! -s "$pwfile" ]; then
    echo "ferry-postgres: $pwfile is missing or empty: mount the password file there" >&2
    exit 1
  fi
  # the socket lives in the container's own /tmp: only `docker exec` reaches it (trust);
  # TCP on 127.0.0.1 needs the password (scram-sha-256)
  initdb --pgdata="$PGDATA" --username="$PGUSER" --pwfile="$pwfile" \\
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >&2
  if [ "$PGDATABASE" != postgres ]; then
    echo "CREATE DATABASE \\"$PGDATABASE\\" OWNER \\"$PGUSER\\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1 -c port="$PGPORT" \\
  -c unix_socket_directories=/tmp -c jit=off "$@"
"""

REDIS_ENTRYPOINT = """\
#!/bin/sh
# ferry's Redis entrypoint: the password is read from a file into a config file on the
# container's tmpfs (never the command line, where `ps` on the host would show it).
set -eu
: "${REDIS_PORT:=6379}"
pwfile="${FERRY_PASSWORD_FILE:-/run/secrets/password}"
if [ ! -s "$pwfile" ]; then
  echo "ferry-redis: $pwfile is missing or empty: mount the password file there" >&2
  exit 1
fi
pw=
read -r pw < "$pwfile" || true  # a file without a final newline still gives its line
umask 077
{
  printf 'bind 127.0.0.1\\nport %s\\nprotected-mode yes\\ndaemonize no\\n' "$REDIS_PORT"
  printf 'dir /data\\nappendonly yes\\nappendfsync everysec\\n'
  printf 'requirepass %s\\n' "$pw"
} > /tmp/redis.conf
exec redis-server /tmp/redis.conf "$@"
"""


@dataclass(frozen=True)
class Recipe:
    """One accessory image: what apt installs, who runs it, what starts it."""

    name: str  # repository under the prefix: ferry/postgres
    tag: str  # ferry/postgres:15
    suite: str
    title: str
    install: tuple[str, ...]
    uid: int
    user: str
    entrypoint: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str, int], ...] = ()  # (path, text, mode) written by the assembler
    dirs: tuple[str, ...] = ()  # owned by the user (mount points)
    assume_installed: tuple[str, ...] = ASSUMED
    drop: tuple[str, ...] = DROP
    keep: tuple[str, ...] = KEEP
    version_of: str = ""  # the package whose version labels the image

    def to_json(self) -> dict:
        return {"name": self.name, "tag": self.tag, "suite": self.suite, "title": self.title,
                "install": list(self.install), "uid": self.uid, "user": self.user,
                "entrypoint": list(self.entrypoint), "env": dict(self.env),
                "files": [[p, hashlib.sha256(t.encode()).hexdigest(), m] for p, t, m in self.files],
                "dirs": list(self.dirs), "assume_installed": list(self.assume_installed),
                "drop": list(self.drop), "keep": list(self.keep), "version_of": self.version_of}

    @property
    def hash(self) -> str:
        doc = {"assembler": ASSEMBLER_VERSION, "recipe": self.to_json()}
        return "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()


def postgres_recipe(major: str = DEFAULT_POSTGRES) -> Recipe:
    if major not in POSTGRES_SUITES:
        raise ConfigError(f"PostgreSQL {major} is not shipped by a Debian suite ferry knows",
                          f"use one of {', '.join(POSTGRES_SUITES)}")
    bindir = f"/usr/lib/postgresql/{major}/bin"
    return Recipe(
        name="postgres", tag=major, suite=POSTGRES_SUITES[major],
        title=f"PostgreSQL {major} (Debian {POSTGRES_SUITES[major]}'s build), assembled by ferry",
        install=(f"postgresql-{major}", "dash", "tzdata"), uid=POSTGRES_UID, user="postgres",
        entrypoint=("/usr/local/bin/ferry-postgres",),
        env=(("PATH", f"{bindir}:/usr/bin:/bin"), ("PGDATA", "/data/pgdata")),
        files=(("usr/local/bin/ferry-postgres", POSTGRES_ENTRYPOINT, 0o755),),
        dirs=("data",), version_of=f"postgresql-{major}")


def redis_recipe() -> Recipe:
    return Recipe(
        name="redis", tag="7", suite=REDIS_SUITE,
        title=f"Redis (Debian {REDIS_SUITE}'s build), assembled by ferry",
        install=("redis-server", "dash"), uid=REDIS_UID, user="redis",
        entrypoint=("/usr/local/bin/ferry-redis",), env=(("PATH", "/usr/bin:/bin"),),
        files=(("usr/local/bin/ferry-redis", REDIS_ENTRYPOINT, 0o755),),
        dirs=("data",), version_of="redis-server")


def exporter_recipe() -> Recipe:
    """postgres_exporter for the monitoring stack (a Go binary: glibc only)."""
    return Recipe(
        name="postgres-exporter", tag="bookworm", suite="bookworm",  # the moving tag: the suite
        title="postgres_exporter (Debian bookworm's build), assembled by ferry",
        install=("prometheus-postgres-exporter",), uid=EXPORTER_UID, user="nobody",
        entrypoint=("/usr/bin/prometheus-postgres-exporter",), env=(("PATH", "/usr/bin:/bin"),),
        version_of="prometheus-postgres-exporter")


def recipes_for(versions: tuple[str, ...] = (DEFAULT_POSTGRES,), redis: bool = True,
                exporter: bool = False) -> list[Recipe]:
    out = [postgres_recipe(v) for v in dict.fromkeys(versions)]
    if redis:
        out.append(redis_recipe())
    if exporter:
        out.append(exporter_recipe())
    return out


# --------------------------------------------------------------------------- assembly (pure)

def passwd(user: str, uid: int) -> str:
    lines = ["root:x:0:0:root:/root:/usr/sbin/nologin"]
    if uid != 65534:
        lines.append(f"{user}:x:{uid}:{uid}:{user}:/nonexistent:/usr/sbin/nologin")
    lines.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    return "\n".join(lines) + "\n"


def group(user: str, uid: int) -> str:
    lines = ["root:x:0:"]
    if uid != 65534:
        lines.append(f"{user}:x:{uid}:")
    lines.append("nogroup:x:65534:")
    return "\n".join(lines) + "\n"


def assemble(recipe: Recipe, unpacked: list[tuple[str, list[rootfs.Entry], str]]) -> rootfs.Tree:
    """The root filesystem from (package, entries, control text), in name order."""
    E = rootfs.Entry
    tree: rootfs.Tree = {}
    for _, entries, _ in sorted(unpacked, key=lambda u: u[0]):
        tree, _ = rootfs.merge(tree, entries)
    tree = rootfs.trim(tree, list(recipe.drop), list(recipe.keep))
    tree["etc/passwd"] = E.file("etc/passwd", passwd(recipe.user, recipe.uid))
    tree["etc/group"] = E.file("etc/group", group(recipe.user, recipe.uid))
    tree["etc/nsswitch.conf"] = E.file("etc/nsswitch.conf", rootfs.NSSWITCH)
    if "usr/share/zoneinfo/Etc/UTC" in tree:
        tree["etc/localtime"] = E.symlink("etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
    tree["tmp"] = E.dir("tmp", 0o1777)
    for path, text, mode in recipe.files:
        tree[path] = E.file(path, text, mode)
    for d in recipe.dirs:
        tree[d] = E.dir(d, 0o700, recipe.uid, recipe.uid)
    # what scanners read to know the Debian packages in a dpkg-less image
    tree["var/lib/dpkg/status.d"] = E.dir("var/lib/dpkg/status.d")
    for name, _, control in unpacked:
        tree[f"var/lib/dpkg/status.d/{name}"] = E.file(f"var/lib/dpkg/status.d/{name}",
                                                       rootfs.dpkg_status_entry(control))
    tree = rootfs.add_usrmerge_links(tree)
    return rootfs.ensure_dirs(tree)


def image_config(recipe: Recipe, version: str, diff_id: str, packages: list[debian.Package]) -> dict:
    return {
        "architecture": PLATFORM.architecture, "os": PLATFORM.os, "created": CREATED,
        "config": {
            "User": f"{recipe.uid}:{recipe.uid}",
            "Entrypoint": list(recipe.entrypoint),
            "Env": [f"{k}={v}" for k, v in recipe.env],
            "WorkingDir": "/tmp",
            "Labels": {
                "org.opencontainers.image.title": recipe.title,
                "org.opencontainers.image.version": version,
                "dev.ferry.accessory.recipe": recipe.hash,
                "dev.ferry.debian.suite": recipe.suite,
                "dev.ferry.debian.package": f"{recipe.version_of}={version_debian(packages, recipe)}",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED,
                     "created_by": f"ferry accessory assembler {ASSEMBLER_VERSION}: "
                                   f"{len(packages)} {recipe.suite} packages"}],
    }


def version_debian(packages: list[debian.Package], recipe: Recipe) -> str:
    for p in packages:
        if p.name == recipe.version_of:
            return p.version
    raise BuildError(f"{recipe.version_of} is not in the resolution for {recipe.name}",
                     "check the recipe's install list")


# --------------------------------------------------------------------------- the runner

@dataclass
class Built:
    recipe: Recipe
    image: Image
    version: str  # upstream version of the main package (15.20, 7.0.15)
    packages: list[debian.Package] = field(default_factory=list)

    def tags(self, registry: str) -> list[str]:
        """``15-<digest prefix>`` (one per content: a rebuild with a Debian security update
        is a new tag), plus the moving ``15`` where tags may move: ECR's repositories are
        immutable (infra/), so there the image is named by its pinned reference."""
        own = f"{self.recipe.tag}-{self.image.digest.split(':')[1][:12]}"
        return [own] if is_ecr(registry) else [self.recipe.tag, own]


def is_ecr(registry: str) -> bool:
    return ".dkr.ecr." in registry


def _resolve(recipe: Recipe, cache: Cache, refresh: bool, progress: Progress) -> list[debian.Package]:
    lock = cache.root / "locks" / f"accessory-{recipe.hash.split(':')[1][:32]}.json"
    if lock.exists() and not refresh:
        return [debian.Package.from_json(p) for p in json.loads(lock.read_text())["packages"]]
    apt = _apt(cache, recipe.suite)
    progress.info(f"{recipe.name}: apt-get update ({recipe.suite})")
    apt.update()
    # assumed names a suite does not have (perl-modules-5.40 on bookworm) are simply absent
    known = {r["Package"] for r in _show_known(apt, list(recipe.assume_installed))}
    packages = apt.locate(apt.resolve(list(recipe.install), sorted(known)))
    write_atomic(lock, debian.lock_json(PLATFORM.architecture, packages))
    return packages


def _apt(cache: Cache, suite: str) -> debian.Apt:
    return debian.Apt(cache.root / "apt" / f"{PLATFORM.architecture}-{suite}", PLATFORM.architecture, suite)


def _show_known(apt: debian.Apt, names: list[str]) -> list[dict[str, str]]:
    """apt-cache show for the names this suite has (it fails on an unknown one)."""
    out = []
    for name in names:
        try:
            out += apt.show([name])
        except BuildError:
            pass
    return out


def build_one(recipe: Recipe, cache: Cache, refresh: bool = False, progress: Progress = NULL) -> Built:
    packages = _resolve(recipe, cache, refresh, progress)
    missing = [p for p in packages if not (cache.debs / p.filename).exists()]
    if missing:
        progress.info(f"{recipe.name}: downloading {len(missing)} of {len(packages)} packages "
                      f"({sum(p.size for p in missing) / 1e6:.1f} MB)")
        apt = _apt(cache, recipe.suite)
        apt.prepare()
        if not any((apt.root / "state" / "lists").glob("*Packages*")):
            apt.update()
        try:
            apt.download(packages, cache.debs)
        except BuildError:
            apt.update()
            apt.download(packages, cache.debs)
    unpacked = []
    for p in packages:
        path = cache.debs / p.filename
        if path.stat().st_size != p.size:
            raise BuildError(f"cached {p.filename} has the wrong size", f"delete {path}; it will be downloaded again")
        deb = debian.Deb.open(path)
        unpacked.append((p.name, rootfs.entries_from_tar(deb.data, p.name), deb.control_text))
    tree = assemble(recipe, unpacked)
    tar = rootfs.tar_bytes(tree, MTIME)
    diff_id = sha256(tar)
    gz = gzip_bytes(tar)
    layer = Blob(sha256(gz), len(gz), OCI_LAYER_GZIP, path=cache.put_blob(gz))
    full = version_debian(packages, recipe)
    version = debian.upstream_version(full).split("+")[0]
    config = canonical_json(image_config(recipe, version, diff_id, packages))
    image = Image(Blob.from_bytes(config, OCI_CONFIG), (layer,), PLATFORM, annotations={
        "org.opencontainers.image.version": version,
        "dev.ferry.accessory.recipe": recipe.hash,
        "dev.ferry.debian.packages": ",".join(p.spec for p in sorted(packages, key=lambda p: p.name)),
    })
    progress.info(f"{recipe.name}:{recipe.tag} {version}: {len(packages)} packages, "
                  f"layer {len(gz) / 1e6:.1f} MB, {image.digest}")
    return Built(recipe, image, version, packages)


def build(recipes: list[Recipe], cache_dir: Path | None = None, refresh: bool = False,
          progress: Progress = NULL) -> list[Built]:
    cache = Cache(Path(cache_dir) if cache_dir else default_cache_dir())
    with cache.locked(progress):
        out = []
        for r in recipes:
            progress.step(f"assemble {r.name}:{r.tag} from {r.suite} packages")
            out.append(build_one(r, cache, refresh, progress))
        return out


def push(built: list[Built], registry: str, prefix: str = DEFAULT_PREFIX, progress: Progress = NULL,
         auth_mode: str = "auto") -> list[dict]:
    """Push each image as <registry>/<prefix>/<name>:<tag> (and its full version); return
    the pinned references."""
    from ..images.auth import auth_for
    from ..images.publish import RegistryPublisher
    from ..images.registry import RegistryClient

    out = []
    with RegistryClient(registry, auth=auth_for(registry, auth_mode), progress=progress) as client:
        for b in built:
            repo = repository_name(b.recipe.name, prefix)
            r = RegistryPublisher(client, repo, progress=progress).publish(b.image, b.tags(registry))
            out.append({"name": b.recipe.name, "tag": f"{registry}/{repo}:{b.tags(registry)[-1]}",
                        "reference": f"{registry}/{repo}@{r.digest}", "digest": r.digest,
                        "version": b.version, "bytes_uploaded": r.bytes_uploaded})
    return out
