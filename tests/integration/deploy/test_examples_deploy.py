"""The two example apps released on the local target as a user would: a copy of each example's
own ferry.toml (only the app name, repository, ports and the CSRF origin changed), `ferry
release` from its source, traffic through nginx.

- examples/django: migrate as the release command, the SQLite database and the uploads in
  volumes, the task worker as [processes.worker]. Under a bounded load through nginx it goes
  through release 1, guestbook entries with uploads over 1 MB (the form, with its CSRF cookie and
  token), release 2 and 3 (a one-line source change each) and a rollback: 0 failed requests,
  every entry and file still there after each step (through the app, and in the media volume),
  the release command ran once per release, each release's worker ran and processed a queued
  task, and nginx serves an upload itself (proxy.serve).
- `ferry logs` (web and --process worker) and `ferry exec` (the volume, exit codes) on it.
- examples/fastapi: a WebSocket opened through nginx before a swap keeps talking to the old
  colour until nginx's drain ends; a new one reaches the new release; REST rows survive.

Apps e2e-guestbook and e2e-notes, ports 39010-39029, repositories e2e-*, all removed at the end."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ferry.images.registry import RegistryClient
from ferry.loadgen import Load

from .conftest import FERRY, ROOT, ferry, ferry_json

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

ROOT_DIR = Path("/opt/ferry")
SECRET_KEY = "e2e-guestbook-" + uuid.uuid4().hex * 2
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", ".pip", ".uv", "data", "media", "staticfiles")


# --- an example on the local target ----------------------------------------------------------------

class Deployed:
    """A copy of examples/<name> released as ``app`` on the local target."""

    def __init__(self, example: str, app: str, port: int, tmp: Path, docker_cli: list[str], registry: str):
        self.app, self.port, self.docker = app, port, docker_cli
        self.repo = f"{registry}/{app}"
        self.src = tmp / example
        shutil.copytree(ROOT / "examples" / example, self.src, ignore=COPY_IGNORE)
        self.config = self.src / "ferry.toml"
        text = self.config.read_text()
        for pattern, value in ((r'(?m)^name = ".*"$', f'name = "{app}"'),
                               (r'(?m)^repository = ".*"$', f'repository = "{self.repo}"'),
                               (r"(?m)^colours = \{.*\}$", f"colours = {{ blue = {port + 3}, green = {port + 4} }}"),
                               (r"(?m)^http_port = \d+$", f"http_port = {port}"),
                               (r"(?m)^https_port = \d+$", f"https_port = {port + 1}")):
            text, n = re.subn(pattern, value, text)
            assert n == 1, f"examples/{example}/ferry.toml: no line matching {pattern} for the test to set"
        self.config.write_text(text.replace("http://127.0.0.1:8090", self.url))
        self.env = {"SECRET_KEY": SECRET_KEY}  # deploy.secrets: read from ferry's environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def volumes(self) -> Path:
        return ROOT_DIR / self.app / "volumes"

    def release(self, version: str) -> dict:
        r = ferry(self.config, "release", "--version", version, "--json", env=self.env, timeout=900)
        return json.loads(r.stdout)["hosts"][0]

    def release_in_background(self, version: str) -> subprocess.Popen:
        return subprocess.Popen([*FERRY, "-c", str(self.config), "release", "--version", version, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **self.env})

    def change_source(self, path: str, line: str) -> None:
        """A one-line change, so the next release is a new image."""
        f = self.src / path
        f.write_text(f.read_text() + line + "\n")

    def status(self) -> dict:
        return ferry_json(self.config, "status", check=False, env=self.env)["hosts"][0]

    def containers(self) -> list[str]:
        r = subprocess.run([*self.docker, "ps", "--all", "--filter", f"label=dev.ferry.app={self.app}",
                            "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60)
        return r.stdout.split()

    def remove(self, local_target: dict) -> None:
        names = self.containers()
        if names:
            subprocess.run([*self.docker, "rm", "-f", *names], capture_output=True, timeout=120)
        subprocess.run(["umount", str(ROOT_DIR / self.app / "releases.json")], capture_output=True)
        shutil.rmtree(ROOT_DIR / self.app, ignore_errors=True)
        subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)
        listed = subprocess.run([*self.docker, "images", "--format", "{{.Repository}} {{.ID}}"], capture_output=True,
                                text=True, timeout=60).stdout.splitlines()
        ids = sorted({line.split()[1] for line in listed if line.split()[0] == self.repo})
        if ids:
            subprocess.run([*self.docker, "rmi", "-f", *ids], capture_output=True, timeout=300)
        repo = self.repo.split("/", 1)[1]
        with RegistryClient(local_target["registry"]) as c:
            try:
                tags = c.list_tags(repo)
            except Exception:  # noqa: BLE001 - nothing was pushed
                return
            for tag in tags:
                info = c.manifest_info(repo, tag)
                if info is not None:
                    c.delete_manifest(repo, info.digest)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            ) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request through nginx, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def wait_for(what: str, check, timeout: float = 90, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)


# --- examples/django -------------------------------------------------------------------------------

def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = f"----e2e{uuid.uuid4().hex}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for k, (filename, data, ctype) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Guestbook:
    """The guestbook through nginx, as a browser uses it: the form's CSRF cookie and token, the
    Origin header, and what the pages show."""

    def __init__(self, site: Deployed):
        self.site = site
        self.signed: dict[str, bytes] = {}  # name -> the upload

    def sign(self, name: str, upload: bytes) -> None:
        status, headers, body = request(self.site.port, "GET", "/")
        assert status == 200, body[-1500:]
        cookie = re.search(r"csrftoken=([^;]+)", "; ".join(headers.get_all("Set-Cookie") or [])).group(1)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body.decode()).group(1)
        form, ctype = multipart({"csrfmiddlewaretoken": token, "name": name, "message": f"signed by {name}"},
                                {"attachment": (f"{name.lower()}.bin", upload, "application/octet-stream")})
        status, headers, body = request(self.site.port, "POST", "/", form, {
            "Content-Type": ctype, "Cookie": f"csrftoken={cookie}", "Origin": self.site.url,
            "Referer": self.site.url + "/"})
        assert status == 302 and headers["Location"] == "/", (status, body[-2000:])
        self.signed[name] = upload

    def entries(self) -> dict[str, tuple[int, str]]:
        """name -> (id, attachment URL) of every entry the homepage lists (all fit on page 1)."""
        status, _, body = request(self.site.port, "GET", "/")
        assert status == 200, body[-1500:]
        page = body.decode()
        found = {}
        for m in re.finditer(r'<article class="entry" id="entry-(\d+)">\s*<h3><a href="[^"]+">([^<]+)</a>.*?</article>',
                             page, re.S):
            link = re.search(r'<p class="attachment"><a href="([^"]+)">', m.group(0))
            found[m.group(2)] = (int(m.group(1)), link.group(1) if link else "")
        return found

    def inspected(self, entry_id: int) -> str | None:
        """The SHA-256 the worker recorded for an entry's upload (its detail page), if any yet."""
        status, _, body = request(self.site.port, "GET", f"/entries/{entry_id}/")
        assert status == 200
        m = re.search(r"<dt>SHA-256</dt><dd><code>([0-9a-f]{64})</code>", body.decode())
        return m.group(1) if m else None

    def check_nothing_lost(self) -> None:
        """Every entry signed so far is listed, its upload is in the media volume byte for byte,
        and nginx serves it from there."""
        listed = self.entries()
        assert set(self.signed) <= set(listed), f"entries lost: {set(self.signed) - set(listed)}"
        for name, upload in self.signed.items():
            _, url = listed[name]
            assert url.startswith("/media/attachments/"), url
            on_disk = self.site.volumes / "media" / url.removeprefix("/media/")
            assert on_disk.read_bytes() == upload, f"{on_disk} differs from what {name} uploaded"

    def wait_inspected(self, name: str) -> None:
        """The worker of the live release ran the task queued with the entry."""
        entry_id = self.entries()[name][0]
        sha = wait_for(f"the worker to inspect {name}'s upload", lambda: self.inspected(entry_id))
        assert sha == hashlib.sha256(self.signed[name]).hexdigest()


