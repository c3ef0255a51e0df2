"""A tiny token issuer for the local target's bearer-token registry (Docker's token auth spec).

    python -m ferry.local.token_server --listen 127.0.0.1:5003 --key KEY.pem --cert CERT.pem \\
        --htpasswd FILE --issuer ISS --service SVC [--read-only USER]...

``GET /token?service=SVC&scope=repository:NAME:pull,push`` with HTTP basic credentials checked
against an htpasswd file (bcrypt, as ``htpasswd -B`` writes it) answers
``{"token": JWT, "access_token": JWT, "expires_in": 300, "issued_at": ...}``. The JWT is
signed with KEY (ES256 for EC P-256 keys, RS256 for RSA) and carries ``kid``: the libtrust key
ID of the key, which is how docker-registry 2.8 finds the verifying key among the public keys
of its ``auth.token.rootcertbundle`` (CERT here).

Grants follow the spec: a known user gets what it asked for, except users named with
``--read-only`` (pull only), so the registry answers ``insufficient_scope`` to their pushes.
Wrong or missing credentials get 401 (no anonymous access).

Also here, pure and for the local target and tests: ``registry_config`` (distribution's YAML
for an anonymous, htpasswd or token registry), ``write_htpasswd``, ``make_signing_key``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DEFAULT_TTL = 300


# --- keys and tokens (pure but for the key material) ----------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key) -> str:
    """docker/libtrust's key ID: the first 240 bits of SHA-256 over the DER
    SubjectPublicKeyInfo, base32, in twelve groups of four joined by ':'."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def load_private_key(path: str | Path):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def signing_alg(key) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"EC key on {key.curve.name}: use P-256 (ES256)")
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    raise ValueError("the signing key must be EC P-256 or RSA")


def sign_jwt(key, header: dict, claims: dict) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))
    if header["alg"] == "ES256":
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants raw r||s, not DER
    else:
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


@dataclass(frozen=True)
class Access:
    type: str
    name: str
    actions: tuple[str, ...]

    def to_json(self) -> dict:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_scopes(values: list[str]) -> list[Access]:
    """``scope`` parameters (each may hold several, space-separated) -> access requests.
    The name may contain ':' (``repository:host:5000/x:pull`` never happens, but
    ``repository(plugin):name:pull`` types do): type is before the first ':', actions after
    the last."""
    out: list[Access] = []
    for v in values:
        for s in v.split():
            parts = s.split(":")
            if len(parts) < 3:
                continue
            out.append(Access(parts[0], ":".join(parts[1:-1]), tuple(a for a in parts[-1].split(",") if a)))
    return out


def grant(requested: list[Access], user: str, read_only: frozenset[str] = frozenset()) -> list[Access]:
    """What ``user`` gets of what it asked (pure). Read-only users get pull only."""
    out = []
    for a in requested:
        if a.type != "repository":
            if a.type == "registry" and a.name == "catalog" and user not in read_only:
                out.append(Access(a.type, a.name, tuple(x for x in a.actions if x == "*")))
            continue
        actions = tuple(x for x in a.actions if x in ("pull", "push", "delete", "*"))
        if user in read_only:
            actions = tuple(x for x in actions if x == "pull")
        if actions:
            out.append(Access(a.type, a.name, actions))
    return out


def issue_token(key, *, issuer: str, service: str, subject: str, access: list[Access],
                ttl: int = DEFAULT_TTL, now: float | None = None, jti: str | None = None) -> str:
    now = int(time.time() if now is None else now)
    header = {"typ": "JWT", "alg": signing_alg(key), "kid": libtrust_key_id(key.public_key())}
    claims = {
        "iss": issuer, "sub": subject, "aud": service,
        "exp": now + ttl, "nbf": now - 10, "iat": now,
        "jti": jti or secrets.token_hex(16),
        "access": [a.to_json() for a in access],
    }
    return sign_jwt(key, header, claims)


# --- htpasswd -------------------------------------------------------------------------------

def hash_password(password: str, rounds: int = 10) -> str:
    import bcrypt

    # $2y$ is what `htpasswd -B` writes and what distribution's Go bcrypt reads; the bytes
    # after the prefix are the same algorithm as Python's $2b$
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode().replace("$2b$", "$2y$", 1)


