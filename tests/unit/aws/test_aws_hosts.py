"""From the stack's outputs to the hosts ferry deploys to (fleet/hosts.resolve_hosts): what
nginx answers to (`names`) and where the internet reaches each host (`public`) are kept apart."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ferry import nginx
from ferry.fleet.hosts import resolve_hosts

from .test_aws_stack import OUTPUTS, make_config

ONE_HOST = {
    "app": "hello", "region": "eu-west-1", "domain": "hello.example.com", "sshUser": "admin", "ssm": False,
    "targetGroupArns": [],
    "hosts": [{"name": "hello-dev-1", "instanceId": "i-01", "publicIp": "198.51.100.1",
               "publicDns": "ec2-198-51-100-1.eu-west-1.compute.amazonaws.com", "privateIp": "10.42.0.10",
               "availabilityZone": "eu-west-1a", "ipv6Address": "2001:db8:1200::10", "targetGroupArn": None}],
}


def _targets(tmp_path, outputs):
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    return resolve_hosts(make_config(tmp_path, stack_outputs="outputs.json"))


def test_public_addresses_include_the_ipv6_address_and_never_the_private_ip(tmp_path):
    (t,) = _targets(tmp_path, ONE_HOST)
    assert t.public == ("198.51.100.1", "2001:db8:1200::10", "ec2-198-51-100-1.eu-west-1.compute.amazonaws.com")
    # nginx still answers to the private IP (a load balancer's health check sends it as Host)
    assert t.names == ("198.51.100.1", "ec2-198-51-100-1.eu-west-1.compute.amazonaws.com", "10.42.0.10")
    assert str(t) == "admin@198.51.100.1"


def test_each_host_behind_the_balancer_has_its_own_public_addresses(tmp_path):
    a, b = _targets(tmp_path, OUTPUTS)
    assert a.public == ("198.51.100.1", "ec2-1.example")
    assert b.public == ("198.51.100.2", "2001:db8::2", "ec2-2.example")
    assert "10.42.16.10" in b.names and "10.42.16.10" not in b.public


def test_ssm_host_without_a_public_address_has_none_and_connects_by_instance_id(tmp_path):
    (t,) = _targets(tmp_path, {"region": "eu-west-1", "ssm": True,
                               "hosts": [{"instanceId": "i-0abc", "privateIp": "10.42.0.10"}]})
    assert t.public == () and t.names == ("10.42.0.10",)
    assert t.spec.hostname == "i-0abc" and t.gateway.startswith("aws ssm start-session")


def test_deploy_hosts_are_public_as_written(tmp_path):
    (t,) = resolve_hosts(make_config(tmp_path, hosts=["root@203.0.113.7:2222"]))
    assert t.names == t.public == ("203.0.113.7",)


# --- X-Forwarded-Proto behind the load balancer ---------------------------------------------------

def test_only_hosts_in_a_target_group_are_behind_the_balancer(tmp_path):
    assert [t.behind_balancer for t in _targets(tmp_path, OUTPUTS)] == [True, True]
    assert [t.behind_balancer for t in _targets(tmp_path, ONE_HOST)] == [False]


def test_behind_the_balancer_the_app_gets_the_balancers_forwarded_proto(tmp_path):
    cfg = make_config(tmp_path, stack_outputs="outputs.json")
    proxy = nginx.render_proxy(cfg, behind_balancer=True)
    assert "proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;" in proxy
    assert "$scheme" not in proxy


def test_facing_clients_nginx_sends_its_own_scheme_never_the_clients_header(tmp_path):
    cfg = make_config(tmp_path, stack_outputs="outputs.json")
    proxy = nginx.render_proxy(cfg)
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in proxy
    assert "$http_x_forwarded_proto" not in proxy


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")
@pytest.mark.parametrize("behind_balancer", [False, True])
def test_rendered_site_passes_nginx_t(tmp_path, behind_balancer):
    cfg = make_config(tmp_path, hosts=["root@127.0.0.1"], root=str(tmp_path / "opt"))
    files = {nginx.upstream_path(cfg): nginx.render_upstream(cfg, "blue", "r1"),
             nginx.proxy_path(cfg): nginx.render_proxy(cfg, behind_balancer=behind_balancer),
             nginx.site_path(cfg): nginx.render_site(cfg, extra_names=("198.51.100.1", "10.42.0.10"))}
    for path, text in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / d).mkdir(parents=True)
    conf = tmp_path / "nginx.conf"
    temp = "".join(f"    {d}_temp_path {tmp_path}/tmp/{d.split('_')[-1]};\n"
                   for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n    access_log off;\n{temp}    include {nginx.site_path(cfg)};\n}}\n")
    r = subprocess.run(["nginx", "-t", "-q", "-c", str(conf), "-e", str(tmp_path / "error.log")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