@pytest.fixture(scope="module")
def guestbook(local_target, docker_cli, tmp_path_factory):
    site = Deployed("django", "e2e-guestbook", 39010, tmp_path_factory.mktemp("e2e-django"), docker_cli,
                    local_target["registry"])
    site.remove(local_target)  # a killed earlier run's leftovers
    try:
        site.first = site.release("r1")
        yield site
    finally:
        site.remove(local_target)


def page_release(site: Deployed) -> tuple[str, str]:
    """(X-Ferry-Release, the build marker in the page) of the homepage through nginx."""
    status, headers, body = request(site.port, "GET", "/")
    assert status == 200
    marks = re.findall(r"<!-- e2e build (\w+) -->", body.decode())  # each change appends one: the last
    return headers["X-Ferry-Release"], marks[-1] if marks else "r1"


def test_django_three_releases_and_a_rollback_under_load_lose_no_entry_or_upload(guestbook):
    site, book = guestbook, Guestbook(guestbook)
    one = site.first
    assert one["release_command"]["exit_code"] == 0
    assert one["workers"] == ["e2e-guestbook-worker-1-blue"]
    assert page_release(site) == (one["release"], "r1")
    media = site.volumes / "media"
    assert media.is_dir() and (site.volumes / "data" / "db.sqlite3").is_file()  # SQLite is in the data volume

    load = Load(site.url + "/", concurrency=4, max_seconds=600)
    try:
        book.sign("Ada", os.urandom(1536 * 1024))  # over nginx's default client_max_body_size (1m)
        book.sign("Grace", os.urandom(3 * 1024 * 1024))
        book.wait_inspected("Ada")
        book.wait_inspected("Grace")
        book.check_nothing_lost()

        releases = {"r1": one}
        for version in ("r2", "r3"):
            site.change_source("guestbook/templates/guestbook/base.html", f"<!-- e2e build {version} -->")
            out = site.release(version)
            releases[version] = out
            assert out["action"] != "none" and out["release_command"]["exit_code"] == 0
            assert page_release(site) == (out["release"], version)
            assert out["workers"] == [f"e2e-guestbook-worker-1-{out['colour']}"]
            book.check_nothing_lost()
            name = {"r2": "Linus", "r3": "Barbara"}[version]
            book.sign(name, os.urandom(1200 * 1024))
            book.wait_inspected(name)  # this release's worker ran the queued task
            book.check_nothing_lost()

        back = ferry_json(site.config, "rollback", env=site.env)["hosts"][0]
        assert back["release"] == releases["r2"]["release"] and back["warm"] is True
        assert page_release(site) == (releases["r2"]["release"], "r2")
        assert back["workers"] == [f"e2e-guestbook-worker-1-{releases['r2']['colour']}"]
        book.check_nothing_lost()
        book.sign("Edsger", os.urandom(1100 * 1024))
        book.wait_inspected("Edsger")  # the rolled-back release's worker runs tasks again
        book.check_nothing_lost()
    finally:
        result = load.stop()
    assert result["total"] > 0 and result["failed"] == 0, result["raw"]
    assert set(result["codes"]) == {200}, result["codes"]

    # nginx serves an upload straight from the media volume (proxy.serve): not proxied, so no
    # X-Ferry-Release, and the cache headers of the serve location
    url = book.entries()["Grace"][1]
    status, headers, body = request(site.port, "GET", url)
    assert status == 200 and body == book.signed["Grace"]
    assert "X-Ferry-Release" not in headers and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"].startswith("max-age="), dict(headers)

    st = site.status()
    ids = [releases[v]["release"] for v in ("r1", "r2", "r3")]
    ran = {r["id"]: r.get("release_command") for r in st["releases"]}
    # migrate ran once per release, and not for the rollback
    assert all(ran[i] is not None and ran[i]["exit_code"] == 0 for i in ids), ran
    assert sum(1 for rc in ran.values() if rc is not None) == 3, ran
    assert ran[back["entry"]] is None
    assert [(w["name"], w["running"]) for w in st["workers"][releases["r2"]["release"]]] == \
        [(f"e2e-guestbook-worker-1-{releases['r2']['colour']}", True)]
    for i in (ids[0], ids[2]):  # the other releases' workers ran, then were stopped
        assert [w["running"] for w in st["workers"].get(i, [])] in ([False], []), st["workers"]
    sizes = {v["name"]: v["size"] for v in st["volumes"]}
    assert sizes["media"] >= sum(len(u) for u in book.signed.values()) and sizes["data"] > 0, st["volumes"]


