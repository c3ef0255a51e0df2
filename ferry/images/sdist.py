"""A dependency published only as an sdist, built into a pure-Python wheel on the build machine.

Many real locks hold one (``dkimpy``, pinned through the FastAPI full-stack template's email
stack, has never published a wheel). Building it here is safe exactly when the result runs
anywhere: a ``py3-none-any`` wheel is the same bytes whatever machine built it. An sdist that
compiles code would be compiled for this machine, not for the image, so its wheel (say
``cp311-cp311-linux_x86_64``) is refused with its name.

The build is uv's isolated PEP 517 build (``uv build --wheel SDIST``) with SOURCE_DATE_EPOCH
set; the wheel is kept in ferry's cache under the sdist's sha256, so an sdist is downloaded,
checked against the lock's hash and built once per machine. The wheel's installed files do not
depend on when it was built, only on the sdist and the version of its build backend (which the
isolated build resolves when it runs): the dependency layer itself is cached by its inputs'
key, locally and in the registry, so a rebuild is rare.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path

from ..errors import BuildError
from .pylock import Pick, is_pure


def build_command(uv: str, sdist: Path, out: Path) -> list[str]:
    return [uv, "build", "--wheel", "--no-progress", "--out-dir", str(out), str(sdist)]


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_hash(pick: Pick, path: Path, source: str) -> str:
    """The file's sha256 after checking every hash the lock gives for it."""
    for algo, want in sorted(pick.hashes.items()):
        if algo not in hashlib.algorithms_available:
            continue
        got = _digest(path, algo)
        if got != want.lower():
            raise BuildError(f"{source}: the sdist {pick.filename} does not match its {algo} hash in the lock "
                             f"(got {got[:16]}..., the lock says {want[:16]}...)",
                             "lock again, or check what the package index serves")
    return _digest(path, "sha256")


def _fetch(pick: Pick, lock_dir: Path | None, dest: Path, env: dict[str, str]) -> Path:
    if pick.path is not None:
        p = Path(pick.path)
        return p if p.is_absolute() or lock_dir is None else (lock_dir / p)
    url = pick.url or ""
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(url).path))
    import httpx

    ca = env.get("SSL_CERT_FILE") or env.get("PIP_CERT")
    verify = ssl.create_default_context(cafile=ca) if ca else True
    target = dest / pick.filename
    try:
        with httpx.Client(verify=verify, trust_env=True, timeout=httpx.Timeout(60.0), follow_redirects=True) as client:
            with client.stream("GET", url) as r:
                if r.status_code != 200:
                    raise BuildError(f"the sdist of {pick.label()} could not be downloaded (HTTP {r.status_code})",
                                     "check that the package index still serves it and that ferry can reach it")
                with open(target, "wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
    except httpx.HTTPError as e:
        raise BuildError(f"the sdist of {pick.label()} could not be downloaded: {type(e).__name__}",
                         "check the network; an index behind a proxy needs its CA in SSL_CERT_FILE or PIP_CERT") from None
    return target


def wheel_for(pick: Pick, *, uv: str, cache_dir: Path, work: Path, env: dict[str, str], mtime: int,
              where: str, source: str, lock_dir: Path | None = None, runner=subprocess.run) -> Path:
    """The pure-Python wheel built from ``pick`` (an sdist), from the cache when it was built before.

    ``where`` describes the image's platform for messages; ``source`` the lock or requirements
    file that named the sdist."""
    sha = pick.hashes.get("sha256")
    if sha:
        hit = _cached(cache_dir / sha.lower())
        if hit:
            return hit
    work.mkdir(parents=True, exist_ok=True)
    local = _fetch(pick, lock_dir, work, env)
    if not local.is_file():
        raise BuildError(f"{source}: the sdist of {pick.label()} is not at {local}",
                         "lock again, or put the file where the lock says")
    sha = _check_hash(pick, local, source)
    hit = _cached(cache_dir / sha)
    if hit:
        return hit
    out = work / f"built-{sha[:12]}"
    r = runner(build_command(uv, local, out), capture_output=True, text=True, cwd=str(work),
               env={**env, "SOURCE_DATE_EPOCH": str(mtime)})
    if r.returncode != 0:
        from .deps import redact

        lines = [ln.strip() for ln in redact((r.stdout or "") + "\n" + (r.stderr or "")).splitlines() if ln.strip()]
        tail = " ".join(lines[-6:])[-700:]
        compiles = any(s in (r.stderr or "").lower() for s in ("gcc", "compiler", "cython", "build_ext", "rustc", "cargo"))
        raise BuildError(f"{source}: {pick.label()} is published only as an sdist, and it could not be built into "
                         "a wheel" + (" (it compiles code)" if compiles else "") + f": {tail}",
                         f"pin a version of {pick.name} that publishes a wheel for the image's platform, or build its "
                         "wheel on a machine of that platform and serve it from your package index")
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"{source}: building the sdist of {pick.label()} gave {len(wheels)} wheels, not one",
                         f"pin a version of {pick.name} that publishes a wheel for the image's platform")
    wheel = wheels[0]
    if not is_pure(wheel.name):
        tag = wheel.name[:-4].split("-", 2)[-1]
        raise BuildError(f"{source}: {pick.label()} is published only as an sdist that compiles code: its wheel "
                         f"is {tag}, built for this machine, not for {where}",
                         f"pin a version of {pick.name} that publishes a manylinux wheel, replace it, or build its "
                         "wheel on a machine of the image's platform (auditwheel repair) and serve it from your index")
    dest = cache_dir / sha
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / (wheel.name + f".{os.getpid()}.tmp")
    shutil.copyfile(wheel, tmp)
    os.replace(tmp, dest / wheel.name)
    return dest / wheel.name


def _cached(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob("*.whl") if p.is_file())
    return found[0] if found else None
