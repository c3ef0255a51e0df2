"""The pure parts of the program, exactly: IAM documents, names and tags, security group plan,
subnets, ECR lifecycle, cloud-init user data (validated by cloud-init's own schema check)."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from pulumi_harness import REPO

from infra import naming, policies, userdata
from infra.components.loadbalancer import health_check
from infra.components.network import ipv6_subnet, subnet_cidrs
from infra.components.registry import lifecycle_policy, registry_host
from infra.components.security import SecurityGroupsArgs, plan

REPO_ARN = "arn:aws:ecr:eu-west-1:123456789012:repository/hello-dev"
TG = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/hello-dev-hosts/73e2d6bc24d8a067"


# --- IAM -----------------------------------------------------------------------------------

def test_instance_policy_is_ecr_login_plus_pull_on_the_repository():
    assert policies.instance_policy(REPO_ARN) == {"Version": "2012-10-17", "Statement": [
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
        {"Sid": "PullThisRepository", "Effect": "Allow", "Resource": REPO_ARN,
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]},
    ]}


def test_ci_deploy_policy_pushes_to_the_repository_only():
    doc = policies.ci_deploy_policy(REPO_ARN)
    assert doc["Statement"][1] == {"Sid": "PushThisRepository", "Effect": "Allow", "Resource": REPO_ARN, "Action": [
        "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
        "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart"]}
    assert doc["Statement"][0]["Action"] == ["ecr:GetAuthorizationToken"]
    assert len(doc["Statement"]) == 3
    assert all("*" not in a for a in policies.actions(doc))
    assert all(st["Resource"] == REPO_ARN for st in doc["Statement"][1:])


def test_ci_deploy_policy_pulls_from_the_repository():
    # the builder reads the previous image's manifest and config blob (the registry as the
    # cache), and the host pulls with the CI identity's ECR token (fleet/credentials.registry_credentials)
    doc = policies.ci_deploy_policy(REPO_ARN)
    assert doc["Statement"][2] == {"Sid": "PullThisRepository", "Effect": "Allow", "Resource": REPO_ARN, "Action": [
        "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}
    scoped = {a for st in doc["Statement"] if st["Resource"] == REPO_ARN for a in st["Action"]}
    assert set(policies.ECR_PULL_ACTIONS) <= scoped
    assert set(policies.actions(policies.instance_policy(REPO_ARN))) <= set(policies.actions(doc))


MON_ARNS = [f"arn:aws:ecr:eu-west-1:123456789012:repository/hello-dev/{n}" for n in ("prometheus", "grafana")]


def test_monitoring_repositories_are_named_one_by_one_pull_for_hosts_push_for_ci():
    host = policies.instance_policy(REPO_ARN, MON_ARNS + MON_ARNS[:1])
    assert host["Statement"][2] == {"Sid": "PullMonitoringImages", "Effect": "Allow", "Resource": sorted(MON_ARNS),
                                    "Action": list(policies.ECR_PULL_ACTIONS)}
    assert len(host["Statement"]) == 3  # no push for the host
    ci = policies.ci_deploy_policy(REPO_ARN, MON_ARNS)
    by_sid = {st["Sid"]: st for st in ci["Statement"]}
    assert by_sid["PushMonitoringImages"]["Action"] == list(policies.ECR_PUSH_ACTIONS)
    assert by_sid["PushMonitoringImages"]["Resource"] == by_sid["PullMonitoringImages"]["Resource"] == sorted(MON_ARNS)
    for doc in (host, ci):
        assert all("*" not in a for a in policies.actions(doc))
        assert all("*" not in r for st in doc["Statement"][1:] for r in
                   (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]))
    # without monitoring repositories the documents are what they were
    assert policies.instance_policy(REPO_ARN, []) == policies.instance_policy(REPO_ARN)
    assert len(policies.ci_deploy_policy(REPO_ARN)["Statement"]) == 3


def test_release_policy_moves_targets_of_the_named_groups_only():
    doc = policies.lb_release_policy([TG, TG])
    assert doc["Statement"] == [
        {"Sid": "MoveTargets", "Effect": "Allow", "Resource": [TG],
         "Action": ["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"]},
        {"Sid": "WatchTargetHealth", "Effect": "Allow", "Resource": "*",
         "Action": ["elasticloadbalancing:DescribeTargetHealth"]},
    ]


def test_trust_policy_names_exactly_one_service():
    assert policies.assume_role("ec2.amazonaws.com") == {"Version": "2012-10-17", "Statement": [
        {"Sid": "AssumedByEc2", "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
         "Action": "sts:AssumeRole"}]}


def test_log_policies_are_scoped_to_their_group_and_its_streams():
    arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/ferry/hello-dev/hosts"
    for doc in (policies.flow_logs_policy(arn), policies.cloudwatch_agent_policy(arn)):
        logs = [st for st in doc["Statement"] if any(a.startswith("logs:") for a in st["Action"])]
        assert logs and all(st["Resource"] == [arn, f"{arn}:log-stream:*"] for st in logs)
    assert all("*" not in a for a in policies.actions(policies.cloudwatch_agent_policy(arn)))


def test_managed_policy_arn_follows_the_partition():
    assert policies.managed_policy_arn("aws-cn", "AmazonSSMManagedInstanceCore") == \
        "arn:aws-cn:iam::aws:policy/AmazonSSMManagedInstanceCore"


# --- names, network, registry, load balancer -----------------------------------------------------

def test_names_and_tags():
    assert naming.base_name("hello", "dev") == "hello-dev"
    assert naming.host_name("hello", "dev", 0) == "hello-dev-1"
    assert naming.tags("hello", "prod", "hello-prod-1") == {
        "app": "hello", "stack": "prod", "managed-by": "pulumi", "Name": "hello-prod-1"}


def test_load_balancer_names_fit_aws_limit_of_32():
    assert naming.alb_name("hello", "dev") == "hello-dev"
    long = naming.alb_name("a-very-long-app-name-xyz", "production-eu", "-hosts")
    assert len(long) <= 32 and long.endswith("-hosts") and not long.startswith("-")


def test_two_subnets_are_cut_from_the_vpc_range():
    assert subnet_cidrs("10.42.0.0/16", 2) == ["10.42.0.0/20", "10.42.16.0/20"]
    assert subnet_cidrs("10.1.2.0/24", 2) == ["10.1.2.0/28", "10.1.2.16/28"]
    assert ipv6_subnet("2001:db8:1200::/56", 1) == "2001:db8:1200:1::/64"


def test_ecr_lifecycle_keeps_the_last_n_images():
    assert lifecycle_policy(5) == {"rules": [{
        "rulePriority": 1, "description": "keep the last 5 images",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5},
        "action": {"type": "expire"}}]}
    assert registry_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com/hello-dev") == \
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def test_health_check_uses_the_apps_path_on_the_traffic_port():
    assert health_check("/up") == {"enabled": True, "protocol": "HTTP", "port": "traffic-port", "path": "/up",
                                   "matcher": "200", "interval": 10, "timeout": 5, "healthy_threshold": 2,
                                   "unhealthy_threshold": 3}


# --- security group plan ---------------------------------------------------------------------

def _rules(**kw):
    args = SecurityGroupsArgs(name="hello-dev", tags={}, vpc_id="vpc-1", **kw)
    return sorted((r.group, r.direction, r.port, r.cidr or r.peer) for r in plan(args))


def test_one_host_plan():
    assert _rules(admin_cidrs=("203.0.113.7/32",), ipv6=False) == [
        ("host", "in", 22, "203.0.113.7/32"), ("host", "in", 80, "0.0.0.0/0"), ("host", "in", 443, "0.0.0.0/0"),
        ("host", "out", 80, "0.0.0.0/0"), ("host", "out", 443, "0.0.0.0/0")]


def test_load_balancer_plan_keeps_hosts_off_the_internet_except_ssh():
    assert _rules(admin_cidrs=("203.0.113.7/32",), behind_load_balancer=True, ipv6=False) == [
        ("host", "in", 22, "203.0.113.7/32"), ("host", "in", 80, "lb"),
        ("host", "out", 80, "0.0.0.0/0"), ("host", "out", 443, "0.0.0.0/0"),
        ("lb", "in", 80, "0.0.0.0/0"), ("lb", "in", 443, "0.0.0.0/0"), ("lb", "out", 80, "host")]


def test_ssm_plan_has_no_ssh_even_with_admin_ranges():
    assert not [r for r in _rules(admin_cidrs=("203.0.113.7/32",), ssm=True) if r[2] == 22]


def test_rule_keys_are_unique_resource_names():
    args = SecurityGroupsArgs(name="x", tags={}, vpc_id="v", admin_cidrs=("10.0.0.0/8", "2001:db8::/32"),
                              behind_load_balancer=True)
    keys = [r.key for r in plan(args)]
    assert len(keys) == len(set(keys))


# --- cloud-init user data ------------------------------------------------------------------

ARGS = userdata.UserDataArgs(region="eu-west-1", architecture="x86_64", os="debian-12",
                             ecr_registry="123456789012.dkr.ecr.eu-west-1.amazonaws.com")


def test_user_data_runs_the_embedded_prepare_host_once():
    text = userdata.render(ARGS)
    doc = yaml.safe_load(text)
    assert text.startswith("#cloud-config\n")
    assert doc["disable_root"] is False and doc["ssh_pwauth"] is False
    (script,) = [f for f in doc["write_files"] if f["path"] == "/usr/local/sbin/ferry-prepare-host"]
    assert script["permissions"] == "0755" and script["encoding"] == "gz+b64"
    assert userdata.embedded_script(text) == (REPO / "scripts" / "prepare-host").read_bytes()
    assert doc["runcmd"] == [["/usr/local/sbin/ferry-prepare-host", "--ecr-registry",
                              "123456789012.dkr.ecr.eu-west-1.amazonaws.com"]]


def test_user_data_is_the_same_for_the_same_inputs():
    assert userdata.render(ARGS) == userdata.render(ARGS)


def test_ssm_agent_is_installed_on_debian_only():
    import dataclasses
    debian = yaml.safe_load(userdata.render(dataclasses.replace(ARGS, ssm=True, architecture="arm64")))
    assert any("amazon-ssm-eu-west-1/latest/debian_arm64/amazon-ssm-agent.deb" in " ".join(c) for c in debian["runcmd"])
    ubuntu = yaml.safe_load(userdata.render(dataclasses.replace(ARGS, ssm=True, os="ubuntu-24.04")))
    assert len(ubuntu["runcmd"]) == 1  # Ubuntu's AMIs ship the agent


def test_user_data_stays_under_ec2_limit_with_every_option():
    import dataclasses
    text = userdata.render(dataclasses.replace(ARGS, ssm=True, cloudwatch_log_group="/ferry/hello-dev/hosts"))
    assert len(text.encode()) < userdata.USER_DATA_LIMIT


def test_oversized_user_data_is_refused():
    import dataclasses
    import random
    incompressible = random.Random(1).randbytes(20_000)
    with pytest.raises(ValueError, match="over EC2's limit"):
        userdata.render(dataclasses.replace(ARGS, script=incompressible))


@pytest.mark.parametrize("options", [{}, {"ssm": True, "cloudwatch_log_group": "/ferry/hello-dev/hosts"}])
def test_rendered_user_data_passes_cloud_init_schema(tmp_path, options):
    import dataclasses
    f = tmp_path / "user-data"
    f.write_text(userdata.render(dataclasses.replace(ARGS, **options)))
    r = subprocess.run(["cloud-init", "schema", "--config-file", str(f)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Valid cloud-config" in r.stdout + r.stderr


def test_cloud_init_schema_check_does_reject_a_broken_document(tmp_path):
    """The check above can fail: a wrong type in the same document is refused."""
    doc = yaml.safe_load(userdata.render(ARGS))
    doc["write_files"][0]["permissions"] = ["0755"]
    doc["runcmd"] = "not a list"
    f = tmp_path / "user-data"
    f.write_text("#cloud-config\n" + yaml.safe_dump(doc))
    r = subprocess.run(["cloud-init", "schema", "--config-file", str(f)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
