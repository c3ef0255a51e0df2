"""`ferry certs issue | renew | status`, from the operator's machine (or CI) over SSH.

issue:  domain + config checks → connect → is a certificate due? (rate-limit safety) → DNS
        pre-check → the host serves the ACME path on port 80 (probe) → ACME order with the
        challenge written to every host's webroot → install on every host (new archive dir,
        atomic swap, ``nginx -t``, reload) → switch the site to HTTPS (ferry/nginx.py ``apply``)
        → install the renewer + its timer (or cron) → expiry metric.
renew:  the same, for hosts whose certificate is already set up; nothing is ordered unless due
        or ``--force``.
status: what each host has on disk and what nginx actually serves.

Any failure before the swap changes nothing that serves traffic; a failure at ``nginx -t``
swaps the old certificate back. The old certificate keeps serving either way.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shlex
import socket
import ssl
from pathlib import Path

from .. import assets, nginx
from ..config import Config
from ..errors import CertError, ConfigError, FerryError
from ..fleet.connect import Connected, connected
from ..fleet.hosts import HostTarget
from ..progress import NULL, Progress
from . import dns, units
from . import renewer as R
from .remote import RemoteHost



def dhparam() -> Path:
    """RFC 7919's ffdhe2048 group, shipped with ferry (nothing to generate on the host)."""
    return assets.path("nginx", "ffdhe2048.pem")


def domains(cfg: Config) -> tuple[str, ...]:
    if not cfg.app.domain:
        raise ConfigError("app.domain: not set, and a certificate needs a domain",
                          'set domain = "app.example.com" under [app] (its DNS record comes from the Pulumi stack)')
    return tuple(dict.fromkeys([cfg.app.domain.lower(), *(d.lower() for d in cfg.tls.domains)]))


def settings(cfg: Config) -> R.Settings:
    """What the renewer on the host needs (pure): written there as renew.json."""
    d = nginx.app_dir(cfg)
    return R.Settings(
        app=cfg.app.name,
        domains=domains(cfg),
        directory=cfg.tls.acme_directory,
        tls_dir=f"{d}/tls",
        webroot=f"{d}/acme",
        nginx_test=tuple(nginx.nginx_argv(cfg, "-t", "-q")),
        nginx_reload=tuple(nginx.nginx_argv(cfg, "-s", "reload")),
        email=cfg.tls.email,
        # the host trusts its own copy of a private ACME CA (pebble), never the operator's path
        ca_bundle=f"{d}/tls/acme-ca.pem" if cfg.tls.ca_bundle else None,
        key_type=cfg.tls.key_type,
        renew_before_days=cfg.tls.renew_before_days,
        metrics_dir=cfg.tls.metrics_dir,
        https_port=cfg.proxy.https_port,
        https_address="127.0.0.1" if cfg.proxy.listen in ("0.0.0.0", "", "*", "::") else cfg.proxy.listen,
        timeout=cfg.tls.timeout,
    )


def _operator_settings(cfg: Config, s: R.Settings) -> R.Settings:
    """The same settings, but trusting the ACME CA from the operator's own ca_bundle path."""
    import dataclasses

    return dataclasses.replace(s, ca_bundle=str(cfg.resolve(cfg.tls.ca_bundle)) if cfg.tls.ca_bundle else None)


def _eab(cfg: Config) -> tuple[str, str] | None:
    if not cfg.tls.eab_kid:
        return None
    key = os.environ.get(cfg.tls.eab_hmac_env)
    if not key:
        raise ConfigError(f"tls.eab_kid is set but {cfg.tls.eab_hmac_env} is not in the environment",
                          f"export {cfg.tls.eab_hmac_env}=<the HMAC key your CA gave you>")
    return cfg.tls.eab_kid, key


# --- pre-checks ----------------------------------------------------------------------------

