"""Registry credentials, and answering a registry's 401 challenge with them.

Two questions kept apart (as go-containerregistry's ``authn`` does):

* **where credentials come from** (``credentials_for``): the environment
  (FERRY_REGISTRY_USERNAME / FERRY_REGISTRY_PASSWORD), ``~/.docker/config.json`` (inline
  ``auths``, ``credHelpers``, ``credsStore``), or ECR through boto3;
* **how they are presented** (``RegistryAuth``): the registry's ``WWW-Authenticate`` header
  decides. ``Basic`` sends them as they are; ``Bearer`` exchanges them (or nothing, for anonymous
  pulls) at the token server named in the challenge for a token scoped to the repositories
  and actions needed, cached per scope until it expires.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import httpx

from ..errors import AuthError, RegistryError

ENV_USERNAME = "FERRY_REGISTRY_USERNAME"
ENV_PASSWORD = "FERRY_REGISTRY_PASSWORD"
# optional: the registry host the env credentials belong to. Unset, they are offered to any
# registry that asks; set, a base image on another registry is pulled without them (so a
# public registry's token server never sees, nor refuses, the private registry's password).
ENV_REGISTRY = "FERRY_REGISTRY"
ENV_AWS_ENDPOINT = "FERRY_AWS_ENDPOINT_URL"

MODES = ("auto", "env", "docker-config", "ecr", "anonymous")

DOCKER_HUB_HOSTS = ("registry-1.docker.io", "docker.io", "index.docker.io")
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")

LOGIN_HINT = "credentials missing or wrong: set {u}/{p} or run `docker login {registry}`"


def login_hint(registry: str) -> str:
    return LOGIN_HINT.format(u=ENV_USERNAME, p=ENV_PASSWORD, registry=registry)


@dataclass(frozen=True)
class Credentials:
    """A user name and secret for one registry, and where they were found (for messages)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # an OAuth2 refresh token (docker config ``identitytoken``, a helper's ``<token>`` user)
    identity_token: str | None = field(default=None, repr=False)
    source: str = ""

    def basic_header(self) -> str:
        raw = f"{self.username or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()


# --- WWW-Authenticate --------------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-case: "bearer", "basic"
    params: dict[str, str]

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"


def parse_www_authenticate(header: str | None) -> list[Challenge]:
    """Parse RFC 7235 challenges: ``Bearer realm="https://a/token",service="r",scope="x y"``.

    Several challenges may share one header (``Basic realm="a", Bearer realm="b"``); a quoted
    value may hold commas and escaped quotes.
    """
    out: list[Challenge] = []
    if not header:
        return out
    s, i, n = header, 0, len(header)
    current: Challenge | None = None
    while i < n:
        while i < n and s[i] in " \t,":
            i += 1
        m = re.compile(_TOKEN).match(s, i)
        if not m:
            i += 1  # skip a stray character rather than loop forever
            continue
        word, j = m.group(0), m.end()
        k = j
        while k < n and s[k] in " \t":
            k += 1
        if current is not None and k < n and s[k] == "=" and not s.startswith("==", k):
            k += 1
            while k < n and s[k] in " \t":
                k += 1
            if k < n and s[k] == '"':
                k += 1
                buf = []
                while k < n and s[k] != '"':
                    if s[k] == "\\" and k + 1 < n:
                        k += 1
                    buf.append(s[k])
                    k += 1
                value = "".join(buf)
                k += 1
            else:
                v = re.compile(r"[^,\s]*").match(s, k)
                value = v.group(0)
                k = v.end()
            current.params[word.lower()] = value
            i = k
        else:
            current = Challenge(word.lower(), {})
            out.append(current)
            i = j
            # token68 form (``Negotiate abc==``): keep it as a param so nothing is lost
            t = re.compile(r"[ \t]+([A-Za-z0-9._~+/-]+=*)[ \t]*(,|$)").match(s, i)
            if t and not re.compile(r"[ \t]+" + _TOKEN + r"[ \t]*=[^=]").match(s, i):
                current.params["token68"] = t.group(1)
                i = t.end()
    return out


# --- scopes --------------------------------------------------------------------------------

def repo_scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def _parse_scope(scope: str) -> tuple[str, str, set[str]] | None:
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    return parts[0], ":".join(parts[1:-1]), set(filter(None, parts[-1].split(",")))


