"""The real Pulumi program, run with the example stack config under Pulumi's mocks."""

from __future__ import annotations

import importlib
import inspect
import ipaddress
import json

import pulumi
import pytest
from pulumi_harness import ACCOUNT, REPO, run_program, with_config

from infra import userdata
from infra.components.security import MONITORING_PORTS

INSTANCE = "aws:ec2/instance:Instance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
REPO_ARN = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/hello-dev"
# what `ferry monitoring images --push --prefix hello-dev` writes to, plus Grafana's mirror
MONITORING_REPOS = ["hello-dev/prometheus", "hello-dev/alertmanager", "hello-dev/node-exporter",
                    "hello-dev/nginx-exporter", "hello-dev/blackbox-exporter", "hello-dev/grafana",
                    # the accessories' images (ferry/accessories/spec.repository_names)
                    "hello-dev/postgres", "hello-dev/redis", "hello-dev/postgres-exporter"]
MONITORING_ARNS = sorted(f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/{n}" for n in MONITORING_REPOS)
PULL = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
PUSH = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
        "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart"]


@pytest.fixture(scope="module")
def one_host():
    from pulumi_harness import example_config
    return run_program(example_config())


@pytest.fixture(scope="module")
def three_hosts():
    from pulumi_harness import example_config
    return run_program(with_config(example_config(), hosts=3))


@pytest.fixture(scope="module")
def with_ssm():
    from pulumi_harness import example_config
    return run_program(with_config(example_config(), ssm=True, adminCidrs=None, cloudwatchAgent=True))


def _documents(run) -> list[dict]:
    """Every IAM document the program declares: trust policies, inline and managed policies."""
    docs = [json.loads(r.inputs["assumeRolePolicy"]) for r in run.of("aws:iam/role:Role")]
    docs += [json.loads(r.inputs["policy"]) for r in run.of("aws:iam/rolePolicy:RolePolicy")]
    docs += [json.loads(r.inputs["policy"]) for r in run.of("aws:iam/policy:Policy")]
    return docs


def _statements(doc: dict) -> list[dict]:
    return doc["Statement"] if isinstance(doc["Statement"], list) else [doc["Statement"]]


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


# --- the host ------------------------------------------------------------------------------

def test_instance_requires_imdsv2_with_hop_limit_one(one_host, three_hosts):
    for run in (one_host, three_hosts):
        for inst in run.of(INSTANCE):
            meta = inst.inputs["metadataOptions"]
            assert meta["httpTokens"] == "required"
            assert meta["httpPutResponseHopLimit"] == 1
            assert meta["httpEndpoint"] == "enabled"
            # the IPv6 endpoint stays off: prepare-host's IMDS guard covers 169.254.169.254 only
            assert meta["httpProtocolIpv6"] == "disabled"


def test_root_volume_is_encrypted_gp3_of_the_configured_size(one_host):
    inst = one_host.one(INSTANCE)
    root = inst.inputs["rootBlockDevice"]
    assert root["encrypted"] is True
    assert root["volumeType"] == "gp3"
    assert root["volumeSize"] == 20
    assert inst.inputs["instanceType"] == "t3.small"


def test_ami_is_the_newest_official_debian_12_for_the_architecture(one_host):
    args = one_host.call("aws:ec2/getAmi:getAmi")
    assert args["owners"] == ["136693071363"]
    assert args["mostRecent"] is True
    filters = {f["name"]: f["values"] for f in args["filters"]}
    assert filters["name"] == ["debian-12-amd64-*"]
    assert filters["architecture"] == ["x86_64"]
    assert one_host.one(INSTANCE).inputs["ami"] == "ami-0f00dfeedface0001"


def test_graviton_instance_type_selects_the_arm64_image():
    from pulumi_harness import example_config
    run = run_program(with_config(example_config(), instanceType="t4g.small"))
    filters = {f["name"]: f["values"] for f in run.call("aws:ec2/getAmi:getAmi")["filters"]}
    assert filters["name"] == ["debian-12-arm64-*"]
    assert filters["architecture"] == ["arm64"]


