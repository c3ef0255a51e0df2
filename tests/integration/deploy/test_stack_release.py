"""A release to hosts named by a Pulumi stack's outputs, behind a load balancer: the host
leaves its target group before its swap and rejoins after (boto3 against moto's server; the
host is the local target)."""

from __future__ import annotations

import json

import pytest

from .conftest import ferry

pytestmark = pytest.mark.integration


@pytest.fixture
def balanced_stack(moto_endpoint, app, tmp_path):
    import httpx

    from ferry.aws import session

    httpx.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    ec2, elbv2 = session.client("ec2", "eu-west-1"), session.client("elbv2", "eu-west-1")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/20", AvailabilityZone="eu-west-1a")["Subnet"]["SubnetId"]
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-0f00dfeedface0001", MinCount=2, MaxCount=2,
                                                       InstanceType="t3.small", SubnetId=subnet)["Instances"]]
    arn = elbv2.create_target_group(Name="t-hosts", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance",
                                    HealthCheckPath="/healthz")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in ids])
    outputs = tmp_path / "stack-outputs.json"
    # the first instance is this machine (the local target's sshd); its private IP is what the
    # load balancer's health checks send as Host
    outputs.write_text(json.dumps({
        "region": "eu-west-1", "sshUser": "root", "targetGroupArns": [arn],
        "hosts": [{"name": "web-1", "instanceId": ids[0], "publicIp": "127.0.0.1", "privateIp": "10.42.0.11",
                   "targetGroupArn": arn}],
    }))
    text = app.config.read_text().replace('hosts = ["root@127.0.0.1:2222"]',
                                          f'stack_outputs = "{outputs}"\nssh_port = 2222')
    app.config.write_text(text)

    def states():
        d = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        return {x["Target"]["Id"]: x["TargetHealth"]["State"] for x in d}

    return ids, states


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
