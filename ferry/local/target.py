"""Runs the local target: starts, checks and stops the daemons described in components.py.

Every daemon is started detached (its own session, output to a log file, stdin closed) and its
own pid is recorded in ``state.json``; ``down`` stops exactly those pids, after checking that
each still runs the program we started (pids are reused). ``up`` is idempotent: a component
that is already running and healthy is left alone and reported as such.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import LocalConfig
from ..errors import LocalTargetError
from ..processes import pid_alive, stop_pid
from ..progress import NULL, Progress
from .components import REGISTRY_USER, Check, Component, Paths, components

BASE_IMAGE_REPOSITORY = "ferry/python"
BASE_IMAGE_TAG = "3.11"


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    address: str
    running: bool
    healthy: bool
    note: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "pid": self.pid, "address": self.address,
                "running": self.running, "healthy": self.healthy, "note": self.note}


# --- process helpers ---------------------------------------------------------------------------

def pid_runs(pid: int | None, program: str) -> bool:
    """The pid is alive and runs ``program`` (by its executable: daemons rewrite their titles)."""
    if not pid_alive(pid):
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    if program == "{python}":
        return "python" in Path(exe).name
    return Path(exe).name == Path(program).name


def healthy(check: Check, timeout: float = 1.0) -> bool:
    try:
        if check.kind == "tcp":
            host, port = check.target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=timeout):
                return True
        if check.kind == "docker":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(check.target)
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b"OK" in s.recv(4096)
    except OSError:
        return False
    return False


def port_owner(address: str) -> str | None:
    """Who listens on host:port (from ss), for a clear error when a port is taken."""
    if address.startswith("unix://"):
        return None
    port = address.rsplit(":", 1)[1]
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


# --- the target --------------------------------------------------------------------------------

class LocalTarget:
    def __init__(self, settings: LocalConfig | None = None, deploy_root: str = "/opt/ferry",
                 progress: Progress = NULL):
        self.settings = settings or LocalConfig()
        self.paths = Paths(Path(self.settings.state_dir))
        self.deploy_root = deploy_root
        self.progress = progress
        self.components = components(self.settings, deploy_root)

    # state.json: {"components": {name: {"pid": int, "argv": [...]}}}
    def _load_state(self) -> dict:
        try:
            return json.loads(self.paths.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"components": {}}

    def _save_state(self, state: dict) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        tmp = self.paths.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.paths.state_file)

    def _argv(self, c: Component) -> list[str]:
        return [sys.executable if a == "{python}" else a for a in c.argv]

    def _prepare(self) -> None:
        """Directories, keys and passwords: made once, kept across up/down."""
        p = self.paths
        for d in (p.root, p.logs, p.root / "ssh", p.root / "registry" / "storage", p.root / "docker",
                  p.root / "nginx" / "tmp", Path(self.deploy_root)):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(p.root / "ssh", 0o700)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for tool in ("dockerd", "docker-registry", "nginx", "ssh-keygen", "openssl", "htpasswd"):
            if not shutil.which(tool) and not Path("/usr/sbin", tool).exists():
                raise LocalTargetError(f"{tool} is not installed", "run `make setup` (installs the Debian packages)")
        ssh = p.root / "ssh"
        if not (ssh / "host_ed25519").exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ferry-local-host", "-f", str(ssh / "host_ed25519")])
        if not p.ssh_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ferry-local", "-f", str(p.ssh_key)])
        (ssh / "authorized_keys").write_text(Path(str(p.ssh_key) + ".pub").read_text())
        os.chmod(ssh / "authorized_keys", 0o600)
        if not p.registry_password.exists():
            p.registry_password.write_text(secrets.token_urlsafe(18))
            os.chmod(p.registry_password, 0o600)
        if not p.htpasswd.exists():
            _run(["htpasswd", "-B", "-b", "-c", str(p.htpasswd), REGISTRY_USER, p.registry_password.read_text().strip()])
        if not p.token_cert.exists():
            _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", str(p.token_key), "-out", str(p.token_cert), "-days", "3650",
                  "-subj", "/CN=ferry-local-token-issuer"])
            os.chmod(p.token_key, 0o600)

    def up(self, with_base_image: bool = True, pythons: tuple[str, ...] = ()) -> dict:
        """``pythons``: more bases beside the 3.11 one (``ferry local up --python 3.13,3.14``);
        each is a registry check when it is already there."""
        self._prepare()
        state = self._load_state()
        report = []
        changed = False
        self._check_addresses_free(state)
        for c in self.components:
            rec = state["components"].get(c.name, {})
            pid = rec.get("pid")
            if pid_runs(pid, c.argv[0]) and healthy(c.check):
                # config files may have changed under a running daemon: rewrite and compare
                # the interpreter's path differs between checkouts: compare the rest
                same_argv = (rec.get("argv") or [])[1:] == self._argv(c)[1:]
                if self._write_files(c) or not same_argv:
                    self.progress.info(f"{c.name}: config changed, restarting")
                    stop_pid(pid)
                else:
                    self.progress.info(f"{c.name}: already running (pid {pid}, {c.address})")
                    report.append({"name": c.name, "pid": pid, "address": c.address, "action": "none"})
                    continue
            self.progress.step(f"start {c.name} on {c.address}")
            pid = self._start(c)
            state["components"][c.name] = {"pid": pid, "argv": self._argv(c)}
            self._save_state(state)
            changed = True
            report.append({"name": c.name, "pid": pid, "address": c.address, "action": "started"})
        base = None
        extra = {}
        if with_base_image:
            base = self._ensure_base_image()
            for python in pythons:
                if python != BASE_IMAGE_TAG:
                    extra[python] = self._ensure_base_image(python)
            if any(b and b.get("action") not in (None, "none") for b in (base, *extra.values())):
                changed = True
        if not changed:
            self.progress.info("local target already up: nothing changed")
        out = {"changed": changed, "components": report, **self._addresses(), "base_image_build": base}
        if extra:
            out["base_images"] = extra
        return out

    def _check_addresses_free(self, state: dict) -> None:
        """Before starting anything: every address we would listen on is ours or free."""
        for c in self.components:
            pid = state["components"].get(c.name, {}).get("pid")
            if pid_runs(pid, c.argv[0]):
                continue
            if healthy(c.check):
                owner = port_owner(c.address) or "another process"
                raise LocalTargetError(f"{c.name}: {c.address} is already in use by {owner}; nothing was started",
                                       "stop that process, or change the [local] ports in ferry.toml")

    def _write_files(self, c: Component) -> bool:
        changed = False
        for path, content in c.files.items():
            f = Path(path)
            f.parent.mkdir(parents=True, exist_ok=True)
            if not f.exists() or f.read_text() != content:
                f.write_text(content)
                changed = True
        return changed

    def _start(self, c: Component) -> int:
        self._write_files(c)
        for stale in c.stale_files:
            Path(stale).unlink(missing_ok=True)
        log = open(self.paths.logs / f"{c.name}.log", "ab")
        env = {**os.environ, **c.env}
        try:
            proc = subprocess.Popen(self._argv(c), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, close_fds=True)
        except FileNotFoundError as e:
            raise LocalTargetError(f"{c.name}: cannot start {c.argv[0]}: {e}", "run `make setup`") from None
        finally:
            log.close()
        deadline = time.monotonic() + c.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = _tail(self.paths.logs / f"{c.name}.log")
                raise LocalTargetError(f"{c.name} exited at start (code {proc.returncode}): {tail}",
                                       f"see {self.paths.logs / (c.name + '.log')}")
            if healthy(c.check):
                return proc.pid
            time.sleep(0.1)
        proc.terminate()
        raise LocalTargetError(f"{c.name} did not become healthy within {c.start_timeout:.0f}s",
                               f"see {self.paths.logs / (c.name + '.log')}")

    def _ensure_base_image(self, python: str = BASE_IMAGE_TAG) -> dict | None:
        try:
            from ..images.debian import ensure_base_image
        except ImportError as e:
            self.progress.warn(f"base image builder not available ({e}); skipping the base image")
            return {"action": "unavailable", "reason": str(e)}
        reg = f"127.0.0.1:{self.settings.registry_port}"
        self.progress.step(f"base image {reg}/{BASE_IMAGE_REPOSITORY}:{python}")
        return ensure_base_image(registry=reg, repository=BASE_IMAGE_REPOSITORY, tag=python, python=python,
                                 progress=self.progress)

    def status(self) -> dict:
        state = self._load_state()
        out = []
        for c in self.components:
            pid = state["components"].get(c.name, {}).get("pid")
            running = pid_runs(pid, c.argv[0])
            ok = running and healthy(c.check)
            out.append(ComponentStatus(c.name, pid if running else None, c.address, running, ok,
                                       "" if ok else ("not started" if not running else "not answering")).to_json())
        return {"healthy": all(c["healthy"] for c in out), "components": out, **self._addresses()}

    def down(self) -> dict:
        state = self._load_state()
        stopped = []
        for c in reversed(self.components):
            pid = state["components"].get(c.name, {}).get("pid")
            if pid_runs(pid, c.argv[0]):
                self.progress.step(f"stop {c.name} (pid {pid})")
                if c.name == "dockerd":
                    self._stop_containers()
                stop_pid(pid, timeout=40 if c.name == "dockerd" else 15)
                stopped.append(c.name)
            state["components"].pop(c.name, None)
        self._save_state(state)
        if not stopped:
            self.progress.info("local target was not running: nothing to stop")
        return {"stopped": stopped}

    def _stop_containers(self) -> None:
        docker = shutil.which("docker") or "docker"
        host = f"unix://{self.paths.docker_sock}"
        ids = subprocess.run([docker, "-H", host, "ps", "-q"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run([docker, "-H", host, "stop", "-t", "10", *ids], capture_output=True)

    def _addresses(self) -> dict:
        s = self.settings
        return {
            "state_dir": str(self.paths.root),
            "docker_host": f"unix://{self.paths.docker_sock}",
            "registry": f"127.0.0.1:{s.registry_port}",
            "registry_basic": f"127.0.0.1:{s.basic_registry_port}",
            "registry_token": f"127.0.0.1:{s.token_registry_port}",
            "registry_user": REGISTRY_USER,
            "registry_password_file": str(self.paths.registry_password),
            "ssh": f"root@127.0.0.1:{s.ssh_port}",
            "ssh_key": str(self.paths.ssh_key),
            "nginx_conf": str(self.paths.nginx_conf),
            "base_image": f"127.0.0.1:{s.registry_port}/{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
        }


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise LocalTargetError(f"{' '.join(argv[:2])} failed: {r.stderr.strip()[:300]}")


def _tail(path: Path, n: int = 400) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip().replace("\n", " | ")
    except OSError:
        return ""