def write_htpasswd(path: str | Path, users: dict[str, str], rounds: int = 10) -> Path:
    """An htpasswd file with bcrypt hashes (mode 0600), like `htpasswd -B -c`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(f"{u}:{hash_password(pw, rounds)}\n" for u, pw in sorted(users.items())))
    p.chmod(0o600)
    return p


def read_htpasswd(path: str | Path) -> dict[str, bytes]:
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            user, h = line.split(":", 1)
            out[user] = h.encode()
    return out


def check_password(hashes: dict[str, bytes], user: str, password: str) -> bool:
    import bcrypt

    h = hashes.get(user)
    if h is None or not h.startswith((b"$2y$", b"$2b$", b"$2a$")):
        return False  # only bcrypt, as distribution accepts only bcrypt
    try:
        return bcrypt.checkpw(password.encode(), h)
    except ValueError:
        return False


def make_signing_key(directory: str | Path, *, common_name: str = "ferry token issuer",
                     days: int = 3650) -> tuple[Path, Path]:
    """An EC P-256 key (PKCS8 PEM, 0600) and a self-signed certificate for it: the key signs
    tokens, the certificate is the registry's ``rootcertbundle``. Returns (key, cert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = d / "token.key", d / "token.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


# --- distribution's config ------------------------------------------------------------------

def registry_config(port: int, storage_dir: str | Path, auth: str | None = None, *, host: str = "127.0.0.1",
                    htpasswd: str | Path | None = None, realm: str | None = None, service: str | None = None,
                    issuer: str | None = None, rootcertbundle: str | Path | None = None,
                    delete: bool = True, read_only: bool = False, log_level: str = "warn") -> str:
    """docker-registry 2.8's YAML for one registry on loopback (pure).

    auth=None: anonymous. auth="htpasswd": needs ``htpasswd``. auth="token": needs ``realm``
    (the token server's URL), ``service``, ``issuer`` and ``rootcertbundle`` (the cert whose
    key signs the tokens). ``read_only``: every write answers 405 (maintenance mode).
    """
    import yaml

    storage: dict = {"filesystem": {"rootdirectory": str(storage_dir)}, "delete": {"enabled": delete},
                     "cache": {"blobdescriptor": "inmemory"}}
    if read_only:
        storage["maintenance"] = {"readonly": {"enabled": True}, "uploadpurging": {"enabled": False}}
    doc: dict = {
        "version": 0.1,
        "log": {"level": log_level, "accesslog": {"disabled": True}},
        "storage": storage,
        "http": {"addr": f"{host}:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if auth == "htpasswd":
        if not htpasswd:
            raise ValueError("auth='htpasswd' needs htpasswd=PATH")
        doc["auth"] = {"htpasswd": {"realm": "ferry", "path": str(htpasswd)}}
    elif auth == "token":
        missing = [k for k, v in (("realm", realm), ("service", service), ("issuer", issuer),
                                  ("rootcertbundle", rootcertbundle)) if not v]
        if missing:
            raise ValueError(f"auth='token' needs {', '.join(missing)}")
        doc["auth"] = {"token": {"realm": realm, "service": service, "issuer": issuer,
                                 "rootcertbundle": str(rootcertbundle)}}
    elif auth is not None:
        raise ValueError(f"auth must be None, 'htpasswd' or 'token', not {auth!r}")
    return yaml.safe_dump(doc, sort_keys=True)


# --- the server -----------------------------------------------------------------------------

class TokenIssuer:
    def __init__(self, key, htpasswd: str | Path, issuer: str, service: str,
                 read_only: frozenset[str] = frozenset(), ttl: int = DEFAULT_TTL):
        self.key = key
        signing_alg(key)  # refuse unusable keys at start, not at the first request
        self.htpasswd = Path(htpasswd)
        self.issuer, self.service, self.read_only, self.ttl = issuer, service, read_only, ttl
        self._hashes: dict[str, bytes] = {}
        self._mtime = -1.0
        self._lock = threading.Lock()

    def _users(self) -> dict[str, bytes]:
        # re-read when the file changes: a password rotated by `ferry local up` needs no restart
        with self._lock:
            m = self.htpasswd.stat().st_mtime
            if m != self._mtime:
                self._hashes, self._mtime = read_htpasswd(self.htpasswd), m
            return self._hashes

    def answer(self, query: dict[str, list[str]], authorization: str | None) -> tuple[int, dict, dict]:
        """(status, JSON body, extra headers) for one token request (pure but for the clock)."""
        challenge = {"WWW-Authenticate": 'Basic realm="ferry token issuer"'}
        svc = (query.get("service") or [None])[0]
        if svc is not None and svc != self.service:
            return 400, {"errors": [{"code": "UNSUPPORTED", "message": f"unknown service {svc!r}"}]}, {}
        if not authorization or not authorization.lower().startswith("basic "):
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "credentials required"}]}, challenge
        try:
            user, _, password = base64.b64decode(authorization.split(None, 1)[1]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return 400, {"errors": [{"code": "UNAUTHORIZED", "message": "malformed basic credentials"}]}, challenge
        if not check_password(self._users(), user, password):
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong user name or password"}]}, challenge
        access = grant(parse_scopes(query.get("scope") or []), user, self.read_only)
        now = time.time()
        token = issue_token(self.key, issuer=self.issuer, service=self.service, subject=user, access=access,
                            ttl=self.ttl, now=now)
        issued = dt.datetime.fromtimestamp(int(now), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued}, {}


def make_handler(issuer: TokenIssuer, quiet: bool = False):
    class Handler(BaseHTTPRequestHandler):
        server_version = "ferry-token-server"

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path == "/healthz":
                return self._send(200, {"ok": True}, {})
            if url.path != "/token":
                return self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "try /token"}]}, {})
            status, body, headers = issuer.answer(parse_qs(url.query), self.headers.get("Authorization"))
            self._send(status, body, headers)

        def _send(self, status, body, headers):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):  # one line per request on stderr, no secrets in it
            if not quiet:
                sys.stderr.write(f"token-server: {self.address_string()} {fmt % args}\n")

    return Handler


