"""ferry's boto3 code against moto in server mode: moving a host out of and back into its
target group around a swap."""

from __future__ import annotations

import io

import pytest

from ferry.aws import alb
from ferry.errors import InfraError
from ferry.progress import Progress

pytestmark = pytest.mark.integration


def _network(aws):
    vpc = aws.ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [aws.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i * 16}.0/20", AvailabilityZone=f"eu-west-1{z}")
               ["Subnet"]["SubnetId"] for i, z in enumerate("ab")]
    return vpc, subnets


def _instances(aws, subnet, n, app="hello", stack="dev"):
    image = "ami-0f00dfeedface0001"  # moto does not insist on a known image; listing them is slow
    out = []
    for i in range(n):
        r = aws.ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.small", SubnetId=subnet,
            MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "app", "Value": app}, {"Key": "stack", "Value": stack},
                {"Key": "managed-by", "Value": "pulumi"}, {"Key": "Name", "Value": f"{app}-{stack}-{i + 1}"}]}])
        out.append(r["Instances"][0]["InstanceId"])
    return out


@pytest.fixture
def balanced(aws):
    """Two running instances registered in one target group, as the Pulumi program leaves them."""
    vpc, subnets = _network(aws)
    ids = _instances(aws, subnets[0], 2)
    tg = aws.elbv2.create_target_group(Name="hello-dev-hosts", Protocol="HTTP", Port=80, VpcId=vpc,
                                       TargetType="instance", HealthCheckPath="/healthz")["TargetGroups"][0]
    arn = tg["TargetGroupArn"]
    aws.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in ids])
    return arn, ids


def _states(aws, arn):
    d = aws.elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {x["Target"]["Id"]: x["TargetHealth"]["State"] for x in d}


def test_release_takes_one_host_out_and_puts_it_back_while_the_other_keeps_serving(aws, balanced):
    arn, (first, second) = balanced
    log = io.StringIO()
    out = alb.deregister(arn, first, region="eu-west-1", timeout=30, interval=0.2, progress=Progress(log))
    assert out.state == "unused"
    assert _states(aws, arn) == {second: "healthy"}  # the other host serves alone during the swap
    back = alb.register(arn, first, region="eu-west-1", timeout=30, interval=0.2, progress=Progress(log))
    assert back.state == "healthy"
    assert _states(aws, arn) == {first: "healthy", second: "healthy"}
    text = log.getvalue()
    assert f"take {first} out of hello-dev-hosts" in text and f"put {first} back into hello-dev-hosts" in text


def test_moves_are_idempotent_against_the_real_api(aws, balanced):
    arn, (first, _) = balanced
    log = io.StringIO()
    alb.register(arn, first, region="eu-west-1", progress=Progress(log))
    assert "already healthy" in log.getvalue()
    alb.deregister(arn, first, region="eu-west-1", interval=0.1)
    alb.deregister(arn, first, region="eu-west-1", progress=Progress(log))  # moto refuses a second deregister
    assert "already out of hello-dev-hosts" in log.getvalue()


def test_a_stopped_host_is_reported_instead_of_waited_for(aws, balanced):
    arn, (first, _) = balanced
    aws.ec2.stop_instances(InstanceIds=[first])
    with pytest.raises(InfraError) as err:
        alb.register(arn, first, region="eu-west-1", timeout=30, interval=0.1)
    assert err.value.message.startswith(f"register {first} in hello-dev-hosts: AWS refused: InvalidTarget")
    assert "not in a running state" in err.value.message


def test_unknown_target_group_is_an_aws_error_with_the_call_named(aws):
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/nope/0123456789abcdef"
    with pytest.raises(InfraError, match="describe the health of i-0123 in nope: AWS refused: TargetGroupNotFound"):
        alb.deregister(arn, "i-0123", region="eu-west-1")