def public_names(t: HostTarget) -> tuple[str, ...]:
    """Where the internet reaches host ``t``: the stack's public IPv4, IPv6 and public DNS name
    (or deploy.hosts as written). Never its private IP (what nginx also answers to, for the
    load balancer's health check) nor, through SSM, its instance id."""
    if t.public:
        return t.public
    return () if t.gateway else (t.spec.hostname,)


def expected_addresses(cfg: Config, hosts: list[Connected]) -> set[str]:
    if cfg.tls.public_addresses:
        return set(cfg.tls.public_addresses)
    # the public addresses the stack knows for each host (or deploy.hosts as written); a record
    # that points anywhere else (an old IP, the load balancer) fails the check
    return dns.host_addresses([n for h in hosts for n in public_names(h.target)])


def dns_precheck(cfg: Config, hosts: list[Connected], progress: Progress) -> dict[str, set[str]]:
    names = domains(cfg)
    res = [dns.resolve(n, cfg.tls.resolver) for n in names]
    expected = expected_addresses(cfg, hosts)
    dns.check(res, expected)
    progress.info(f"DNS: {', '.join(names)} -> {', '.join(sorted(expected))}")
    return {r.name: set(r.addresses) for r in res}


def routable(address: str) -> bool:
    """This machine has a route to ``address`` (a UDP connect sends nothing): an operator or CI
    runner without IPv6 cannot probe a host's IPv6 address, which says nothing about the host."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return True  # not a plain IP literal: let the request itself say
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((address, 80))
        return True
    except OSError:
        return False


def http_probe(cfg: Config, hosts: list[Connected], resolved: dict[str, set[str]] | None, progress: Progress) -> None:
    """Serve a random file from every host's webroot and fetch it the way the CA will: the name's
    address on port http_port, Host: the name. Catches a closed port 80, a site that is not
    deployed or lacks the ACME location, before the CA counts a failed validation.

    Only public addresses are probed: what the name resolves to (checked against the hosts'
    public addresses), else the hosts' public addresses; never a private IP or instance id."""
    import httpx

    s = settings(cfg)
    public = expected_addresses(cfg, hosts)
    if not public:
        raise CertError("port-80 probe: ferry does not know this host's public address",
                        "set tls.public_addresses (the Elastic IP from the Pulumi outputs); nothing was changed")
    token = "ferry-probe-" + secrets.token_urlsafe(12)
    body = secrets.token_hex(16)
    path = R.challenge_path(s.webroot, token)
    rhosts = [RemoteHost(h.host) for h in hosts]
    for rh in rhosts:
        rh.write(path, body.encode())
    try:
        for name in s.domains:
            addresses = sorted((resolved or {}).get(name) or public)
            reachable = [a for a in addresses if routable(a)]
            for addr in sorted(set(addresses) - set(reachable)):
                progress.warn(f"{name}: no route from this machine to {addr}: not probed (the CA will try it)")
            if not reachable:
                raise CertError(f"{name}: no route from this machine to {', '.join(addresses)}: "
                                f"port {cfg.proxy.http_port} cannot be probed",
                                "run `ferry certs issue` from a machine with a route to it (IPv6 for an AAAA "
                                "record); nothing was changed")
            for addr in reachable:
                host = f"[{addr}]" if ":" in addr else addr
                url = f"http://{host}:{cfg.proxy.http_port}/.well-known/acme-challenge/{token}"
                try:
                    r = httpx.get(url, headers={"Host": name}, timeout=10, follow_redirects=False)
                    ok, got = r.status_code == 200 and r.text.strip() == body, f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    ok, got = False, f"{type(e).__name__}: {e}"
                if not ok:
                    raise CertError(
                        f"{name}: port {cfg.proxy.http_port} of {addr} did not serve the ACME challenge path ({got})",
                        "is the app deployed (`ferry deploy`/`ferry release` writes its nginx site) and port "
                        f"{cfg.proxy.http_port} open to the internet? nothing was changed")
        progress.info(f"port {cfg.proxy.http_port} serves /.well-known/acme-challenge/ for {', '.join(s.domains)}")
    finally:
        for rh in rhosts:
            rh.remove(path)


