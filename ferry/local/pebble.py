"""pebble (Let's Encrypt's test CA) and pebble-challtestsrv on loopback, for `ferry local up --acme`.

pebble answers ACME on 127.0.0.1:14000 and validates HTTP-01 challenges on ``http_port`` (the
port the local target's nginx answers on), asking pebble-challtestsrv (127.0.0.1:8053) for
every name's address, which is 127.0.0.1 unless a test says otherwise. Debian's pebble ships no
listener certificate, so a small CA and a certificate for 127.0.0.1/localhost are generated
here; ACME clients trust ``ca_bundle`` (never the system store: this CA's key is on disk).

Everything lives under ``<state_dir>/pebble``; ``stop`` ends exactly the pids ``start`` wrote.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from ..errors import LocalTargetError
from ..processes import pid_alive, stop_pid

ACME_PORT = 14000
MANAGEMENT_PORT = 15000
DNS_PORT = 8053
CHALLTESTSRV_PORT = 8055
HOST = "127.0.0.1"


def _dir(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / "pebble"


def addresses(state_dir: str | os.PathLike) -> dict:
    """Where everything is; pure, so callers can name the paths before anything starts."""
    d = _dir(state_dir)
    return {
        "directory": f"https://{HOST}:{ACME_PORT}/dir",
        "management": f"https://{HOST}:{MANAGEMENT_PORT}",
        "root_url": f"https://{HOST}:{MANAGEMENT_PORT}/roots/0",
        "dns": f"{HOST}:{DNS_PORT}",
        "challtestsrv": f"http://{HOST}:{CHALLTESTSRV_PORT}",
        "ca_bundle": str(d / "listener-ca.pem"),
        "dir": str(d),
    }


def config(http_port: int, tls_port: int, listener_cert: str, listener_key: str) -> dict:
    """pebble's -config document (pure)."""
    return {
        "pebble": {
            "listenAddress": f"{HOST}:{ACME_PORT}",
            "managementListenAddress": f"{HOST}:{MANAGEMENT_PORT}",
            "certificate": listener_cert,
            "privateKey": listener_key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }


def challtestsrv_argv() -> list[str]:
    # only the mock DNS and its management API: HTTP-01 is answered by the real nginx
    return ["pebble-challtestsrv", "-defaultIPv4", HOST, "-defaultIPv6", "",
            "-dns01", f"{HOST}:{DNS_PORT}", "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-management", f"{HOST}:{CHALLTESTSRV_PORT}"]


def pebble_argv(config_path: str) -> list[str]:
    return ["pebble", "-config", config_path, "-dnsserver", f"{HOST}:{DNS_PORT}", "-strict=false"]


# Determinism for tests: no artificial validation sleeps, no random badNonce rejections (the
# client retries one, not two in a row), and every order validates its challenges afresh so a
# test of a failing challenge really fails instead of reusing an earlier valid authorization.
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}


def _write_listener_cert(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry local pebble listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "listener-ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "listener.pem").write_bytes(cert.public_bytes(pem))
    k = d / "listener.key"
    k.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    k.chmod(0o600)


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _spawn(argv: list[str], log: Path, env: dict | None = None) -> int:
    # detached, own session, no inherited output: a test run must not hang on our pipes
    with open(log, "ab") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, env={**os.environ, **(env or {})})
    return p.pid


def _ssl_context(ca_bundle: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle)


def _healthy(addr: dict) -> dict:
    checks = {}
    try:
        with urllib.request.urlopen(addr["directory"], context=_ssl_context(addr["ca_bundle"]), timeout=2) as r:
            checks["pebble"] = "newOrder" in json.loads(r.read())
    except Exception:
        checks["pebble"] = False
    try:
        with urllib.request.urlopen(addr["challtestsrv"] + "/", timeout=2):
            checks["challtestsrv"] = True
    except urllib.error.HTTPError:
        checks["challtestsrv"] = True  # it answers 404 on /: it is up
    except Exception:
        checks["challtestsrv"] = False
    return checks


def status(state_dir: str | os.PathLike) -> dict:
    addr = addresses(state_dir)
    d = Path(addr["dir"])
    pids = {name: _pid(d / f"{name}.pid") for name in ("pebble", "challtestsrv")}
    health = _healthy(addr) if Path(addr["ca_bundle"]).exists() else {"pebble": False, "challtestsrv": False}
    components = [
        {"name": "pebble", "pid": pids["pebble"], "address": addr["directory"],
         "healthy": bool(pids["pebble"] and health["pebble"])},
        {"name": "challtestsrv", "pid": pids["challtestsrv"], "address": f"dns {addr['dns']}",
         "healthy": bool(pids["challtestsrv"] and health["challtestsrv"])},
    ]
    return {**addr, "pids": pids, "components": components,
            "healthy": all(health.values()) and all(pids.values()), "checks": health}