def test_django_logs_show_web_and_worker_lines_and_exec_runs_in_the_live_release(guestbook):
    site = guestbook
    marker = f"/?from=e2e-{uuid.uuid4().hex[:8]}"
    assert request(site.port, "GET", marker)[0] == 200
    logs = wait_for("the access line in ferry logs", lambda: (lambda r: r if marker in r.stdout else None)(
        ferry(site.config, "logs", "--tail", "500", env=site.env, timeout=120)), timeout=30, interval=1)
    line = next(x for x in logs.stdout.splitlines() if marker in x)
    assert f'"GET {marker} HTTP/1.1" 200' in line and "e2e-guestbook-" in line, line
    worker = ferry(site.config, "logs", "--process", "worker", env=site.env, timeout=120)
    assert "worker: started (tasks: inspect_attachment)" in worker.stdout, worker.stdout[-2000:]
    assert "e2e-guestbook-worker-1-" in worker.stdout and '"GET ' not in worker.stdout

    # a one-off container of the live release, with its env, the SECRET_KEY secret and the data volume
    r = ferry(site.config, "exec", "--", "python3", "manage.py", "showmigrations", "guestbook", env=site.env,
              timeout=180)
    assert r.returncode == 0 and "[X] 0001_initial" in r.stdout, r.stdout + r.stderr[-2000:]
    r = ferry(site.config, "exec", "--", "python3", "-c", "import sys; sys.exit(3)", check=False, env=site.env,
              timeout=180)
    assert r.returncode == 3, r.stderr[-2000:]