def test_user_data_embeds_prepare_host_byte_for_byte(one_host):
    data = one_host.one(INSTANCE).inputs["userData"]
    assert data.startswith("#cloud-config\n")
    assert userdata.embedded_script(data) == (REPO / "scripts" / "prepare-host").read_bytes()
    assert f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com" in data  # the host logs in to its own ECR


def test_key_pair_is_created_from_the_configured_public_key(one_host):
    key = one_host.one("aws:ec2/keyPair:KeyPair")
    assert key.inputs["publicKey"].startswith("ssh-ed25519 ")
    assert one_host.one(INSTANCE).inputs["keyName"] == key.inputs["keyName"] == "hello-dev-ferry"


def test_optional_hardening_switches_reach_the_instance():
    from pulumi_harness import example_config
    run = run_program(with_config(example_config(), detailedMonitoring=True, terminationProtection=True,
                                  rootVolumeGb=50))
    inst = run.one(INSTANCE)
    assert inst.inputs["monitoring"] is True
    assert inst.inputs["disableApiTermination"] is True
    assert inst.inputs["rootBlockDevice"]["volumeSize"] == 50


# --- security groups -----------------------------------------------------------------------

def test_ssh_is_open_only_to_the_admin_ranges(one_host, three_hosts):
    for run in (one_host, three_hosts):
        ssh = [r for r in run.of(INGRESS) if r.inputs["fromPort"] <= 22 <= r.inputs["toPort"]]
        assert [r.inputs.get("cidrIpv4") for r in ssh] == ["203.0.113.0/24"]
        assert all("cidrIpv6" not in r.inputs for r in ssh)


def test_no_ingress_rule_covers_a_monitoring_port(one_host, three_hosts, with_ssm):
    for run in (one_host, three_hosts, with_ssm):
        rules = run.of(INGRESS)
        assert rules
        for r in rules:
            for port in MONITORING_PORTS:
                assert not r.inputs["fromPort"] <= port <= r.inputs["toPort"], (r.name, port)


