"""A release to hosts named by a Pulumi stack's outputs, behind a load balancer: the host
leaves its target group before its swap and rejoins after (boto3 against moto's server; the
host is the local target)."""

from __future__ import annotations


import pytest

from .conftest import balanced_stack_for, ferry

pytestmark = pytest.mark.integration


@pytest.fixture
def balanced_stack(moto_endpoint, app, tmp_path):
    # the first instance is this machine (the local target's sshd); its private IP is what the
    # load balancer's health checks send as Host; a second instance serves in the same group
    stack = balanced_stack_for(moto_endpoint, app, tmp_path / "stack-outputs.json", "t-hosts",
                               [{"name": "web-1", "publicIp": "127.0.0.1", "privateIp": "10.42.0.11"}], others=1)
    return stack.ids, stack.states


def test_release_from_stack_outputs_moves_the_host_out_of_the_balancer_and_back(app, balanced_stack):
    (first, second), states = balanced_stack
    r = ferry(app.config, "deploy", app.images["v1"], "--version", "v1", timeout=600)
    err = r.stderr
    assert "hosts from the exported stack outputs" in err
    out_at = err.index(f"deregister {first}")
    swap_at = err.index("swap nginx")
    in_at = err.index(f"register {first} with the load balancer")
    assert out_at < swap_at < in_at  # out before the swap, back after it
    assert states() == {first: "healthy", second: "healthy"}
    site = open(f"/opt/ferry/{app.name}/nginx/site.conf").read()
    assert "10.42.0.11" in site.split("server_name", 1)[1].split(";", 1)[0]
    # TLS ends at the balancer: the app hears how the client came from the balancer's header
    proxy = open(f"/opt/ferry/{app.name}/nginx/proxy.conf").read()
    assert "proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;" in proxy


def test_a_failed_deploy_still_puts_the_host_back(app, balanced_stack):
    (first, second), states = balanced_stack
    ferry(app.config, "deploy", app.images["v1"], "--version", "v1", timeout=600)
    r = ferry(app.config, "deploy", app.images["unhealthy"], "--version", "bad", check=False, timeout=600)
    assert r.returncode == 1 and "is not healthy" in r.stderr
    assert f"register {first} with the load balancer" in r.stderr
    assert states() == {first: "healthy", second: "healthy"}  # the live colour still serves