# --- host preparation and the renewer ----------------------------------------------------------

def prepare(cfg: Config, rh: RemoteHost) -> None:
    s = settings(cfg)
    rh.makedirs(f"{s.webroot}/{R.CHALLENGE_DIR}")
    rh.makedirs(s.tls_dir)
    rh.write(f"{s.tls_dir}/dhparam.pem", dhparam().read_bytes())
    if cfg.tls.ca_bundle:
        src = cfg.resolve(cfg.tls.ca_bundle)
        if not src.is_file():
            raise ConfigError(f"tls.ca_bundle: {src} does not exist", "point it at the ACME server's CA (PEM)")
        rh.write(s.ca_bundle, src.read_bytes())


def renewal_kind(cfg: Config, rh: RemoteHost) -> str:
    if cfg.tls.renewal != "auto":
        return cfg.tls.renewal
    return "systemd" if rh.exists("/run/systemd/system") else "cron"


def install_renewer(cfg: Config, rh: RemoteHost, fleet: int = 1) -> dict:
    """renew.py + renew.json + the timer (or cron entry) on the host; returns what runs it."""
    s = settings(cfg)
    d = nginx.app_dir(cfg)
    rh.write(f"{s.tls_dir}/renew.py", Path(R.__file__).read_bytes(), 0o755)
    rh.write(f"{s.tls_dir}/renew.json", s.to_json().encode(), 0o600)
    if s.metrics_dir:
        rh.makedirs(s.metrics_dir)
    # several hosts must share one certificate and every host must answer the challenge: a
    # timer per host would order one each and publish the token on one host only. There the
    # renewal runs from one place that reaches them all: `ferry certs renew` on a CI schedule.
    kind = "none" if fleet > 1 and cfg.tls.renewal == "auto" else renewal_kind(cfg, rh)
    out = {"kind": kind, "command": units.command(cfg.tls.host_python, d), "files": []}
    if kind == "none":
        remove_renewer(cfg, rh)
        if fleet > 1:
            out["note"] = "several hosts: schedule `ferry certs renew` (daily) in CI; see nginx/TLS.md"
        return out
    for path, text in units.files(kind, cfg.app.name, cfg.tls.host_python, d, s.metrics_dir).items():
        rh.write(path, text.encode(), 0o644)
        out["files"].append(path)
    for argv in units.enable_commands(kind, cfg.app.name):
        rh.run(argv)
    # one command for both facts: each SSH command costs a session
    _, facts = rh.run(["sh", "-c", f"{shlex.quote(cfg.tls.host_python)} -c 'import acme' 2>/dev/null && echo acme; "
                                   "pgrep -x cron >/dev/null || pgrep -x crond >/dev/null && echo cron"], check=False)
    out["host_python_has_acme"] = "acme" in facts.split()
    if kind == "cron":
        out["scheduler_running"] = "cron" in facts.split()
    return out


def remove_renewer(cfg: Config, rh: RemoteHost) -> None:
    for kind in ("systemd", "cron"):
        for path in units.files(kind, cfg.app.name, cfg.tls.host_python, nginx.app_dir(cfg), None):
            rh.remove(path)


# --- the commands ---------------------------------------------------------------------------

def _cert_json(cfg: Config, info: R.CertInfo | None, now: datetime.datetime | None = None) -> dict:
    if info is None:
        return {"not_after": None, "days_left": None, "issuer": None, "serial": None, "names": []}
    return {"not_after": info.not_after.isoformat(), "days_left": round(info.days_left(now), 2),
            "issuer": info.issuer, "serial": info.serial, "names": list(info.names),
            "ocsp_url": info.ocsp_url}