def test_one_host_opens_exactly_web_to_everyone_and_ssh_to_admins(one_host):
    seen = sorted((r.inputs["fromPort"], r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6"))
                  for r in one_host.of(INGRESS))
    assert seen == [(22, "203.0.113.0/24"), (80, "0.0.0.0/0"), (80, "::/0"), (443, "0.0.0.0/0"), (443, "::/0")]
    assert all(r.inputs["fromPort"] == r.inputs["toPort"] and r.inputs["ipProtocol"] == "tcp"
               for r in one_host.of(INGRESS) + one_host.of(EGRESS))


def test_with_ssm_no_ssh_port_is_opened_and_session_manager_is_allowed(with_ssm):
    assert not [r for r in with_ssm.of(INGRESS) if r.inputs["fromPort"] <= 22 <= r.inputs["toPort"]]
    attached = [r.inputs["policyArn"] for r in with_ssm.of("aws:iam/rolePolicyAttachment:RolePolicyAttachment")]
    assert attached == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    data = with_ssm.one(INSTANCE).inputs["userData"]
    assert "amazon-ssm-eu-west-1/latest/debian_amd64/amazon-ssm-agent.deb" in data  # Debian's AMI has no agent


def test_without_ssm_no_managed_policy_is_attached(one_host):
    assert one_host.of("aws:iam/rolePolicyAttachment:RolePolicyAttachment") == []


def test_default_security_group_of_the_vpc_is_emptied(one_host):
    sg = one_host.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert sg.inputs.get("ingress", []) == [] and sg.inputs.get("egress", []) == []


# --- IAM -----------------------------------------------------------------------------------

def test_no_iam_document_grants_a_wildcard_action(one_host, three_hosts, with_ssm):
    for run in (one_host, three_hosts, with_ssm):
        for doc in _documents(run):
            for st in _statements(doc):
                for action in _as_list(st["Action"]):
                    assert "*" not in action, (action, doc)


def test_resource_star_only_for_actions_aws_cannot_scope(one_host, three_hosts, with_ssm):
    unscoped = {"ecr:GetAuthorizationToken", "elasticloadbalancing:DescribeTargetHealth",
                "ec2:DescribeTags", "ec2:DescribeVolumes", "cloudwatch:PutMetricData"}
    for run in (one_host, three_hosts, with_ssm):
        for doc in _documents(run):
            for st in _statements(doc):
                if "*" in _as_list(st.get("Resource", [])):
                    assert set(_as_list(st["Action"])) <= unscoped, st
                if "cloudwatch:PutMetricData" in _as_list(st["Action"]):
                    assert st["Condition"] == {"StringEquals": {"cloudwatch:namespace": "CWAgent"}}


def test_instance_role_pulls_only_from_this_repository_and_the_monitoring_ones(one_host):
    (role,) = [r for r in one_host.of("aws:iam/role:Role") if r.inputs.get("name") == "hello-dev-host"]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    (inline,) = [json.loads(r.inputs["policy"]) for r in one_host.of("aws:iam/rolePolicy:RolePolicy")
                 if r.inputs["role"] == role.id]
    scoped = [st for st in inline["Statement"] if st["Resource"] != "*"]
    assert scoped == [{"Sid": "PullThisRepository", "Effect": "Allow", "Resource": REPO_ARN, "Action": PULL},
                      {"Sid": "PullMonitoringImages", "Effect": "Allow", "Resource": MONITORING_ARNS, "Action": PULL}]
    assert one_host.one("aws:iam/instanceProfile:InstanceProfile").inputs["role"] == role.inputs["name"]
    assert one_host.one(INSTANCE).inputs["iamInstanceProfile"] == "hello-dev-host"


def test_ci_deploy_policy_is_push_and_pull_on_this_stacks_repositories_only(one_host):
    doc = json.loads(one_host.outputs["ciDeployPolicy"])
    by_sid = {st["Sid"]: st for st in doc["Statement"]}
    assert set(by_sid) == {"EcrLogin", "PushThisRepository", "PullThisRepository", "PushMonitoringImages",
                           "PullMonitoringImages"}
    # `ferry monitoring images --push` and `ferry monitoring up` (pulls with this identity's token)
    assert by_sid["PushMonitoringImages"]["Resource"] == by_sid["PullMonitoringImages"]["Resource"] == MONITORING_ARNS
    assert by_sid["PushMonitoringImages"]["Action"] == PUSH and by_sid["PullMonitoringImages"]["Action"] == PULL
    assert by_sid["EcrLogin"]["Action"] == ["ecr:GetAuthorizationToken"]
    push = by_sid["PushThisRepository"]
    assert push["Resource"] == REPO_ARN
    assert set(push["Action"]) == {"ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
                                   "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart"}
    # the host pulls with the CI identity's token, and the builder reads the previous image
    pull = by_sid["PullThisRepository"]
    assert pull["Resource"] == REPO_ARN
    assert set(pull["Action"]) == {"ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                                   "ecr:GetDownloadUrlForLayer"}
    managed = [r for r in one_host.of("aws:iam/policy:Policy") if r.inputs["name"] == "hello-dev-ci-deploy"]
    assert json.loads(managed[0].inputs["policy"]) == doc
    assert one_host.outputs["ciReleasePolicy"] is None


def test_cloudwatch_agent_writes_only_into_its_log_group(with_ssm):
    group = [r for r in with_ssm.of("aws:cloudwatch/logGroup:LogGroup") if r.inputs["name"] == "/ferry/hello-dev/hosts"]
    arn = group[0].state["arn"]
    docs = [json.loads(r.inputs["policy"]) for r in with_ssm.of("aws:iam/rolePolicy:RolePolicy")]
    (agent,) = [d for d in docs if any(st["Sid"] == "AgentLogs" for st in d["Statement"])]
    logs = next(st for st in agent["Statement"] if st["Sid"] == "AgentLogs")
    assert logs["Resource"] == [arn, f"{arn}:log-stream:*"]
    assert "amazon-cloudwatch-agent.deb" in with_ssm.one(INSTANCE).inputs["userData"]


# --- tags ----------------------------------------------------------------------------------

def _taggable(type_token: str) -> bool:
    """Ask the provider SDK itself whether this resource type takes `tags`."""
    pkg, mod_cls = type_token.split(":", 1)
    module, cls = mod_cls.split(":")
    py = importlib.import_module(f"pulumi_aws.{module.split('/')[0]}")
    return "tags" in inspect.signature(getattr(py, cls)._internal_init).parameters


def test_every_taggable_resource_carries_app_stack_and_managed_by(one_host, three_hosts, with_ssm):
    checked = 0
    for run in (one_host, three_hosts, with_ssm):
        for r in run.resources:
            if r.type.startswith("aws:") and _taggable(r.type):
                tags = r.inputs.get("tags") or {}
                assert {k: tags.get(k) for k in ("app", "stack", "managed-by")} == \
                    {"app": "hello", "stack": "dev", "managed-by": "pulumi"}, (r.type, r.name)
                checked += 1
    assert checked > 40


# --- one host vs several -------------------------------------------------------------------

def test_one_host_has_an_elastic_ip_and_a_and_aaaa_records(one_host):
    inst = one_host.one(INSTANCE)
    eip = one_host.one("aws:ec2/eip:Eip")
    assert eip.inputs["instance"] == inst.id and eip.inputs["domain"] == "vpc"
    records = {r.inputs["type"]: r.inputs for r in one_host.of("aws:route53/record:Record")}
    assert set(records) == {"A", "AAAA"}
    assert records["A"]["records"] == ["203.0.113.10"] and records["A"]["name"] == "hello.example.com"
    assert records["A"]["zoneId"] == "ZEXISTING123"
    assert records["AAAA"]["records"] == [inst.state["ipv6Addresses"][0]]
    assert one_host.call("aws:route53/getZone:getZone")["name"] == "example.com"
    assert not one_host.of("aws:lb/loadBalancer:LoadBalancer")


def test_several_hosts_spread_over_two_zones_behind_a_load_balancer(three_hosts):
    instances = three_hosts.of(INSTANCE)
    assert len(instances) == 3
    subnets = [three_hosts.by_id(i.inputs["subnetId"]) for i in instances]
    assert len({s.inputs["availabilityZone"] for s in subnets}) == 2
    assert not three_hosts.of("aws:ec2/eip:Eip")
    alb = three_hosts.one("aws:lb/loadBalancer:LoadBalancer")
    assert alb.inputs["loadBalancerType"] == "application" and alb.inputs["internal"] is False
    assert alb.inputs["dropInvalidHeaderFields"] is True
    assert len(alb.inputs["subnets"]) == 2


def test_load_balancer_redirects_http_to_https_and_forwards_https(three_hosts):
    listeners = {r.inputs["port"]: r.inputs for r in three_hosts.of("aws:lb/listener:Listener")}
    assert set(listeners) == {80, 443}
    (redirect,) = listeners[80]["defaultActions"]
    assert redirect["type"] == "redirect"
    assert redirect["redirect"] == {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}
    https = listeners[443]
    assert https["protocol"] == "HTTPS" and https["sslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert https["certificateArn"].startswith("arn:aws:acm:")
    tg = three_hosts.one("aws:lb/targetGroup:TargetGroup")
    assert https["defaultActions"] == [{"type": "forward", "targetGroupArn": tg.id}]


def test_every_host_is_registered_in_the_target_group_checked_on_the_health_path(three_hosts):
    tg = three_hosts.one("aws:lb/targetGroup:TargetGroup")
    assert tg.inputs["healthCheck"]["path"] == "/healthz"
    assert tg.inputs["healthCheck"]["matcher"] == "200"
    assert tg.inputs["port"] == 80 and tg.inputs["protocol"] == "HTTP"
    attached = sorted(a.inputs["targetId"] for a in three_hosts.of("aws:lb/targetGroupAttachment:TargetGroupAttachment"))
    assert attached == sorted(i.id for i in three_hosts.of(INSTANCE))
    assert {a.inputs["targetGroupArn"] for a in three_hosts.of("aws:lb/targetGroupAttachment:TargetGroupAttachment")} == {tg.id}


def test_health_path_from_config_reaches_the_target_group():
    from pulumi_harness import example_config
    run = run_program(with_config(example_config(), hosts=2, healthPath="/up"))
    assert run.one("aws:lb/targetGroup:TargetGroup").inputs["healthCheck"]["path"] == "/up"


def test_several_hosts_take_web_traffic_only_from_the_load_balancer(three_hosts):
    groups = {r.id: r.name for r in three_hosts.of("aws:ec2/securityGroup:SecurityGroup")}
    host_sg = next(i for i, n in groups.items() if n.endswith("-host"))
    lb_sg = next(i for i, n in groups.items() if n.endswith("-lb"))
    host_in = [r.inputs for r in three_hosts.of(INGRESS) if r.inputs["securityGroupId"] == host_sg]
    web = [r for r in host_in if r["fromPort"] != 22]
    assert web == [{**web[0], "fromPort": 80, "toPort": 80, "referencedSecurityGroupId": lb_sg}]
    assert all("cidrIpv4" not in r and "cidrIpv6" not in r for r in web)
    lb_in = sorted((r.inputs["fromPort"], r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6"))
                   for r in three_hosts.of(INGRESS) if r.inputs["securityGroupId"] == lb_sg)
    assert lb_in == [(80, "0.0.0.0/0"), (80, "::/0"), (443, "0.0.0.0/0"), (443, "::/0")]


def test_several_hosts_get_alias_records_and_a_validated_certificate(three_hosts):
    alb = three_hosts.one("aws:lb/loadBalancer:LoadBalancer")
    aliases = [r.inputs for r in three_hosts.of("aws:route53/record:Record") if r.inputs.get("aliases")]
    assert sorted(r["type"] for r in aliases) == ["A", "AAAA"]
    for r in aliases:
        assert r["name"] == "hello.example.com"
        assert r["aliases"] == [{"name": alb.state["dnsName"], "zoneId": "Z32O12XQLNTSW2", "evaluateTargetHealth": True}]
    cert = three_hosts.one("aws:acm/certificate:Certificate")
    assert cert.inputs["domainName"] == "hello.example.com" and cert.inputs["validationMethod"] == "DNS"
    validation = [r.inputs for r in three_hosts.of("aws:route53/record:Record") if r.inputs.get("type") == "CNAME"]
    assert validation[0]["records"] == ["_def.acm-validations.aws."]


def test_subnets_do_not_hand_out_public_addresses_by_default(one_host):
    subnets = one_host.of("aws:ec2/subnet:Subnet")
    assert len(subnets) == 2
    for s in subnets:
        assert s.inputs["mapPublicIpOnLaunch"] is False
        assert ipaddress.ip_network(s.inputs["cidrBlock"]).subnet_of(ipaddress.ip_network("10.42.0.0/16"))


def test_vpc_flow_logs_go_to_a_log_group_with_retention(one_host):
    flow = one_host.one("aws:ec2/flowLog:FlowLog")
    assert flow.inputs["trafficType"] == "ALL"
    group = next(r for r in one_host.of("aws:cloudwatch/logGroup:LogGroup") if r.state["arn"] == flow.inputs["logDestination"])
    assert group.inputs["retentionInDays"] == 30


def test_default_vpc_mode_declares_no_network_of_its_own():
    from pulumi_harness import example_config
    run = run_program(with_config(example_config(), useDefaultVpc=True, ipv6=False, vpcCidr=None))
    assert not run.of("aws:ec2/vpc:Vpc") and not run.of("aws:ec2/subnet:Subnet")
    assert run.one(INSTANCE).inputs["subnetId"] in ("subnet-def-a", "subnet-def-b")
    assert run.outputs["vpcId"] == "vpc-default"
    assert [r.inputs["type"] for r in run.of("aws:route53/record:Record")] == ["A"]


def test_created_zone_exports_its_name_servers():
    from pulumi_harness import example_config
    run = run_program(with_config(example_config(), createZone=True))
    assert run.one("aws:route53/zone:Zone").inputs["name"] == "example.com"
    assert run.outputs["nameServers"] == ["ns-1.awsdns-01.org", "ns-2.awsdns-02.net"]
    assert not [c for c, _ in run.calls if c == "aws:route53/getZone:getZone"]


def test_ecr_repositories_are_scanned_immutable_encrypted_and_pruned(one_host):
    repos = {r.inputs["name"]: r for r in one_host.of("aws:ecr/repository:Repository")}
    assert sorted(repos) == sorted(["hello-dev", *MONITORING_REPOS])
    for repo in repos.values():
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo.inputs["encryptionConfigurations"] == [{"encryptionType": "KMS"}]
        assert repo.inputs["forceDelete"] is False
    policies = {p.inputs["repository"]: json.loads(p.inputs["policy"])["rules"]
                for p in one_host.of("aws:ecr/lifecyclePolicy:LifecyclePolicy")}
    assert sorted(policies) == sorted(repos)  # every repository is pruned
    for rules in policies.values():
        assert rules[0]["selection"]["countNumber"] == 30 and rules[0]["action"] == {"type": "expire"}


def test_monitoring_repositories_are_the_ones_ferry_pushes_to(one_host):
    """The program and `ferry monitoring images --push` share one list of names."""
    from ferry.monitoring import images

    from ferry.accessories import spec

    assert list(images.repository_names("hello-dev") + spec.repository_names("hello-dev")) == MONITORING_REPOS
    built = [images.repository_name(c.name, "hello-dev") for c in images.COMPONENTS]
    assert set(built) < set(MONITORING_REPOS) and "hello-dev/grafana" not in built
    out = one_host.outputs
    assert out["monitoringPrefix"] == "hello-dev"
    assert out["monitoringRepositories"] == {n: f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/{n}"
                                             for n in MONITORING_REPOS}


def test_monitoring_repositories_follow_the_repository_name():
    from pulumi_harness import example_config
    run = run_program(with_config(example_config(), repositoryName="team/shop"))
    names = sorted(r.inputs["name"] for r in run.of("aws:ecr/repository:Repository"))
    assert names == sorted(["team/shop", *(n.replace("hello-dev/", "team/shop/") for n in MONITORING_REPOS)])
    assert run.outputs["monitoringPrefix"] == "team/shop"
    statements = [st for r in run.of("aws:iam/rolePolicy:RolePolicy") for st in json.loads(r.inputs["policy"])["Statement"]]
    (pull,) = [st for st in statements if st["Sid"] == "PullMonitoringImages"]
    assert pull["Resource"] == sorted(f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/team/shop/{n.split('/')[-1]}"
                                      for n in MONITORING_REPOS)


# --- outputs -------------------------------------------------------------------------------

def test_one_host_outputs_tell_ferry_where_everything_is(one_host):
    out = one_host.outputs
    inst = one_host.one(INSTANCE)
    assert out["hosts"] == [{
        "name": "hello-dev-1", "instanceId": inst.id, "publicIp": "203.0.113.10",
        "publicDns": "ec2-203-0-113-10.eu-west-1.compute.amazonaws.com", "privateIp": inst.state["privateIp"],
        "availabilityZone": inst.state["availabilityZone"], "ipv6Address": inst.state["ipv6Addresses"][0],
        "targetGroupArn": None,
    }]
    assert out["sshUser"] == "root" and out["ssm"] is False
    assert out["registryUrl"] == f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/hello-dev"
    assert out["registry"] == f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
    assert out["region"] == "eu-west-1" and out["domain"] == "hello.example.com" and out["app"] == "hello"
    assert out["loadBalancerDnsName"] is None and out["targetGroupArns"] == []
    assert out["url"] == "https://hello.example.com"


def test_several_hosts_outputs_name_the_load_balancer_and_target_group(three_hosts):
    out = three_hosts.outputs
    tg = three_hosts.one("aws:lb/targetGroup:TargetGroup")
    alb = three_hosts.one("aws:lb/loadBalancer:LoadBalancer")
    assert out["loadBalancerDnsName"] == alb.state["dnsName"]
    assert out["targetGroupArns"] == [tg.id]
    assert [h["targetGroupArn"] for h in out["hosts"]] == [tg.id] * 3
    assert len({h["instanceId"] for h in out["hosts"]}) == 3
    release = json.loads(out["ciReleasePolicy"])
    move = next(st for st in release["Statement"] if st["Sid"] == "MoveTargets")
    assert move["Resource"] == [tg.id]


def test_outputs_are_readable_by_ferry(one_host, three_hosts, tmp_path):
    from ferry.aws.stack import parse_outputs
    for run in (one_host, three_hosts):
        parsed = parse_outputs(json.loads(json.dumps(run.outputs)), source="test")
        assert [h.instance_id for h in parsed.hosts] == [h["instanceId"] for h in run.outputs["hosts"]]
        assert parsed.registry_url == run.outputs["registryUrl"]


# --- bad config fails before anything is declared -------------------------------------------

@pytest.mark.parametrize("changes, key, fix", [
    ({"app": None}, "ferry:app", "pulumi config set app"),
    ({"adminCidrs": ["0.0.0.0/0"]}, "ferry:adminCidrs", "pulumi config set adminCidrs"),
    ({"adminCidrs": None}, "ferry:adminCidrs", "ssm true"),
    ({"hosts": 3, "domain": None, "zone": None}, "ferry:hosts", "pulumi config set domain"),
    ({"hosts": "many"}, "ferry:hosts", "pulumi config set hosts 1"),
    ({"instanceTyp": "t3.small"}, "ferry:instanceTyp", "use one of"),
    ({"ssm": True}, "ferry:adminCidrs", "pulumi config rm adminCidrs"),
    ({"aws:region": None}, "aws:region", "pulumi config set aws:region"),
    ({"zone": "example.org"}, "ferry:zone", "pulumi config set zone"),
    ({"sshPublicKey": None}, "ferry:sshPublicKey", "pulumi config set sshPublicKey"),
])
def test_bad_config_names_the_key_and_the_fix_and_declares_nothing(changes, key, fix):
    from pulumi_harness import example_config
    with pytest.raises(pulumi.RunError) as err:
        run_program(with_config(example_config(), **changes), stack="dev")
    message = str(err.value)
    assert f"Pulumi.dev.yaml: {key}" in message and fix in message, message
    assert "--stack dev" in message


def test_bad_config_declares_no_resource():
    from pulumi_harness import example_config, ProgramRun, AwsMocks
    import runpy
    run = ProgramRun()
    pulumi.runtime.settings.reset_options()
    pulumi.runtime.set_mocks(AwsMocks(run), project="ferry", stack="dev", preview=False)
    from pulumi_harness import as_pulumi_strings
    pulumi.runtime.set_all_config(as_pulumi_strings(with_config(example_config(), hosts=0)))
    with pytest.raises(pulumi.RunError, match="ferry:hosts: 0 is out of range"):
        runpy.run_path(str(REPO / "infra" / "__main__.py"), run_name="__main__")
    assert run.resources == [] and run.calls == []
