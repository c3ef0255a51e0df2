"""ACME HTTP-01 issuance and the certificate swap, in one file that also runs ON the host.

`ferry certs issue|renew` import this module and drive it from the operator's machine over
Fabric; `ferry certs issue` also copies this very file to ``<app_dir>/tls/renew.py`` where the
systemd timer (or cron) runs ``python3 renew.py --config renew.json`` twice a day. One code path
for the first issue, an on-demand renewal and the unattended one, so the tests of one cover all.

That is why this file imports nothing of ferry: only the standard library and the ``acme``
library (PyPI ``acme`` >= 2.1, or Debian's ``python3-acme`` on the host), and why it works with
acme 2.1 (Debian 12) as well as the current release.

The host's files (``tls_dir`` = ``<deploy.root>/<app>/tls``)::

    archive/<version>/{privkey,fullchain,chain,cert}.pem   one directory per certificate
    current -> archive/<version>                           swapped with one rename()
    fullchain.pem privkey.pem chain.pem cert.pem -> current/...   what nginx reads
    account-key.pem  account.json                          ACME account (key 0600)

nginx reads the stable paths; a renewal writes a new archive directory, renames ``current``
(atomic: certificate and key always change together), runs ``nginx -t`` (swapping back if it
fails) and reloads, which is graceful: old workers finish their requests.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

CHALLENGE_DIR = ".well-known/acme-challenge"
KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096")
FILES = ("privkey.pem", "fullchain.pem", "chain.pem", "cert.pem")
KEEP_ARCHIVES = 3


class RenewError(Exception):
    """Issuance or install failed; whatever nginx served before keeps serving."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


@dataclass(frozen=True)
class Settings:
    """Everything one app's renewal needs; written to the host as renew.json."""

    app: str
    domains: tuple[str, ...]
    directory: str
    tls_dir: str
    webroot: str
    nginx_test: tuple[str, ...]
    nginx_reload: tuple[str, ...]
    email: str | None = None
    ca_bundle: str | None = None
    key_type: str = "ecdsa-p256"
    renew_before_days: int = 30
    metrics_dir: str | None = None
    https_port: int = 443
    https_address: str = "127.0.0.1"  # where, on the host, nginx answers HTTPS (to verify a swap)
    timeout: float = 120.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        data = json.loads(text)
        for k in ("domains", "nginx_test", "nginx_reload"):
            data[k] = tuple(data[k])
        return cls(**data)


# --- where commands run: this machine, or a host over SSH (ferry/certs/remote.py) ------------