# --- examples/fastapi ------------------------------------------------------------------------------

@pytest.fixture
def notes(local_target, docker_cli, tmp_path):
    site = Deployed("fastapi", "e2e-notes", 39020, tmp_path, docker_cli, local_target["registry"])
    site.remove(local_target)
    try:
        yield site
    finally:
        site.remove(local_target)


def handshake_release(ws) -> str:
    return ws.response.headers["X-Ferry-Release"]


def test_fastapi_websocket_stays_on_the_old_colour_until_the_drain_and_new_ones_reach_the_new(notes):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    site = notes
    one = site.release("n1")
    assert one["release_command"]["exit_code"] == 0
    written = []
    for title in ("before the swap", "and another"):
        status, _, body = request(site.port, "POST", "/api/notes", json.dumps({"title": title}).encode(),
                                  {"Content-Type": "application/json"})
        assert status == 201, body
        written.append(json.loads(body))
    assert (site.volumes / "data" / "notes.db").is_file()

    site.change_source("app/main.py", "# n2")
    proc = site.release_in_background("n2")
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: (proc.kill(), proc.wait()) if proc.poll() is None else None)
        # opened once the new colour exists, before it takes traffic: nginx's drain of the old
        # workers starts at the swap's reload, not at an earlier one of another app
        wait_for("the new colour's container", lambda: "e2e-notes-green" in site.containers() or proc.poll() is not None,
                 timeout=600)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        old = stack.enter_context(connect(f"ws://127.0.0.1:{site.port}/ws", open_timeout=10))
        assert handshake_release(old) == one["release"], "the swap came before the test's WebSocket opened"
        hello = json.loads(old.recv(timeout=10))
        assert hello["type"] == "hello"

        def swapped():
            return request(site.port, "GET", "/healthz")[1]["X-Ferry-Release"] != one["release"] or None
        wait_for("nginx to serve the new release", swapped, timeout=300, interval=0.2)
        swap_time = time.monotonic()

        # the old connection still talks to the old colour's process (its own message count)
        old.send("still there?")
        assert json.loads(old.recv(timeout=10)) == {"type": "echo", "data": "still there?", "count": hello["count"] + 1}
        assert json.loads(old.recv(timeout=10)) == {"type": "count", "count": hello["count"] + 1, "clients": 1}
        with connect(f"ws://127.0.0.1:{site.port}/ws", open_timeout=10) as new:
            new_release = handshake_release(new)
            assert new_release != one["release"]
            assert json.loads(new.recv(timeout=10)) == {"type": "hello", "clients": 1, "count": 0}  # a fresh process
            # a note made now is announced on the new colour only
            status, _, body = request(site.port, "POST", "/api/notes", b'{"title": "after the swap"}',
                                      {"Content-Type": "application/json"})
            assert status == 201
            assert json.loads(new.recv(timeout=10)) == {"type": "note", "note": json.loads(body)}
        old.send("and now?")  # nothing from the new colour came in between: the note, the new client
        assert json.loads(old.recv(timeout=10)) == {"type": "echo", "data": "and now?", "count": hello["count"] + 2}
        assert json.loads(old.recv(timeout=10)) == {"type": "count", "count": hello["count"] + 2, "clients": 1}
        with pytest.raises(ConnectionClosed):  # nginx's drain (worker_shutdown_timeout) ends it
            while True:
                old.recv(timeout=max(1.0, swap_time + 60 - time.monotonic()))
        assert time.monotonic() - swap_time < 60

        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        two = json.loads(out)["hosts"][0]
        assert two["release"] == new_release and two["release_command"]["exit_code"] == 0

    listed = json.loads(request(site.port, "GET", "/api/notes?limit=100")[2])
    assert all(n in listed for n in written) and [n["title"] for n in listed][0] == "after the swap"
    st = site.status()
    assert [r["release_command"]["exit_code"] for r in st["releases"] if r.get("release_command")] == [0, 0]