def start(state_dir: str | os.PathLike, *, http_port: int = 8080, tls_port: int = 8443,
          timeout: float = 30.0) -> dict:
    """Start pebble-challtestsrv then pebble (idempotent). Returns ``status`` plus ``changed``."""
    addr = addresses(state_dir)
    d = Path(addr["dir"])
    d.mkdir(parents=True, exist_ok=True)
    for tool in ("pebble", "pebble-challtestsrv"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            raise LocalTargetError(f"{tool} is not installed", "apt-get install pebble")
    current = status(state_dir)
    if current["healthy"]:
        cfg = json.loads((d / "pebble-config.json").read_text())["pebble"]
        if cfg["httpPort"] == http_port:
            return {**current, "changed": False}
    if not (d / "listener.pem").exists():
        _write_listener_cert(d)
    (d / "pebble-config.json").write_text(json.dumps(
        config(http_port, tls_port, str(d / "listener.pem"), str(d / "listener.key")), indent=2))
    changed = False
    if not current["pids"]["challtestsrv"]:
        if _port_open(CHALLTESTSRV_PORT) or _port_open(DNS_PORT):
            raise LocalTargetError(f"ports {CHALLTESTSRV_PORT}/{DNS_PORT} are taken by another process",
                                   "stop whatever listens there (ss -ltnp) and retry")
        (d / "challtestsrv.pid").write_text(str(_spawn(challtestsrv_argv(), d / "challtestsrv.log")))
        changed = True
    pebble_pid = current["pids"]["pebble"]
    if pebble_pid and current["checks"].get("pebble") and \
            json.loads((d / "pebble-config.json").read_text())["pebble"]["httpPort"] != http_port:
        stop_pid(pebble_pid)
        pebble_pid = None
    if not pebble_pid:
        if _port_open(ACME_PORT) or _port_open(MANAGEMENT_PORT):
            raise LocalTargetError(f"ports {ACME_PORT}/{MANAGEMENT_PORT} are taken by another process",
                                   "stop whatever listens there (ss -ltnp) and retry")
        (d / "pebble.pid").write_text(
            str(_spawn(pebble_argv(str(d / "pebble-config.json")), d / "pebble.log", PEBBLE_ENV)))
        changed = True
    deadline = time.monotonic() + timeout
    while True:
        st = status(state_dir)
        if st["healthy"]:
            return {**st, "changed": changed}
        for name in ("pebble", "challtestsrv"):
            if not st["pids"][name]:
                log = (d / f"{name}.log").read_text(errors="replace")[-600:]
                raise LocalTargetError(f"{name} exited while starting: {log.strip()}",
                                       f"see {d / (name + '.log')}")
        if time.monotonic() > deadline:
            raise LocalTargetError(f"pebble did not become healthy within {timeout:.0f}s ({st['checks']})",
                                   f"see the logs in {d}")
        time.sleep(0.1)


def stop(state_dir: str | os.PathLike) -> dict:
    """Stop exactly the pebble and challtestsrv that ``start`` recorded."""
    d = _dir(state_dir)
    stopped = []
    for name in ("pebble", "challtestsrv"):
        pid = _pid(d / f"{name}.pid")
        if pid:
            stop_pid(pid)
            stopped.append(name)
        (d / f"{name}.pid").unlink(missing_ok=True)
    return {"stopped": stopped, "changed": bool(stopped)}


def root_pem(state_dir: str | os.PathLike) -> str:
    """pebble's current issuing root (regenerated each time pebble starts)."""
    addr = addresses(state_dir)
    with urllib.request.urlopen(addr["root_url"], context=_ssl_context(addr["ca_bundle"]), timeout=5) as r:
        return r.read().decode()


def _mgmt(state_dir: str | os.PathLike, path: str, body: dict) -> None:
    url = addresses(state_dir)["challtestsrv"] + path
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5):
        pass


def set_address(state_dir: str | os.PathLike, name: str, ipv4: str) -> None:
    """Make the mock DNS answer ``name`` with ``ipv4`` (tests: point a domain elsewhere)."""
    _mgmt(state_dir, "/add-a", {"host": name.rstrip(".") + ".", "addresses": [ipv4]})


def clear_address(state_dir: str | os.PathLike, name: str) -> None:
    _mgmt(state_dir, "/clear-a", {"host": name.rstrip(".") + "."})


def set_servfail(state_dir: str | os.PathLike, name: str) -> None:
    """Make the mock DNS answer SERVFAIL for ``name``: the CA cannot resolve it, so its challenge
    fails without any connection being tried (tests: a CA that cannot reach the domain)."""
    _mgmt(state_dir, "/set-servfail", {"host": name.rstrip(".") + "."})


def clear_servfail(state_dir: str | os.PathLike, name: str) -> None:
    _mgmt(state_dir, "/clear-servfail", {"host": name.rstrip(".") + "."})