class Host(Protocol):
    """Files and commands on one host. Files go through these primitives (SFTP remotely), not
    through shell commands: one SSH command costs far more than one SFTP request."""

    name: str

    def run(self, argv: list[str], check: bool = True) -> tuple[int, str]: ...

    def read(self, path: str) -> bytes | None: ...

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Atomic (temp file + rename), parents created, mode set before the content lands."""

    def remove(self, path: str) -> None: ...

    def readlink(self, path: str) -> str | None: ...

    def symlink(self, target: str, path: str) -> None:
        """Point ``path`` at ``target``, replacing whatever is there in one rename()."""

    def listdir(self, path: str) -> list[str]: ...

    def rmtree(self, path: str) -> None: ...


class LocalHost:
    """The machine this code runs on (the host itself, when the timer runs renew.py)."""

    name = "localhost"

    def run(self, argv: list[str], check: bool = True) -> tuple[int, str]:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and p.returncode:
            raise RenewError(f"{shlex.join(argv)} failed (exit {p.returncode}): {p.stdout.strip()[-800:]}")
        return p.returncode, p.stdout

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        # the mode is set before a single byte is written: a key is never readable by others
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(path)
        except OSError:
            return None

    def symlink(self, target: str, path: str) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        self.remove(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def rmtree(self, path: str) -> None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


# --- certificates: pure inspection -------------------------------------------------------------

@dataclass(frozen=True)
class CertInfo:
    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    issuer: str
    serial: str
    ocsp_url: str | None = None

    def days_left(self, now: datetime.datetime | None = None) -> float:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400

    def covers(self, domains: tuple[str, ...] | list[str]) -> bool:
        return set(d.lower() for d in domains) <= set(n.lower() for n in self.names)


def inspect(pem: bytes) -> CertInfo:
    """The leaf (first) certificate of a PEM chain."""
    from cryptography import x509
    from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID, NameOID

    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    ocsp = None
    try:
        aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
        ocsp = next((d.access_location.value for d in aia
                     if d.access_method == AuthorityInformationAccessOID.OCSP), None)
    except x509.ExtensionNotFound:
        pass
    cn = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    org = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    issuer = ", ".join([f"CN={a.value}" for a in cn] + [f"O={a.value}" for a in org]) or cert.issuer.rfc4514_string()
    nb = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)
    na = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return CertInfo(names=names, not_before=nb, not_after=na, issuer=issuer,
                    serial=format(cert.serial_number, "x"), ocsp_url=ocsp)


def renewal_due(info: CertInfo | None, domains, renew_before_days: int,
                now: datetime.datetime | None = None) -> tuple[bool, str]:
    """Whether to ask the CA for a certificate, and why (rate-limit safety lives here)."""
    if info is None:
        return True, "no certificate yet"
    if not info.covers(domains):
        missing = sorted(set(domains) - set(info.names))
        return True, f"the certificate does not cover {', '.join(missing)}"
    left = info.days_left(now)
    # short-lived certificates (6 or 45 days) renew at a third of their life, as certbot does,
    # so a threshold longer than the lifetime never orders a new certificate on every run
    lifetime = (info.not_after - info.not_before).total_seconds() / 86400
    threshold = min(renew_before_days, lifetime / 3)
    if left <= threshold:
        return True, f"{left:.1f} days left (renewing at {threshold:.0f})"
    return False, f"{left:.0f} days left, more than {threshold:.0f}: not due"


def split_chain(fullchain: str) -> tuple[str, str]:
    """(leaf, intermediates) of a PEM chain."""
    marker = "-----END CERTIFICATE-----"
    parts = [p.strip() + "\n" + marker + "\n" for p in fullchain.split(marker) if p.strip()]
    return parts[0], "".join(parts[1:])


# --- keys and CSR --------------------------------------------------------------------------

def new_private_key_pem(key_type: str) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if key_type not in KEY_TYPES:
        raise RenewError(f"unknown key type {key_type!r}", f"use one of {', '.join(KEY_TYPES)}")
    kind, size = key_type.split("-")
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(size))
    else:
        key = ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[size])
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def csr_pem(key_pem: bytes, domains: tuple[str, ...]) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, password=None)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


# --- the ACME conversation --------------------------------------------------------------------

@dataclass
class Account:
    key_pem: bytes
    uris: dict[str, str] = field(default_factory=dict)  # directory URL -> account URL
    changed: bool = False


def load_account(host: Host, tls_dir: str) -> Account:
    key = host.read(f"{tls_dir}/account-key.pem")
    meta = host.read(f"{tls_dir}/account.json")
    if key is None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        # RSA (RS256) because every ACME server and every acme/josepy version speaks it
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        return Account(key, {}, changed=True)
    return Account(key, json.loads(meta) if meta else {})


def save_account(host: Host, tls_dir: str, account: Account) -> None:
    host.write(f"{tls_dir}/account-key.pem", account.key_pem, 0o600)
    host.write(f"{tls_dir}/account.json", (json.dumps(account.uris, indent=2) + "\n").encode(), 0o600)
    account.changed = False


_PROBLEMS = {
    "rateLimited": ("the CA's rate limit was hit",
                    "wait for the window the CA names (Let's Encrypt: see its rate-limit docs), or test "
                    "against the staging directory; the old certificate keeps serving"),
    "unauthorized": ("the CA refused: the HTTP-01 challenge was not answered for this domain",
                     "check that the domain's A/AAAA record points at this host and that port 80 reaches nginx"),
    "connection": ("the CA could not connect to the domain on port 80",
                   "open port 80 to the internet (security group / firewall) and check the DNS record"),
    "dns": ("the CA could not resolve the domain", "create the DNS record (Pulumi: infra Dns) and wait for it"),
    "rejectedIdentifier": ("the CA will not issue for this name", "use a public domain name the CA accepts"),
    "externalAccountRequired": ("the CA requires external account binding (EAB)",
                                "set tls.eab_kid and export the HMAC key in tls.eab_hmac_env"),
    "caa": ("a CAA record forbids this CA", "add a CAA record allowing it, or remove the CAA record"),
}


def explain(error: BaseException) -> RenewError:
    """Turn an acme exception into a message that says what to do."""
    from acme import errors as acme_errors
    from acme import messages

    if isinstance(error, RenewError):
        return error
    if isinstance(error, acme_errors.ValidationError):
        details = []
        code = None
        for authzr in error.failed_authzrs:
            for ch in authzr.body.challenges:
                if ch.error is not None:
                    code = code or (ch.error.code or "")
                    details.append(f"{authzr.body.identifier.value}: {ch.error.detail or ch.error.code}")
        what, hint = _PROBLEMS.get(code or "", _PROBLEMS["unauthorized"])
        return RenewError(f"{what}: {'; '.join(details)}", hint)
    if isinstance(error, messages.Error):
        what, hint = _PROBLEMS.get(error.code or "", (f"the CA answered {error.code or 'an error'}", None))
        return RenewError(f"{what}: {error.detail or error.typ}",
                          hint or "read the CA's message; the old certificate keeps serving")
    if isinstance(error, acme_errors.TimeoutError):
        return RenewError("the CA did not finish validating in time",
                          "retry; if it persists, check that port 80 answers quickly")
    if isinstance(error, (OSError, ConnectionError)) or type(error).__module__.startswith(("requests", "urllib3")):
        return RenewError(f"could not reach the ACME server: {error}",
                          "check tls.acme_directory and the network (and tls.ca_bundle for a private CA)")
    return RenewError(f"ACME failed: {type(error).__name__}: {error}")


def _client(directory: str, account: Account, ca_bundle: str | None, email: str | None,
            eab: tuple[str, str] | None):
    import josepy as jose
    from acme import client, errors as acme_errors, messages
    from cryptography.hazmat.primitives import serialization

    key = jose.JWKRSA(key=serialization.load_pem_private_key(account.key_pem, password=None))
    net = client.ClientNetwork(key, alg=jose.RS256, verify_ssl=ca_bundle or True,
                               user_agent="ferry-certs (acme-python)")
    acme = client.ClientV2(client.ClientV2.get_directory(directory, net), net)
    uri = account.uris.get(directory)
    if uri:
        net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
        return acme
    kwargs = {"email": email} if email else {}
    if eab:
        kwargs["external_account_binding"] = messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(), kid=eab[0], hmac_key=eab[1], directory=acme.directory)
    try:
        regr = acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True, **kwargs))
        uri = regr.uri
    except acme_errors.ConflictError as e:  # this key already has an account: reuse it
        uri = e.location
        net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
    account.uris[directory] = uri
    account.changed = True
    return acme


def challenge_path(webroot: str, token: str) -> str:
    return f"{webroot}/{CHALLENGE_DIR}/{token}"


def obtain(settings: Settings, account: Account, webroots: list[tuple[Host, str]],
           key_pem: bytes, log=print, eab: tuple[str, str] | None = None) -> str:
    """Run one order to the end; return the full chain (PEM). Challenge files are written to
    every (host, webroot) given, so validation succeeds whichever host the CA reaches, and are
    removed afterwards whatever happens."""
    from acme import challenges, messages

    published: list[tuple[Host, str]] = []
    try:
        try:
            acme = _client(settings.directory, account, settings.ca_bundle, settings.email, eab)
            try:
                order = acme.new_order(csr_pem(key_pem, settings.domains))
            except messages.Error as e:
                if e.code not in ("accountDoesNotExist", "unauthorized") or not account.uris.get(settings.directory):
                    raise
                # the CA forgot the account (pebble restarted): register again once
                account.uris.pop(settings.directory, None)
                acme = _client(settings.directory, account, settings.ca_bundle, settings.email, eab)
                order = acme.new_order(csr_pem(key_pem, settings.domains))
            for authz in order.authorizations:
                name = authz.body.identifier.value
                if authz.body.status == messages.STATUS_VALID:
                    log(f"{name}: authorization still valid, no challenge needed")
                    continue
                chall = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
                if chall is None:
                    raise RenewError(f"the CA offers no http-01 challenge for {name}",
                                     "use a CA that supports HTTP-01 (Let's Encrypt does)")
                response, validation = chall.response_and_validation(acme.net.key)
                for host, webroot in webroots:
                    path = challenge_path(webroot, chall.chall.encode("token"))
                    host.write(path, validation.encode(), 0o644)
                    published.append((host, path))
                log(f"{name}: challenge published on {len(webroots)} host(s), asking the CA to validate")
                acme.answer_challenge(chall, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=settings.timeout)
            order = acme.poll_and_finalize(order, deadline)
            return order.fullchain_pem
        except Exception as e:  # noqa: BLE001 - every failure becomes one clear message
            raise explain(e) from e
    finally:
        for host, path in published:
            try:
                host.remove(path)
            except Exception:  # noqa: BLE001 - a leftover token file is harmless
                pass


# --- installing: pure plan, then run ---------------------------------------------------------

def version_name(info: CertInfo, now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S.%fZ}-{info.serial[:12]}"  # sorts in install order


def install(host: Host, settings: Settings, key_pem: bytes, fullchain: str, log=print,
            check_served: bool = True) -> CertInfo:
    """Write the new certificate beside the old one, swap ``current``, ``nginx -t`` (swap back on
    failure) and reload nginx gracefully."""
    info = inspect(fullchain.encode())
    leaf, chain = split_chain(fullchain)
    d = settings.tls_dir
    version = version_name(info)
    archive = f"{d}/archive/{version}"
    host.write(f"{archive}/privkey.pem", key_pem, 0o600)
    host.write(f"{archive}/fullchain.pem", fullchain.encode(), 0o644)
    host.write(f"{archive}/chain.pem", (chain or leaf).encode(), 0o644)
    host.write(f"{archive}/cert.pem", leaf.encode(), 0o644)
    previous = host.readlink(f"{d}/current") or ""
    # rename() of a symlink is atomic: nginx never sees a key from one certificate and the
    # certificate of another
    host.symlink(f"archive/{version}", f"{d}/current")
    # the stable names nginx reads; made once, then they follow `current`
    for name in FILES:
        if host.readlink(f"{d}/{name}") != f"current/{name}":
            host.symlink(f"current/{name}", f"{d}/{name}")
    rc, out = host.run(list(settings.nginx_test), check=False)
    if rc:
        if previous:
            host.symlink(previous, f"{d}/current")
        raise RenewError(f"nginx rejected the new certificate, the old one keeps serving: {out.strip()[-600:]}",
                         "read nginx's message above; nothing was reloaded")
    host.run(list(settings.nginx_reload))
    log(f"installed certificate {info.serial} (expires {info.not_after:%Y-%m-%d}) and reloaded nginx")
    _prune(host, d, keep={version, previous.rsplit("/", 1)[-1]})
    if check_served:
        verify(host, settings, info.serial, log)
    return info


def served_serial_argv(settings: Settings) -> list[str]:
    addr = settings.https_address
    target = f"[{addr}]:{settings.https_port}" if ":" in addr else f"{addr}:{settings.https_port}"
    return ["sh", "-c", f"openssl s_client -connect {shlex.quote(target)} -servername "
                        f"{shlex.quote(settings.domains[0])} </dev/null 2>/dev/null | openssl x509 -noout -serial"]


def verify(host: Host, settings: Settings, serial: str, log=print, timeout: float = 15.0) -> bool:
    """A reload is asynchronous (nginx starts new workers after the signal): wait until a TLS
    handshake on the host gets the new certificate, so "done" means clients see it."""
    deadline = time.monotonic() + timeout
    seen = ""
    while True:
        _, out = host.run(served_serial_argv(settings), check=False)
        seen = out.strip().partition("=")[2].lower().lstrip("0")
        if seen == serial.lstrip("0"):
            log(f"nginx serves certificate {serial} on {settings.https_address}:{settings.https_port}")
            return True
        if time.monotonic() > deadline:
            log(f"warning: after {timeout:.0f}s nginx still serves {seen or 'no certificate'} on "
                f"{settings.https_address}:{settings.https_port} for {settings.domains[0]} (installed {serial}); "
                "is the HTTPS site enabled? (`ferry certs issue` switches it on)")
            return False
        time.sleep(0.2)


def _prune(host: Host, tls_dir: str, keep: set[str]) -> None:
    versions = sorted(v for v in host.listdir(f"{tls_dir}/archive") if v)
    for v in versions[:-KEEP_ARCHIVES]:
        if v not in keep:
            host.rmtree(f"{tls_dir}/archive/{v}")


# --- the expiry metric (node_exporter textfile collector) -------------------------------------

def metric_text(app: str, domain: str, info: CertInfo | None, *, success: bool,
                now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    labels = f'app="{_esc(app)}",domain="{_esc(domain)}"'
    lines = []
    if info is not None:
        lines += [
            "# HELP ferry_certificate_expiry_days Days until the installed certificate expires, at the last check.",
            "# TYPE ferry_certificate_expiry_days gauge",
            f"ferry_certificate_expiry_days{{{labels}}} {info.days_left(now):.3f}",
            "# HELP ferry_certificate_not_after_timestamp_seconds When the installed certificate expires "
            "(alert on this minus time(): it never goes stale).",
            "# TYPE ferry_certificate_not_after_timestamp_seconds gauge",
            f"ferry_certificate_not_after_timestamp_seconds{{{labels}}} {int(info.not_after.timestamp())}",
        ]
    lines += [
        "# HELP ferry_certificate_renewal_success Whether the last renewal check succeeded (1) or failed (0).",
        "# TYPE ferry_certificate_renewal_success gauge",
        f"ferry_certificate_renewal_success{{{labels}}} {1 if success else 0}",
        "# HELP ferry_certificate_renewal_last_run_timestamp_seconds When the renewal check last ran.",
        "# TYPE ferry_certificate_renewal_last_run_timestamp_seconds gauge",
        f"ferry_certificate_renewal_last_run_timestamp_seconds{{{labels}}} {int(now.timestamp())}",
    ]
    return "\n".join(lines) + "\n"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metric_path(metrics_dir: str, app: str) -> str:
    return f"{metrics_dir}/ferry_certs_{app}.prom"


def write_metric(host: Host, settings: Settings, info: CertInfo | None, success: bool) -> None:
    if not settings.metrics_dir:
        return
    # written whole and renamed: node_exporter never reads half a file
    host.write(metric_path(settings.metrics_dir, settings.app),
               metric_text(settings.app, settings.domains[0], info, success=success).encode(), 0o644)


def current(host: Host, settings: Settings) -> CertInfo | None:
    pem = host.read(f"{settings.tls_dir}/fullchain.pem")
    if not pem:
        return None
    try:
        return inspect(pem)
    except ValueError:
        return None


# --- the host-side entry point (systemd timer / cron) ----------------------------------------

def renew(host: Host, settings: Settings, *, force: bool = False, log=print,
          webroots: list[tuple[Host, str]] | None = None,
          eab: tuple[str, str] | None = None) -> dict:
    """Renew if due (or forced); always refresh the metric. Returns what happened."""
    info = current(host, settings)
    due, why = renewal_due(info, settings.domains, settings.renew_before_days)
    if not due and not force:
        log(f"{settings.domains[0]}: {why}")
        write_metric(host, settings, info, success=True)
        return {"renewed": False, "reason": why, "serial": info.serial if info else None}
    log(f"{settings.domains[0]}: {'forced' if not due else why}; ordering a new certificate")
    account = load_account(host, settings.tls_dir)
    try:
        key_pem = new_private_key_pem(settings.key_type)
        fullchain = obtain(settings, account, webroots or [(host, settings.webroot)], key_pem, log=log, eab=eab)
        if account.changed:
            save_account(host, settings.tls_dir, account)
        new = install(host, settings, key_pem, fullchain, log=log)
    except RenewError:
        if account.changed and account.uris:
            save_account(host, settings.tls_dir, account)
        write_metric(host, settings, info, success=False)
        raise
    write_metric(host, settings, new, success=True)
    return {"renewed": True, "reason": "forced" if not due else why, "serial": new.serial,
            "previous_serial": info.serial if info else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Renew this host's ACME certificate if it is due.")
    ap.add_argument("--config", required=True, help="renew.json written by `ferry certs issue`")
    ap.add_argument("--force", action="store_true", help="renew even if not due")
    args = ap.parse_args(argv)
    with open(args.config) as f:
        settings = Settings.from_json(f.read())
    host = LocalHost()

    def log(msg: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ferry-certs[{settings.app}] {msg}", flush=True)

    # one renewal at a time per app: the timer and a manual run must not interleave
    with open(f"{settings.tls_dir}/.renew.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another renewal is running; nothing to do")
            return 0
        try:
            result = renew(host, settings, force=args.force, log=log)
        except RenewError as e:
            log(f"error: {e}")
            return 1
    log(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