def scopes_cover(have: tuple[str, ...], need: tuple[str, ...]) -> bool:
    """True when a token granted for ``have`` was asked for everything in ``need``."""
    granted: dict[tuple[str, str], set[str]] = {}
    for s in have:
        p = _parse_scope(s)
        if p:
            granted.setdefault((p[0], p[1]), set()).update(p[2])
    for s in need:
        p = _parse_scope(s)
        if p is None:
            if s not in have:
                return False
        elif not p[2] <= granted.get((p[0], p[1]), set()):
            return False
    return True


def merge_scopes(*groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """One scope per resource with the union of its actions, in a stable order."""
    acc: dict[tuple[str, str], set[str]] = {}
    other: list[str] = []
    for g in groups:
        for s in g:
            p = _parse_scope(s)
            if p is None:
                if s not in other:
                    other.append(s)
            else:
                acc.setdefault((p[0], p[1]), set()).update(p[2])
    order = {"pull": 0, "push": 1, "delete": 2, "*": 3}
    out = [f"{t}:{name}:{','.join(sorted(a, key=lambda x: (order.get(x, 9), x)))}"
           for (t, name), a in sorted(acc.items())]
    return tuple(out + other)


# --- presenting credentials ----------------------------------------------------------------

@dataclass
class _Token:
    value: str
    scopes: tuple[str, ...]
    expires: float


def parse_token_response(body: bytes, now: float) -> tuple[str, float]:
    """(token, expiry) from a token server's JSON. Docker's spec names it ``token``; OAuth2
    servers say ``access_token``; ``expires_in`` defaults to 60 s (the spec's minimum)."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("the token server's answer is not JSON") from None
    token = doc.get("token") or doc.get("access_token")
    if not token:
        raise ValueError("the token server's answer has neither `token` nor `access_token`")
    try:
        ttl = int(doc.get("expires_in") or 60)
    except (TypeError, ValueError):
        ttl = 60
    # renew a little early: a token that expires between our check and the registry's is a 401
    return token, now + max(ttl - 10, ttl / 2)


Fetch = Callable[..., httpx.Response]


class RegistryAuth:
    """Answers 401 challenges for one registry with the credentials given (None: anonymous).

    Thread-safe: the publisher uploads blobs from several threads sharing one client.
    """

    def __init__(self, credentials: Credentials | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._scheme: str | None = None  # learnt from the first challenge
        self._tokens: list[_Token] = []

    @property
    def anonymous(self) -> bool:
        c = self.credentials
        return c is None or not (c.username or c.password or c.identity_token)

    def describe(self) -> str:
        if self.anonymous:
            return "anonymous"
        c = self.credentials
        who = c.username if c.username and c.username != "<token>" else "a token"
        return f"{who} (from {c.source})" if c.source else str(who)

    def headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """The Authorization header to send up front, if this registry's scheme is known."""
        with self._lock:
            if self._scheme == "basic" and not self.anonymous:
                return {"Authorization": self.credentials.basic_header()}
            if self._scheme == "bearer":
                now = self._clock()
                self._tokens = [t for t in self._tokens if t.expires > now]
                for t in reversed(self._tokens):
                    if scopes_cover(t.scopes, scopes):
                        return {"Authorization": f"Bearer {t.value}"}
        return {}

    def authenticate(self, www_authenticate: str | None, scopes: tuple[str, ...], *, fetch: Fetch,
                     registry: str, sent: str | None = None) -> bool:
        """React to a 401. True when new credentials were obtained and a retry may succeed.

        ``sent`` is the Authorization header that was refused: sending it again is pointless.
        """
        challenges = parse_www_authenticate(www_authenticate)
        by_scheme = {c.scheme: c for c in challenges}
        if "bearer" in by_scheme:
            ch = by_scheme["bearer"]
            want = merge_scopes(scopes, ch.scopes)
            with self._lock:
                self._scheme = "bearer"
                # another thread may have fetched a token for this scope while we waited
                now = self._clock()
                for t in reversed(self._tokens):
                    if t.expires > now and scopes_cover(t.scopes, want) and f"Bearer {t.value}" != sent:
                        return True
                token, expires = self._fetch_token(ch, want, fetch, registry)
                self._tokens.append(_Token(token, want, expires))
            return f"Bearer {token}" != sent
        if "basic" in by_scheme:
            with self._lock:
                self._scheme = "basic"
            if self.anonymous:
                return False
            return self.credentials.basic_header() != sent
        return False

    def _fetch_token(self, ch: Challenge, scopes: tuple[str, ...], fetch: Fetch, registry: str) -> tuple[str, float]:
        realm = ch.params.get("realm")
        if not realm:
            raise AuthError(f"registry {registry} asked for a bearer token but named no token server (realm)",
                            "the registry's auth.token.realm setting is missing")
        service = ch.params.get("service")
        c = self.credentials
        headers = {}
        if c is not None and c.identity_token:
            # OAuth2 refresh-token grant, as docker does for an `identitytoken`
            form = {"grant_type": "refresh_token", "refresh_token": c.identity_token,
                    "client_id": "ferry", "scope": " ".join(scopes)}
            if service:
                form["service"] = service
            resp = fetch("POST", realm, data=form)
        else:
            params: list[tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params += [("scope", s) for s in scopes]
            if not self.anonymous:
                headers["Authorization"] = c.basic_header()
                if c.username:
                    params.append(("account", c.username))
            resp = fetch("GET", realm, params=params, headers=headers)
        if resp.status_code == 401:
            who = "no credentials" if self.anonymous else f"the credentials of {self.describe()}"
            raise AuthError(f"token server {realm} for registry {registry} refused {who}: HTTP 401",
                            login_hint(registry), status=401)
        if resp.status_code == 403:
            # the user is known but may not have what was asked: say which rights were missing
            raise AuthError(f"token server {realm} for registry {registry} refused {' '.join(scopes)} "
                            f"to {self.describe()}: HTTP 403",
                            "the credentials have no right to that: grant it, or use other credentials",
                            status=403)
        if resp.status_code != 200:
            raise RegistryError(f"token server {realm} for registry {registry} answered HTTP {resp.status_code}",
                                "check the token server's logs; rerun once it answers", status=resp.status_code)
        try:
            return parse_token_response(resp.content, self._clock())
        except ValueError as e:
            raise RegistryError(f"token server {realm} for registry {registry}: {e}",
                                "is auth.token.realm pointing at a token server?") from None


def anonymous() -> RegistryAuth:
    return RegistryAuth(None)


def basic(username: str, password: str, source: str = "arguments") -> RegistryAuth:
    return RegistryAuth(Credentials(username, password, source=source))


# --- where credentials come from --------------------------------------------------------------

def registry_host(key: str) -> str:
    """The host[:port] a docker-config key means: 'https://host:5000/v1/' -> 'host:5000'."""
    k = re.sub(r"^[a-z]+://", "", key.strip())
    return k.split("/", 1)[0]


def is_docker_hub(registry: str) -> bool:
    return registry in DOCKER_HUB_HOSTS


def is_ecr(registry: str) -> bool:
    return ECR_HOST.match(registry) is not None


def from_env(registry: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if environ is None else environ
    user, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if not user and not password:
        return None
    if not user or not password:
        missing = ENV_PASSWORD if user else ENV_USERNAME
        raise AuthError(f"{missing} is not set but {ENV_USERNAME if user else ENV_PASSWORD} is",
                        f"export both {ENV_USERNAME} and {ENV_PASSWORD}, or neither")
    scope = env.get(ENV_REGISTRY)
    if scope and registry_host(scope) != registry:
        return None
    return Credentials(user, password, source=f"{ENV_USERNAME}/{ENV_PASSWORD}")


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def _entry_for(mapping: Mapping, registry: str):
    """The value of a docker-config map (``auths``, ``credHelpers``) for this registry."""
    if not isinstance(mapping, Mapping):
        return None
    hub = is_docker_hub(registry)
    for key, value in mapping.items():
        host = registry_host(key)
        if host == registry or (hub and is_docker_hub(host)):
            return value
    return None


def parse_docker_auth_entry(entry: Mapping, registry: str, source: str) -> Credentials | None:
    """An ``auths`` entry: base64 ``auth`` ("user:password"), or ``username``/``password``,
    or ``identitytoken``. An empty entry (what ``credsStore`` setups leave) means nothing."""
    if not isinstance(entry, Mapping):
        return None
    user, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        try:
            raw = base64.b64decode(entry["auth"]).decode()
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"{source}: the `auth` of {registry} is not base64 of user:password",
                            f"run `docker login {registry}` again") from None
        if ":" not in raw:
            raise AuthError(f"{source}: the `auth` of {registry} is not base64 of user:password",
                            f"run `docker login {registry}` again")
        user, password = raw.split(":", 1)
    token = entry.get("identitytoken") or None
    if not (user or password or token):
        return None
    return Credentials(user or None, password or None, identity_token=token, source=source)


def run_credential_helper(helper: str, registry: str, *, run=subprocess.run,
                          environ: Mapping[str, str] | None = None) -> Credentials | None:
    """``docker-credential-<helper> get``: the server URL on stdin, JSON on stdout."""
    exe = f"docker-credential-{helper}"
    env = dict(os.environ if environ is None else environ)
    path = shutil.which(exe, path=env.get("PATH"))
    if path is None:
        raise AuthError(f"docker config names the credential helper {helper!r} for {registry}, "
                        f"but {exe} is not on PATH",
                        f"install {exe}, or remove it from {docker_config_path(env)}")
    server = DOCKER_HUB_KEY if is_docker_hub(registry) else registry
    try:
        r = run([path, "get"], input=server, capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        raise AuthError(f"{exe} get {server} did not answer within 60 s",
                        "is it waiting for a keychain password? run it by hand once") from None
    if r.returncode != 0:
        msg = (r.stdout + r.stderr).strip()
        if "not found" in msg.lower():  # the helper protocol's "credentials not found in native keychain"
            return None
        raise AuthError(f"{exe} get {server} failed: {msg[:300] or f'exit {r.returncode}'}",
                        f"run `echo {server} | {exe} get` to see why")
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        raise AuthError(f"{exe} get {server} printed something that is not JSON",
                        "the helper must print {\"Username\": ..., \"Secret\": ...}") from None
    user, secret = doc.get("Username"), doc.get("Secret")
    if not secret:
        return None
    if user == "<token>":  # the helper protocol's way to hand over an identity token
        return Credentials(None, None, identity_token=secret, source=exe)
    return Credentials(user, secret, source=exe)


def from_docker_config(registry: str, *, environ: Mapping[str, str] | None = None,
                       run=subprocess.run) -> Credentials | None:
    """Credentials for ``registry`` as docker would find them: ``credHelpers[registry]``,
    else ``credsStore``, else the inline ``auths`` entry."""
    path = docker_config_path(environ)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise AuthError(f"{path}: not valid JSON ({e})", "fix the file or move it away") from None
    if not isinstance(doc, dict):
        raise AuthError(f"{path}: expected a JSON object", "fix the file or move it away")
    helper = _entry_for(doc.get("credHelpers") or {}, registry)
    if helper:
        return run_credential_helper(helper, registry, run=run, environ=environ)
    if doc.get("credsStore"):
        creds = run_credential_helper(doc["credsStore"], registry, run=run, environ=environ)
        if creds is not None:
            return creds
    entry = _entry_for(doc.get("auths") or {}, registry)
    return parse_docker_auth_entry(entry, registry, str(path)) if entry is not None else None


def from_ecr(registry: str, environ: Mapping[str, str] | None = None) -> Credentials:
    from ..aws.ecr import ecr_credentials

    env = os.environ if environ is None else environ
    return ecr_credentials(registry, endpoint_url=env.get(ENV_AWS_ENDPOINT) or None)


def credentials_for(registry: str, mode: str = "auto", *, environ: Mapping[str, str] | None = None,
                    run=subprocess.run) -> Credentials | None:
    """Credentials for one registry host, per ``image.auth`` in ferry.toml. None: anonymous.

    auto: the environment, then the docker config, then ECR (for ``*.dkr.ecr.*`` hosts).
    """
    if mode not in MODES:
        raise AuthError(f"unknown credentials mode {mode!r}", f"use one of {', '.join(MODES)}")
    if mode == "anonymous":
        return None
    if mode == "env":
        creds = from_env(registry, environ)
        if creds is None:
            raise AuthError(f"image.auth = \"env\" but {ENV_USERNAME}/{ENV_PASSWORD} are not set for {registry}",
                            f"export {ENV_USERNAME} and {ENV_PASSWORD}")
        return creds
    if mode == "docker-config":
        return from_docker_config(registry, environ=environ, run=run)
    if mode == "ecr":
        if not is_ecr(registry):
            raise AuthError(f"image.auth = \"ecr\" but {registry} is not an ECR registry",
                            "ECR hosts look like ACCOUNT.dkr.ecr.REGION.amazonaws.com; use auth = \"auto\"")
        return from_ecr(registry, environ)
    creds = from_env(registry, environ) or from_docker_config(registry, environ=environ, run=run)
    if creds is None and is_ecr(registry):
        creds = from_ecr(registry, environ)
    return creds


def auth_for(registry: str, mode: str = "auto", **kw) -> RegistryAuth:
    return RegistryAuth(credentials_for(registry, mode, **kw))
