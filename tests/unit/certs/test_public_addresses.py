"""Which addresses `ferry certs` uses for a stack's hosts: the DNS pre-check and the port-80 probe
use the public ones (IPv4, IPv6, public DNS), never the private IP or the SSM instance id; the
HTTPS site keeps answering to every name a deploy renders; `status` asks a reachable address."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ferry import config, nginx
from ferry.certs import dns, manage
from ferry.deploy.host import HostSpec
from ferry.fleet import connect as fleet_connect
from ferry.fleet.hosts import resolve_hosts
from ferry.errors import CertError
from ferry.progress import Progress

V4, V6, PRIVATE = "198.51.100.1", "2001:db8:1200::10", "10.42.0.10"
PUBLIC_DNS = "ec2-198-51-100-1.eu-west-1.compute.amazonaws.com"


def outputs(ssm: bool = False, public: bool = True) -> dict:
    host = {"name": "hello-dev-1", "instanceId": "i-0abc", "privateIp": PRIVATE, "availabilityZone": "eu-west-1a"}
    if public:
        host.update(publicIp=V4, publicDns=PUBLIC_DNS, ipv6Address=V6)
    return {"app": "hello", "region": "eu-west-1", "domain": "hello.example.com", "sshUser": "admin",
            "ssm": ssm, "targetGroupArns": [], "hosts": [host]}


def make_cfg(tmp_path: Path, stack_outputs: dict | None = None, **tls) -> config.Config:
    (tmp_path / "src").mkdir(exist_ok=True)
    deploy = {"hosts": ["root@127.0.0.1:2222"]}
    if stack_outputs is not None:
        (tmp_path / "outputs.json").write_text(json.dumps(stack_outputs))
        deploy = {"stack_outputs": "outputs.json"}
    data = {"app": {"name": "hello", "domain": "hello.example.com"},
            "image": {"repository": "r", "base": "b", "source": "src", "entrypoint": ["python3"]},
            "deploy": deploy, "tls": {"enabled": True, **tls}}
    return config.parse(data, tmp_path / "ferry.toml")


class FakeHost:
    """What fleet.connect.connect returns, without SSH."""

    def __init__(self, spec: HostSpec):
        self.spec = spec
        self.name = str(spec)
        self.closed = False

    def close(self):
        self.closed = True


@pytest.fixture
def connected(monkeypatch):
    """fleet.connect.connected with the real resolve_hosts (stack outputs -> targets) and fake hosts."""
    monkeypatch.setattr("ferry.fleet.connect.connect", lambda cfg, target, progress: FakeHost(target.spec))
    # public DNS names resolve here without a network
    monkeypatch.setattr(dns.socket, "getaddrinfo",
                        lambda host, port: [(None, None, None, "", (V4, 0))] if host == PUBLIC_DNS else [])
    def open_all(cfg):
        with fleet_connect.connected(cfg, Progress(io.StringIO())) as hosts:
            return hosts

    return open_all


# --- DNS pre-check ------------------------------------------------------------------------------

def test_expected_addresses_are_the_public_ipv4_and_ipv6_not_the_private_ip(tmp_path, connected):
    hosts = connected(make_cfg(tmp_path, outputs()))
    assert manage.expected_addresses(make_cfg(tmp_path, outputs()), hosts) == {V4, V6}


def test_dns_check_passes_for_the_stacks_a_and_aaaa_records(tmp_path, connected):
    cfg = make_cfg(tmp_path, outputs())
    expected = manage.expected_addresses(cfg, connected(cfg))
    dns.check([dns.Resolution("hello.example.com", frozenset({V4, V6}))], expected)


def test_dns_check_still_refuses_a_record_pointing_at_the_private_ip(tmp_path, connected):
    cfg = make_cfg(tmp_path, outputs())
    expected = manage.expected_addresses(cfg, connected(cfg))
    with pytest.raises(CertError, match=f"remove the stale {PRIVATE}"):
        dns.check([dns.Resolution("hello.example.com", frozenset({V4, PRIVATE}))], expected)


def test_ssm_host_without_public_address_asks_for_one_instead_of_using_the_instance_id(tmp_path, connected):
    cfg = make_cfg(tmp_path, outputs(ssm=True, public=False))
    hosts = connected(cfg)
    assert hosts[0].target.spec.hostname == "i-0abc"
    assert manage.expected_addresses(cfg, hosts) == set()
    with pytest.raises(CertError, match="does not know this host's public address"):
        dns.check([dns.Resolution("hello.example.com", frozenset({V4}))], manage.expected_addresses(cfg, hosts))


def test_tls_public_addresses_override_the_stack(tmp_path, connected):
    cfg = make_cfg(tmp_path, outputs(), public_addresses=["203.0.113.9"])
    assert manage.expected_addresses(cfg, connected(cfg)) == {"203.0.113.9"}


# --- port-80 probe ----------------------------------------------------------------------------

class FakeRemote:
    files: dict[str, bytes] = {}

    def __init__(self, host):
        self.name = host.name

    def write(self, path, data, mode=0o644):
        FakeRemote.files[path] = data

    def remove(self, path):
        FakeRemote.files.pop(path, None)


@pytest.fixture
def probe(monkeypatch):
    """http_probe against fake hosts: records every URL fetched, answers with the webroot file."""
    import httpx

    FakeRemote.files = {}
    fetched: list[str] = []

    def get(url, headers=None, **kw):
        fetched.append(url)
        token = url.rsplit("/", 1)[1]
        body = next((v for k, v in FakeRemote.files.items() if k.endswith(token)), b"")
        return httpx.Response(200 if body else 404, content=body)

    monkeypatch.setattr(manage, "RemoteHost", FakeRemote)
    monkeypatch.setattr(httpx, "get", get)
    monkeypatch.setattr(manage, "routable", lambda a: True)
    return fetched


def test_probe_without_dns_check_fetches_only_public_addresses(tmp_path, connected, probe):
    cfg = make_cfg(tmp_path, outputs())
    manage.http_probe(cfg, connected(cfg), None, Progress(io.StringIO()))
    hosts_probed = sorted(u.split("/")[2] for u in probe)
    assert hosts_probed == [f"{V4}:80", f"[{V6}]:80"]
    assert not any(PRIVATE in u or "i-0abc" in u for u in probe)
    assert FakeRemote.files == {}  # the probe file is removed again


def test_probe_skips_an_address_this_machine_has_no_route_to_and_says_so(tmp_path, connected, probe, monkeypatch):
    monkeypatch.setattr(manage, "routable", lambda a: ":" not in a)  # no IPv6 here
    cfg = make_cfg(tmp_path, outputs())
    log = io.StringIO()
    manage.http_probe(cfg, connected(cfg), {"hello.example.com": {V4, V6}}, Progress(log))
    assert [u.split("/")[2] for u in probe] == [f"{V4}:80"]
    assert f"no route from this machine to {V6}: not probed" in log.getvalue()


def test_probe_with_no_reachable_address_changes_nothing_and_says_why(tmp_path, connected, probe, monkeypatch):
    monkeypatch.setattr(manage, "routable", lambda a: False)
    cfg = make_cfg(tmp_path, outputs())
    with pytest.raises(CertError, match="no route from this machine"):
        manage.http_probe(cfg, connected(cfg), {"hello.example.com": {V6}}, Progress(io.StringIO()))
    assert probe == [] and FakeRemote.files == {}


def test_probe_of_an_ssm_host_without_public_address_refuses_instead_of_probing_the_private_ip(
        tmp_path, connected, probe):
    cfg = make_cfg(tmp_path, outputs(ssm=True, public=False))
    with pytest.raises(CertError, match="does not know this host's public address"):
        manage.http_probe(cfg, connected(cfg), None, Progress(io.StringIO()))
    assert probe == []


def test_routable_knows_loopback():
    assert manage.routable("127.0.0.1")


# --- the HTTPS site keeps the host's names ------------------------------------------------------------

def test_https_site_answers_to_the_same_names_a_deploy_renders(tmp_path, connected, monkeypatch):
    cfg = make_cfg(tmp_path, outputs())
    (host,) = connected(cfg)
    applied = {}
    monkeypatch.setattr(nginx, "apply", lambda h, c, files: applied.update(files))

    class Exists:
        def exists(self, path):
            return True

    manage._ensure_tls_site(cfg, host, Exists())
    site = applied[nginx.site_path(cfg)]
    assert f"server_name hello.example.com {V4} {PUBLIC_DNS} {PRIVATE};" in site
    # exactly what runner.swap writes for this target: issuing does not flip the site back and forth
    (target,) = resolve_hosts(cfg)
    assert site == nginx.render_site(cfg, tls=True, extra_names=target.names)


# --- status asks a reachable address ------------------------------------------------------------

@pytest.fixture
def status_run(monkeypatch, connected):
    asked: list[tuple[str, int, str]] = []
    ran: list[list[str]] = []

    class Remote:
        def __init__(self, host):
            self.name = host.name

        def exists(self, path):
            return False

        def run(self, argv, check=True):
            ran.append(argv)
            return 0, "serial=0ABC12\n"

    monkeypatch.setattr(manage, "RemoteHost", Remote)
    monkeypatch.setattr(manage.R, "current", lambda rh, s: None)
    monkeypatch.setattr(manage, "served_certificate", lambda a, p, n: asked.append((a, p, n)) or None)
    return asked, ran


def test_status_of_an_ssm_host_asks_its_public_ipv4_not_the_instance_id(tmp_path, status_run):
    asked, ran = status_run
    doc = manage.status(make_cfg(tmp_path, outputs(ssm=True)))
    assert asked == [(V4, 443, "hello.example.com")]
    assert doc["hosts"][0]["host"] == "admin@i-0abc" and ran == []


def test_status_of_an_ssm_host_without_public_address_asks_nginx_on_the_host(tmp_path, status_run):
    asked, ran = status_run
    cfg = make_cfg(tmp_path, outputs(ssm=True, public=False))
    doc = manage.status(cfg)
    assert asked == []
    assert ran == [manage.R.served_serial_argv(manage.settings(cfg))]
    assert doc["served_serial"] == "abc12"


def test_status_of_a_listed_host_asks_it_where_it_was_written(tmp_path, status_run):
    asked, _ = status_run
    manage.status(make_cfg(tmp_path))
    assert asked == [("127.0.0.1", 443, "hello.example.com")]