def issue(cfg: Config, *, force: bool = False, renew_only: bool = False, dns_check: bool | None = None,
          progress: Progress = NULL) -> dict:
    if not cfg.tls.enabled:
        raise ConfigError("tls.enabled is false", "set enabled = true under [tls] in ferry.toml")
    s = settings(cfg)
    eab = _eab(cfg)
    progress.step(f"connect to the host(s) for {', '.join(s.domains)}")
    with connected(cfg, progress) as hosts:
        return _issue(cfg, s, hosts, force=force, renew_only=renew_only,
                      dns_check=cfg.tls.dns_check if dns_check is None else dns_check, eab=eab, progress=progress)


def _issue(cfg: Config, s: R.Settings, hosts: list[Connected], *, force, renew_only, dns_check, eab,
           progress) -> dict:
    rhosts = [RemoteHost(h.host) for h in hosts]
    # the first host's certificate is the fleet's: every host gets the same one
    infos = [R.current(rh, s) for rh in rhosts]
    info = infos[0]
    if renew_only and info is None:
        raise CertError(f"{rhosts[0].name}: no certificate for {s.domains[0]} to renew",
                        "run `ferry certs issue` first")
    due, why = R.renewal_due(info, s.domains, s.renew_before_days)
    same_everywhere = all(i is not None and info is not None and i.serial == info.serial for i in infos)
    result: dict = {"domain": s.domains[0], "domains": list(s.domains), "https_port": cfg.proxy.https_port,
                    "hosts": [rh.name for rh in rhosts]}
    if not due and not force and same_everywhere:
        progress.info(f"{s.domains[0]}: {why} (use --force to renew anyway)")
        result.update(renewed=False, reason=why)
    else:
        reason = "forced" if (force and not due) else (why if due else "hosts serve different certificates")
        progress.step(f"{s.domains[0]}: {reason}: pre-checks")
        for rh in rhosts:
            prepare(cfg, rh)
        resolved = dns_precheck(cfg, hosts, progress) if dns_check else None
        http_probe(cfg, hosts, resolved, progress)
        progress.step(f"order a certificate from {s.directory}")
        account = R.load_account(rhosts[0], s.tls_dir)
        key_pem = R.new_private_key_pem(s.key_type)
        op = _operator_settings(cfg, s)
        try:
            fullchain = R.obtain(op, account, [(rh, s.webroot) for rh in rhosts], key_pem,
                                 log=progress.info, eab=eab)
        except R.RenewError as e:
            for rh in rhosts:
                R.write_metric(rh, s, R.current(rh, s), success=False)
            raise CertError(f"{s.domains[0]}: {e.message}; the old certificate (if any) keeps serving",
                            e.hint) from None
        finally:
            if account.changed and account.uris:
                for rh in rhosts:
                    R.save_account(rh, s.tls_dir, account)
        new = None
        for rh in rhosts:
            progress.step(f"install the certificate on {rh.name}")
            try:
                # the HTTPS site may not be on yet (first issue): what nginx serves is checked below
                new = R.install(rh, s, key_pem, fullchain, log=progress.info, check_served=False)
            except R.RenewError as e:
                R.write_metric(rh, s, R.current(rh, s), success=False)
                raise CertError(f"{rh.name}: {e.message}", e.hint) from None
        result.update(renewed=True, reason=reason, previous_serial=info.serial if info else None)
        info = new
    # the HTTPS site and the renewer are (re)asserted every time: a no-op when already there
    for h, rh in zip(hosts, rhosts, strict=True):
        prepare(cfg, rh)
        progress.step(f"{rh.name}: HTTPS site (nginx -t, reload)")
        _ensure_tls_site(cfg, h, rh)
        if info is not None and not R.verify(rh, s, info.serial, log=progress.info):
            raise CertError(f"{rh.name}: nginx does not serve the new certificate {info.serial} for {s.domains[0]} "
                            f"on {s.https_address}:{s.https_port}",
                            "check the host's nginx error log; the certificate is installed and `ferry certs "
                            "renew` can be re-run")
        result.setdefault("renewal", install_renewer(cfg, rh, fleet=len(rhosts)))
        R.write_metric(rh, s, R.current(rh, s), success=True)
    result.update(_cert_json(cfg, info))
    result["metric"] = R.metric_path(s.metrics_dir, cfg.app.name) if s.metrics_dir else None
    return result