class TokenServer:
    """The issuer on a thread (tests, or anything embedding it). ``port=0`` picks a free port."""

    def __init__(self, issuer: TokenIssuer, host: str = "127.0.0.1", port: int = 0, quiet: bool = False):
        self.httpd = ThreadingHTTPServer((host, port), make_handler(issuer, quiet))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        h, p = self.httpd.server_address[:2]
        return f"{h}:{p}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/token"

    def start(self) -> "TokenServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="token-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ferry.local.token_server",
                                 description="Token issuer for a docker-registry with auth.token.")
    ap.add_argument("--listen", default="127.0.0.1:5003", help="HOST:PORT (default 127.0.0.1:5003)")
    ap.add_argument("--key", required=True, help="PEM private key that signs tokens (EC P-256 or RSA)")
    ap.add_argument("--cert", required=True, help="the certificate of that key (the registry's rootcertbundle)")
    ap.add_argument("--htpasswd", required=True, help="users and bcrypt hashes (htpasswd -B)")
    ap.add_argument("--issuer", required=True, help="must equal the registry's auth.token.issuer")
    ap.add_argument("--service", required=True, help="must equal the registry's auth.token.service")
    ap.add_argument("--read-only", action="append", default=[], metavar="USER", help="grant USER pull only")
    ap.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="token lifetime in seconds")
    a = ap.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    try:
        key = load_private_key(a.key)
        cert_key_id = _cert_key_id(a.cert)
        if cert_key_id != libtrust_key_id(key.public_key()):
            print(f"token-server: {a.cert} is not the certificate of {a.key}: the registry would reject every token",
                  file=sys.stderr)
            return 2
        if not Path(a.htpasswd).is_file():
            print(f"token-server: {a.htpasswd} does not exist (create it with htpasswd -B -c)", file=sys.stderr)
            return 2
        issuer = TokenIssuer(key, a.htpasswd, a.issuer, a.service, frozenset(a.read_only), a.ttl)
        server = TokenServer(issuer, host or "127.0.0.1", int(port))
    except (OSError, ValueError) as e:
        print(f"token-server: {e}", file=sys.stderr)
        return 2
    print(f"token-server: listening on http://{server.address}/token (issuer {a.issuer}, service {a.service}, "
          f"kid {libtrust_key_id(key.public_key())})", file=sys.stderr, flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _cert_key_id(cert_path: str | Path) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return libtrust_key_id(cert.public_key())


if __name__ == "__main__":
    sys.exit(main())
