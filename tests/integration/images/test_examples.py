"""The two example apps, as a user would ship them: `ferry build --push` with their own
ferry.toml, then `docker run` of the pushed image on the local target's engine (host network,
the volumes as bind mounts of temporary folders) and real HTTP and WebSocket traffic.

- examples/django: the homepage's `{% static %}` URLs are the manifest's hashed names and are
  served; a form POST with an upload makes a row and a file in the media volume; the release
  command (migrate) and the worker process run from the image with the commands ferry.toml
  names, and the worker drains the queued task and stops cleanly on SIGTERM.
- examples/fastapi: its release command (alembic upgrade head), rows written and read over
  REST, a WebSocket round trip and broadcast, and a data volume that outlives the container.
- Both on PostgreSQL too (DATABASE_URL, a throwaway cluster of Debian's postgresql).
- Both build reproducibly: a copy in another folder, every file's time changed, built with an
  empty cache on another filesystem, gives the same digest.
- Each example's Dockerfile builds with docker and serves the same app (the benchmark's input).

Each module copies the examples to folders of its own and pushes to repositories of its own
(examples-<name>-<random>), emptied at the end; servers bind 127.0.0.1 on ports 32101-32150."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from ferry import config as ferry_config
from ferry.images.registry import RegistryClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
FERRY = [sys.executable, "-m", "ferry"]
DJANGO_PORT, FASTAPI_PORT = 32101, 32102
DJANGO_PG_PORT, FASTAPI_PG_PORT, POSTGRES_PORT = 32103, 32104, 32150
DJANGO_DOCKERFILE_PORT, FASTAPI_DOCKERFILE_PORT = 32105, 32106
CA_BUNDLE_CANDIDATES = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
APP_UID = 65532  # the base image's user, who must be able to write the volumes
# what a checkout would not carry: local databases, collected files, tool downloads
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", ".pip", ".uv", "data", "media", "staticfiles")


# --- building ------------------------------------------------------------------------------------

class Example:
    """One example app copied to a folder of its own, pushed to a repository of its own."""

    def __init__(self, name: str, folder: Path, registry: str, base: str):
        self.name, self.folder, self.registry, self.base = name, folder, registry, base
        self.repo = f"examples-{name}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(EXAMPLES / name, folder, ignore=COPY_IGNORE)
        toml = folder / "ferry.toml"
        text = toml.read_text()
        for key, value in (("repository", f"{registry}/{self.repo}"), ("base", base)):
            text, n = re.subn(rf'(?m)^{key} = ".*"$', f'{key} = "{value}"', text)
            assert n == 1, f"examples/{name}/ferry.toml has no `{key} = ...` line for the test to set"
        toml.write_text(text)
        self.config = ferry_config.load(toml)

    def build(self, *args: str, cache: Path) -> dict:
        env = {**os.environ, "FERRY_CACHE_DIR": str(cache)}
        env.pop("UV_CACHE_DIR", None)  # uv's cache lives in ferry's: an empty cache is a new machine
        r = subprocess.run([*FERRY, "-c", str(self.folder / "ferry.toml"), "build", "--json", *args], cwd=self.folder,
                           env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.fail(f"ferry build {' '.join(args)} of examples/{self.name} failed ({r.returncode}):\n{r.stderr[-4000:]}")
        doc = json.loads(r.stdout)
        doc["stderr"] = r.stderr
        return doc


@pytest.fixture(scope="module")
def repos(local_target, docker_cli):
    """Repositories the tests pushed to, emptied at the end (the registry has no GC), and the
    images docker pulled from them."""
    made: list[str] = []
    yield made
    listed = subprocess.run([*docker_cli, "images", "--format", "{{.Repository}} {{.ID}}"], capture_output=True,
                            text=True, timeout=60).stdout.splitlines()
    pulled = sorted({line.split()[1] for line in listed
                     if line.split()[0] in {f"{local_target['registry']}/{repo}" for repo in made}})
    if pulled:
        subprocess.run([*docker_cli, "rmi", "-f", *pulled], capture_output=True, timeout=300)
    with RegistryClient(local_target["registry"]) as c:
        for repo in made:
            try:
                tags = c.list_tags(repo)
            except Exception:  # noqa: BLE001 - nothing was pushed to it
                continue
            for tag in tags:
                info = c.manifest_info(repo, tag)
                if info is not None:
                    c.delete_manifest(repo, info.digest)


@pytest.fixture(scope="module")
def base(local_target) -> str:
    """The local base pinned by digest, so every build of the module has the same one even if
    the tag moves meanwhile (the base's own tests re-push it)."""
    repo, tag = local_target["base_image"].split("/", 1)[1].rsplit(":", 1)
    with RegistryClient(local_target["registry"]) as c:
        info = c.manifest_info(repo, tag)
    assert info is not None, f"no {local_target['base_image']} in the registry (ferry local up makes it)"
    return f"{local_target['registry']}/{repo}@{info.digest}"


def built(name: str, local_target, base, repos, tmp_path_factory) -> tuple[Example, dict]:
    ex = Example(name, tmp_path_factory.mktemp(f"ex-{name}") / name, local_target["registry"], base)
    repos.append(ex.repo)
    return ex, ex.build("--push", cache=tmp_path_factory.mktemp(f"ex-{name}-cache"))


def touch_everything(folder: Path, when: float) -> None:
    for p in sorted(folder.rglob("*"), reverse=True):
        os.utime(p, (when, when), follow_symlinks=False)
    os.utime(folder, (when, when))


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (the longest mount point above it)."""
    best, kind = "", "?"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mnt, fstype, *_ = line.split()
        mnt = mnt.replace("\\040", " ")
        if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, kind = mnt, fstype
    return kind


def rebuilt_elsewhere(ex: Example, tmp_path: Path) -> dict:
    """The example copied to another folder, every file's time changed, built with an empty
    cache on another filesystem (tmpfs, which lists directories in another order than ext4)
    and a repository nothing was pushed to (so no layer comes back from the registry)."""
    again = Example(ex.name, tmp_path / "elsewhere" / ex.name, ex.registry, ex.base)
    touch_everything(again.folder, time.time() - 86400 * 365)
    cache = Path(tempfile.mkdtemp(prefix="ferry-examples-cache-", dir="/dev/shm"))
    try:
        assert filesystem_of(cache) == "tmpfs" and filesystem_of(tmp_path) != "tmpfs", \
            "the two builds' caches should be on different filesystems"
        return again.build(cache=cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def docker_build(docker_cli, folder: Path, tag: str) -> None:
    """`docker build` of an example's own Dockerfile, as its README says (BuildKit, the
    package index's CA as a secret, host network for the index)."""
    ca = next((os.environ[v] for v in CA_BUNDLE_CANDIDATES if os.environ.get(v)), "/etc/ssl/certs/ca-certificates.crt")
    r = subprocess.run([*docker_cli, "build", "--network", "host", "--secret", f"id=ca,src={ca}", "-t", tag, str(folder)],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    assert r.returncode == 0, f"docker build of {folder.name}'s Dockerfile failed:\n{r.stderr[-4000:]}"


@pytest.fixture
def docker_images(docker_cli):
    """Tags a test built with docker, removed at the end (they are never pushed)."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        subprocess.run([*docker_cli, "rmi", "-f", tag], capture_output=True, timeout=120)


# --- running -------------------------------------------------------------------------------------

class Container:
    def __init__(self, docker_cli: list[str], name: str):
        self.docker, self.name = docker_cli, name

    def logs(self) -> str:
        r = subprocess.run([*self.docker, "logs", self.name], capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr)[-4000:]

    def running(self) -> bool:
        r = subprocess.run([*self.docker, "inspect", "-f", "{{.State.Running}}", self.name],
                           capture_output=True, text=True, timeout=60)
        return r.stdout.strip() == "true"

    def remove(self) -> None:
        subprocess.run([*self.docker, "rm", "-f", self.name], capture_output=True, timeout=60)


def docker_run_argv(docker_cli: list[str], cfg, image: str, env: dict[str, str], mounts: dict[str, Path],
                    command: tuple[str, ...] = (), detach: str | None = None) -> list[str]:
    """`docker run` as ferry runs the app: host network, the app's env, each volume of
    deploy.volumes mounted at its path; ``command`` replaces the image's entrypoint (a release
    command or a process of ferry.toml)."""
    argv = [*docker_cli, "run", "--network", "host"]
    argv += ["-d", "--name", detach] if detach else ["--rm"]
    for k, v in sorted(env.items()):
        argv += ["-e", f"{k}={v}"]
    for name, path in sorted(cfg.deploy.volumes.items()):
        argv += ["-v", f"{mounts[name]}:{path}"]
    if command:
        argv += ["--entrypoint", command[0], image, *command[1:]]
    else:
        argv.append(image)
    return argv


def volume_dirs(cfg, root: Path) -> dict[str, Path]:
    dirs = {}
    for name in cfg.deploy.volumes:
        d = root / name
        d.mkdir(parents=True)
        os.chown(d, APP_UID, APP_UID)  # as ferry makes them on a host: owned by the image's user
        dirs[name] = d
    return dirs


def start(docker_cli, cfg, image: str, env: dict[str, str], mounts: dict[str, Path], port: int,
          command: tuple[str, ...] = ()) -> Container:
    c = Container(docker_cli, f"examples-{cfg.app.name}-{uuid.uuid4().hex[:8]}")
    r = subprocess.run(docker_run_argv(docker_cli, cfg, image, env, mounts, command, detach=c.name),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    if port:
        wait_healthy(c, port, cfg.deploy.health.path)
    return c


def migrate(docker_cli, cfg, image: str, env: dict[str, str], mounts: dict[str, Path], expect: str) -> None:
    """deploy.release_command in a one-off container of the image, as a release runs it."""
    r = subprocess.run(docker_run_argv(docker_cli, cfg, image, env, mounts, cfg.deploy.release_command),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and expect in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]


def wait_healthy(c: Container, port: int, path: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, body = request("GET", port, path, timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        if not c.running() or time.monotonic() > deadline:
            logs = c.logs()
            c.remove()
            pytest.fail(f"{c.name} never answered {path} on 127.0.0.1:{port}:\n{logs}")
        time.sleep(0.3)


def request(method: str, port: int, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request, redirects not followed (a POST's 302 is part of what is checked)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = f"----ferry{uuid.uuid4().hex}"
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (filename, data, ctype) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def query(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def wait_for(what: str, check, timeout: float = 60, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of this machine's (Debian's postgresql) on 127.0.0.1, in a throwaway
    cluster run as the postgres user: what DATABASE_URL points the examples at. Yields a
    function that makes a database and returns its URL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    assert found, "no PostgreSQL server here: apt-get install postgresql (the Makefile's DEBS has it)"
    bindir = found[-1].parent
    user = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="ferry-examples-pg-"))
    os.chown(root, user.pw_uid, user.pw_gid)
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(root / "db"), "-U", "examples", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    ctl = [*as_pg, str(bindir / "pg_ctl"), "-D", str(root / "db"), "-l", str(root / "log")]
    opts = f"-c listen_addresses=127.0.0.1 -p {POSTGRES_PORT} -k {root}"
    started = subprocess.run([*ctl, "-o", opts, "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr + (root / "log").read_text()[-2000:]

    def database(name: str) -> str:
        subprocess.run([*as_pg, str(bindir / "createdb"), "-h", str(root), "-p", str(POSTGRES_PORT), "-U", "examples", name],
                       check=True, capture_output=True, timeout=60)
        return f"postgres://examples@127.0.0.1:{POSTGRES_PORT}/{name}"

    yield database
    subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


# --- examples/django -----------------------------------------------------------------------------

SECRET_KEY = "examples-test-" + "x" * 40


@pytest.fixture(scope="module")
def django_site(local_target, docker_cli, base, repos, tmp_path_factory):
    """The guestbook built and pushed, migrated by its release command, served by its image."""
    ex, doc = built("django", local_target, base, repos, tmp_path_factory)
    cfg = ex.config
    mounts = volume_dirs(cfg, tmp_path_factory.mktemp("ex-django-volumes"))
    env = {**cfg.deploy.env, "SECRET_KEY": SECRET_KEY}
    migrate(docker_cli, cfg, doc["image"], env, mounts, "Applying guestbook.0001_initial... OK")
    web = start(docker_cli, cfg, doc["image"], {**env, "PORT": str(DJANGO_PORT)}, mounts, DJANGO_PORT)
    yield ex, doc, mounts, env
    web.remove()


def test_django_builds_with_collectstatic_as_a_build_step(django_site):
    ex, doc, _, _ = django_site
    assert [layer["role"] for layer in doc["layers"]] == ["base", "deps", "source", "build"]
    assert "build step 1/1 (linux/amd64): python3 manage.py collectstatic --noinput" in doc["stderr"]
    assert re.search(r"\d+ static files copied to '/app/staticfiles', \d+ post-processed", doc["stderr"])


def test_django_homepage_links_hashed_static_files_that_are_served(django_site, docker_cli):
    ex, doc, _, _ = django_site
    status, _, body = request("GET", DJANGO_PORT, "/")
    assert status == 200, body[-2000:]
    page = body.decode()
    css = re.search(r'<link rel="stylesheet" href="(/static/guestbook/style\.([0-9a-f]{12})\.css)">', page)
    assert css, f"no hashed stylesheet in the homepage:\n{page[:1500]}"

    # the name is the manifest's, as collectstatic wrote it into the image
    manifest = subprocess.run([*docker_cli, "run", "--rm", "--network", "host", "--entrypoint", "python3", doc["image"],
                               "-c", "print(open('/app/staticfiles/staticfiles.json').read())"],
                              capture_output=True, text=True, timeout=120)
    assert manifest.returncode == 0, manifest.stderr
    assert json.loads(manifest.stdout)["paths"]["guestbook/style.css"] == css.group(1).removeprefix("/static/")

    status, headers, styles = request("GET", DJANGO_PORT, css.group(1))
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert "immutable" in headers["Cache-Control"]  # whitenoise: a hashed name never changes
    # the manifest storage rewrote url("bg.svg") to its hashed name, which is served too
    bg = re.search(r'url\("(bg\.[0-9a-f]{12}\.svg)"\)', styles.decode())
    assert bg, styles.decode()[:500]
    status, headers, _ = request("GET", DJANGO_PORT, f"/static/guestbook/{bg.group(1)}")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    # and the compressed copy collectstatic made
    status, headers, gz = request("GET", DJANGO_PORT, css.group(1), headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and gz[:2] == b"\x1f\x8b"


def test_django_form_post_with_an_upload_makes_a_row_and_a_file_in_media(django_site):
    ex, doc, mounts, _ = django_site
    status, headers, body = request("GET", DJANGO_PORT, "/")
    cookie = re.search(r"csrftoken=([^;]+)", headers["Set-Cookie"]).group(1)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body.decode()).group(1)
    upload = os.urandom(3 * 1024 * 1024)  # over 2.5 MB: Django spools it to a temporary file
    name = f"Ada {uuid.uuid4().hex[:6]}"
    form, ctype = multipart({"csrfmiddlewaretoken": token, "name": name, "message": "Lovely site!"},
                            {"attachment": ("notes.bin", upload, "application/octet-stream")})
    status, headers, body = request("POST", DJANGO_PORT, "/", form, {"Content-Type": ctype, "Cookie": f"csrftoken={cookie}"})
    assert status == 302 and headers["Location"] == "/", body[-2000:]

    db = mounts["data"] / "db.sqlite3"
    ((entry_id, attachment),) = query(db, "SELECT id, attachment FROM guestbook_entry WHERE name = ?", name)
    assert re.fullmatch(r"attachments/\d{4}/\d{2}/notes(_\w+)?\.bin", attachment)
    assert (mounts["media"] / attachment).read_bytes() == upload
    assert query(db, "SELECT name, status FROM guestbook_task WHERE payload = ?",
                 json.dumps({"entry_id": entry_id})) == [("inspect_attachment", "pending")]
    status, _, page = request("GET", DJANGO_PORT, "/")
    assert status == 200 and name in page.decode() and f"/media/{attachment}" in page.decode()


def test_django_worker_runs_the_queued_task_and_stops_on_sigterm(django_site, docker_cli):
    import hashlib

    ex, doc, mounts, env = django_site
    cfg = ex.config
    status, headers, body = request("GET", DJANGO_PORT, "/")
    cookie = re.search(r"csrftoken=([^;]+)", headers["Set-Cookie"]).group(1)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body.decode()).group(1)
    upload = os.urandom(100_000)
    form, ctype = multipart({"csrfmiddlewaretoken": token, "name": "Grace", "message": "for the worker"},
                            {"attachment": ("report.pdf", upload, "application/pdf")})
    assert request("POST", DJANGO_PORT, "/", form, {"Content-Type": ctype, "Cookie": f"csrftoken={cookie}"})[0] == 302
    db = mounts["data"] / "db.sqlite3"
    entry_id = query(db, "SELECT max(id) FROM guestbook_entry")[0][0]

    # the process ferry.toml declares, from the same image, env and volumes
    worker = start(docker_cli, cfg, doc["image"], env, mounts, 0, cfg.processes["worker"].command)
    try:
        wait_for("the worker to inspect the upload", lambda: query(
            db, "SELECT attachment_size, attachment_sha256 FROM guestbook_entry WHERE id = ? AND attachment_size IS NOT NULL",
            entry_id))
        assert query(db, "SELECT attachment_size, attachment_sha256 FROM guestbook_entry WHERE id = ?", entry_id) == [
            (len(upload), hashlib.sha256(upload).hexdigest())]
        assert query(db, "SELECT count(*) FROM guestbook_task WHERE status != 'done'") == [(0,)]
        status, _, page = request("GET", DJANGO_PORT, f"/entries/{entry_id}/")
        assert status == 200 and hashlib.sha256(upload).hexdigest() in page.decode()

        stop = subprocess.run([*docker_cli, "stop", "-t", str(int(cfg.processes["worker"].stop_timeout)), worker.name],
                              capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        code = subprocess.run([*docker_cli, "inspect", "-f", "{{.State.ExitCode}}", worker.name],
                              capture_output=True, text=True, timeout=60).stdout.strip()
        logs = worker.logs()
        assert code == "0", logs  # SIGTERM: a clean stop, not a kill
        assert "worker: SIGTERM, stopping after the current task" in logs and "stopped after" in logs, logs
    finally:
        worker.remove()


def test_django_healthz_reports_the_database(django_site):
    status, headers, body = request("GET", DJANGO_PORT, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok" and json.loads(body)["database"] == "sqlite"
    assert "no-cache" in headers["Cache-Control"]


def test_django_on_postgres_migrates_and_stores_entries(django_site, docker_cli, postgres, tmp_path):
    ex, doc, _, env = django_site
    cfg = ex.config
    mounts = volume_dirs(cfg, tmp_path / "volumes")
    env = {**env, "DATABASE_URL": postgres("guestbook")}
    migrate(docker_cli, cfg, doc["image"], env, mounts, "Applying guestbook.0001_initial... OK")
    web = start(docker_cli, cfg, doc["image"], {**env, "PORT": str(DJANGO_PG_PORT)}, mounts, DJANGO_PG_PORT)
    try:
        status, _, body = request("GET", DJANGO_PG_PORT, "/healthz")
        assert json.loads(body)["database"] == "postgresql"
        status, headers, body = request("GET", DJANGO_PG_PORT, "/")
        cookie = re.search(r"csrftoken=([^;]+)", headers["Set-Cookie"]).group(1)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body.decode()).group(1)
        form, ctype = multipart({"csrfmiddlewaretoken": token, "name": "Postgres Pat", "message": "in a real database"}, {})
        status, headers, _ = request("POST", DJANGO_PG_PORT, "/", form, {"Content-Type": ctype, "Cookie": f"csrftoken={cookie}"})
        assert status == 302
        status, _, page = request("GET", DJANGO_PG_PORT, "/")
        assert "Postgres Pat" in page.decode()
        assert not (mounts["data"] / "db.sqlite3").exists()  # nothing went to SQLite
    finally:
        web.remove()


def test_django_dockerfile_builds_the_same_site(django_site, docker_cli, docker_images, tmp_path):
    ex, _, _, env = django_site
    pip = tmp_path / "pip"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(pip), "pip==24.0"],
                   check=True, capture_output=True, timeout=300)
    (ex.folder / ".pip").mkdir(exist_ok=True)
    shutil.copy(next(pip.glob("pip-*.whl")), ex.folder / ".pip" / "pip.whl")
    tag = f"127.0.0.1:5000/examples-django-dockerfile:{uuid.uuid4().hex[:8]}"
    docker_images.append(tag)
    docker_build(docker_cli, ex.folder, tag)

    mounts = volume_dirs(ex.config, tmp_path / "volumes")
    mount_args = [a for name, path in sorted(ex.config.deploy.volumes.items()) for a in ("-v", f"{mounts[name]}:{path}")]
    env_args = [a for k, v in sorted({**env, "BIND_ADDRESS": "127.0.0.1"}.items()) for a in ("-e", f"{k}={v}")]
    migrated = subprocess.run([*docker_cli, "run", "--rm", "--network", "host", *env_args, *mount_args,
                               "--entrypoint", "python3", tag, "manage.py", "migrate", "--noinput"],
                              capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr
    web = Container(docker_cli, f"examples-django-dockerfile-{uuid.uuid4().hex[:8]}")
    r = subprocess.run([*docker_cli, "run", "-d", "--name", web.name, "--network", "host", *env_args, *mount_args,
                        "-e", f"PORT={DJANGO_DOCKERFILE_PORT}", tag], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    try:
        wait_healthy(web, DJANGO_DOCKERFILE_PORT, "/healthz")
        status, _, body = request("GET", DJANGO_DOCKERFILE_PORT, "/")
        css = re.search(r'href="(/static/guestbook/style\.[0-9a-f]{12}\.css)"', body.decode())
        assert status == 200 and css, body[-1500:]
        assert request("GET", DJANGO_DOCKERFILE_PORT, css.group(1))[0] == 200
        user = subprocess.run([*docker_cli, "inspect", "-f", "{{.Config.User}}", tag], capture_output=True, text=True)
        assert user.stdout.strip() == "65532:65532"
    finally:
        web.remove()


def test_django_builds_to_the_same_digest_elsewhere_on_an_empty_cache_on_tmpfs(django_site, tmp_path):
    ex, doc, _, _ = django_site
    again = rebuilt_elsewhere(ex, tmp_path)
    assert {s["kind"]: s["origin"] for s in again["steps"]} == {"deps": "built", "source": "built", "build": "built"}
    assert "build step 1/1" in again["stderr"]  # collectstatic really ran again
    assert again["digest"] == doc["digest"]


# --- examples/fastapi ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fastapi_app(local_target, docker_cli, base, repos, tmp_path_factory):
    ex, doc = built("fastapi", local_target, base, repos, tmp_path_factory)
    cfg = ex.config
    mounts = volume_dirs(cfg, tmp_path_factory.mktemp("ex-fastapi-volumes"))
    env = {**cfg.deploy.env, "PORT": str(FASTAPI_PORT)}
    migrate(docker_cli, cfg, doc["image"], env, mounts, "Running upgrade  -> 11277f3d1579, create notes")
    web = start(docker_cli, ex.config, doc["image"], env, mounts, FASTAPI_PORT)
    yield ex, doc, mounts, env, web
    web.remove()


def test_fastapi_writes_and_reads_rows_over_rest(fastapi_app):
    ex, doc, mounts, _, _ = fastapi_app
    title = f"groceries {uuid.uuid4().hex[:6]}"
    status, _, body = request("POST", FASTAPI_PORT, "/api/notes", json.dumps({"title": title, "body": "eggs"}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 201, body
    note = json.loads(body)
    assert note["title"] == title and note["body"] == "eggs" and note["created_at"].endswith("Z")
    status, _, body = request("GET", FASTAPI_PORT, f"/api/notes/{note['id']}")
    assert status == 200 and json.loads(body) == note
    status, _, body = request("GET", FASTAPI_PORT, "/api/notes?limit=5")
    assert status == 200 and note in json.loads(body)
    assert request("GET", FASTAPI_PORT, "/api/notes/999999")[0] == 404
    assert request("POST", FASTAPI_PORT, "/api/notes", b'{"title": ""}', {"Content-Type": "application/json"})[0] == 422
    # the row is in SQLite, in the data volume
    assert query(mounts["data"] / "notes.db", "SELECT title, body FROM notes WHERE id = ?", note["id"]) == [(title, "eggs")]


def test_fastapi_websocket_echoes_counts_and_broadcasts_new_notes(fastapi_app):
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{FASTAPI_PORT}/ws"
    with connect(url, open_timeout=10) as a, connect(url, open_timeout=10) as b:
        hello_a, hello_b = json.loads(a.recv(timeout=10)), json.loads(b.recv(timeout=10))
        assert hello_a["type"] == hello_b["type"] == "hello" and hello_b["clients"] == 2
        a.send("ping")
        echo = json.loads(a.recv(timeout=10))
        assert echo == {"type": "echo", "data": "ping", "count": hello_b["count"] + 1}
        count = {"type": "count", "count": echo["count"], "clients": 2}
        assert json.loads(a.recv(timeout=10)) == count and json.loads(b.recv(timeout=10)) == count

        status, _, body = request("POST", FASTAPI_PORT, "/api/notes", b'{"title": "live"}',
                                  {"Content-Type": "application/json"})
        assert status == 201
        for ws in (a, b):
            assert json.loads(ws.recv(timeout=10)) == {"type": "note", "note": json.loads(body)}


def test_fastapi_healthz_and_the_data_volume_outlive_the_container(fastapi_app, docker_cli):
    ex, doc, mounts, env, web = fastapi_app
    status, _, body = request("GET", FASTAPI_PORT, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok" and json.loads(body)["database"] == "sqlite"
    before = json.loads(request("GET", FASTAPI_PORT, "/api/notes?limit=100")[2])
    assert before, "the tests before wrote notes"
    web.remove()
    again = start(docker_cli, ex.config, doc["image"], env, mounts, FASTAPI_PORT)
    try:
        assert json.loads(request("GET", FASTAPI_PORT, "/api/notes?limit=100")[2]) == before
    finally:
        again.remove()


def test_fastapi_on_postgres_writes_and_reads_rows(fastapi_app, docker_cli, postgres, tmp_path):
    ex, doc, _, env, _ = fastapi_app
    mounts = volume_dirs(ex.config, tmp_path / "volumes")
    env = {**env, "PORT": str(FASTAPI_PG_PORT), "DATABASE_URL": postgres("notes")}
    migrate(docker_cli, ex.config, doc["image"], env, mounts, "Context impl PostgresqlImpl")
    web = start(docker_cli, ex.config, doc["image"], env, mounts, FASTAPI_PG_PORT)
    try:
        assert json.loads(request("GET", FASTAPI_PG_PORT, "/healthz")[2])["database"] == "postgresql"
        status, _, body = request("POST", FASTAPI_PG_PORT, "/api/notes", b'{"title": "in postgres", "body": "psycopg 3"}',
                                  {"Content-Type": "application/json"})
        assert status == 201
        note = json.loads(body)
        assert json.loads(request("GET", FASTAPI_PG_PORT, f"/api/notes/{note['id']}")[2]) == note
        assert not (mounts["data"] / "notes.db").exists()
    finally:
        web.remove()


def test_fastapi_dockerfile_builds_the_same_service(fastapi_app, docker_cli, docker_images, tmp_path):
    import uv

    ex = fastapi_app[0]
    (ex.folder / ".uv").mkdir(exist_ok=True)
    shutil.copy(uv.find_uv_bin(), ex.folder / ".uv" / "uv")
    tag = f"127.0.0.1:5000/examples-fastapi-dockerfile:{uuid.uuid4().hex[:8]}"
    docker_images.append(tag)
    docker_build(docker_cli, ex.folder, tag)

    mounts = volume_dirs(ex.config, tmp_path / "volumes")
    up = subprocess.run([*docker_cli, "run", "--rm", "--network", "host", "-v", f"{mounts['data']}:/data",
                         "--entrypoint", "alembic", tag, "upgrade", "head"], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    web = Container(docker_cli, f"examples-fastapi-dockerfile-{uuid.uuid4().hex[:8]}")
    r = subprocess.run([*docker_cli, "run", "-d", "--name", web.name, "--network", "host",
                        "-e", f"PORT={FASTAPI_DOCKERFILE_PORT}", "-v", f"{mounts['data']}:/data", tag, "--host", "127.0.0.1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    try:
        wait_healthy(web, FASTAPI_DOCKERFILE_PORT, "/healthz")
        status, _, body = request("POST", FASTAPI_DOCKERFILE_PORT, "/api/notes", b'{"title": "from the Dockerfile"}',
                                  {"Content-Type": "application/json"})
        assert status == 201
        assert query(mounts["data"] / "notes.db", "SELECT title FROM notes") == [("from the Dockerfile",)]
    finally:
        web.remove()


def test_fastapi_builds_to_the_same_digest_elsewhere_on_an_empty_cache_on_tmpfs(fastapi_app, tmp_path):
    ex, doc, _, _, _ = fastapi_app
    again = rebuilt_elsewhere(ex, tmp_path)
    assert {s["kind"]: s["origin"] for s in again["steps"]} == {"deps": "built", "source": "built"}
    assert again["digest"] == doc["digest"]