def _ensure_tls_site(cfg: Config, c: Connected, rh: RemoteHost) -> None:
    host = c.host
    site = nginx.site_path(cfg)
    for needed in (nginx.upstream_path(cfg), nginx.proxy_path(cfg)):
        if not rh.exists(needed):
            raise CertError(f"{host.name}: {needed} is missing: the app was never deployed there",
                            "deploy first (`ferry release`), then `ferry certs issue` switches it to HTTPS; "
                            "the certificate is installed and will be used by the next deploy")
    try:
        # the same names a deploy renders (runner.swap): the host's addresses stay answered, e.g.
        # the load balancer's health check, which sends the private IP as Host
        nginx.apply(host, cfg, {site: nginx.render_site(cfg, tls=True, extra_names=c.target.server_names)})
    except FerryError as e:
        raise CertError(f"{host.name}: switching the site to HTTPS failed: {e.message}",
                        "the previous site configuration was restored and keeps serving") from None


def served_certificate(address: str, port: int, server_name: str, timeout: float = 5.0) -> R.CertInfo | None:
    """What nginx actually hands a client that asks for ``server_name`` (not verified: we only look)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return R.inspect(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))


def status_address(cfg: Config, t: HostTarget) -> str | None:
    """Where `ferry certs status` asks what nginx serves: the listen address when nginx is bound
    to one, else the host's public address (IPv4 first), as a client would. Through SSM the SSH
    name is an instance id, which no TLS client can connect to: None when such a host has no
    public address (then nginx is asked on the host itself)."""
    if cfg.proxy.listen not in ("0.0.0.0", "", "*", "::"):
        return cfg.proxy.listen
    public = public_names(t)
    for n in public:
        try:
            if ipaddress.ip_address(n).version == 4:
                return n
        except ValueError:
            pass
    if public:
        return public[0]
    return None if t.gateway else t.spec.hostname


def served_serial(cfg: Config, s: R.Settings, t: HostTarget, rh: RemoteHost) -> str | None:
    address = status_address(cfg, t)
    if address is None:
        _, out = rh.run(R.served_serial_argv(s), check=False)
        serial = out.strip().partition("=")[2].strip().lower().lstrip("0")
        return serial or None
    served = served_certificate(address, cfg.proxy.https_port, s.domains[0])
    return served.serial if served else None


def status(cfg: Config, progress: Progress = NULL) -> dict:
    s = settings(cfg)
    now = datetime.datetime.now(datetime.timezone.utc)
    with connected(cfg, progress) as hosts:
        per_host = []
        for h in hosts:
            rh = RemoteHost(h.host)
            info = R.current(rh, s)
            due, why = R.renewal_due(info, s.domains, s.renew_before_days, now)
            served = served_serial(cfg, s, h.target, rh)
            kind = None
            for k in ("systemd", "cron"):
                if all(rh.exists(p) for p in units.files(k, cfg.app.name, cfg.tls.host_python,
                                                         nginx.app_dir(cfg), None)):
                    kind = k
            per_host.append({"host": h.name, **_cert_json(cfg, info, now), "due": due, "why": why,
                             "served_serial": served, "renewal": kind})
    first = per_host[0]
    return {"domain": s.domains[0], "domains": list(s.domains), "https_port": cfg.proxy.https_port,
            **{k: first[k] for k in ("not_after", "days_left", "issuer", "serial", "names", "due", "why",
                                     "served_serial", "renewal")},
            "renew_before_days": s.renew_before_days, "directory": s.directory, "hosts": per_host}
