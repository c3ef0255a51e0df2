"""Reading the stack outputs (ferry/aws/stack.py): parsing, and the choice of source."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from ferry.config import parse
from ferry.errors import ConfigError, InfraError
from ferry.progress import Progress
from ferry.aws.stack import StackHost, StackOutputs, parse_outputs, read_outputs

TG = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/hello-dev-hosts/73e2d6bc24d8a067"
OUTPUTS = {
    "app": "hello", "region": "eu-west-1", "domain": "hello.example.com", "sshUser": "root", "ssm": False,
    "registryUrl": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/hello-dev",
    "loadBalancerDnsName": "hello-dev-1.eu-west-1.elb.amazonaws.com", "targetGroupArns": [TG],
    "hosts": [
        {"name": "hello-dev-1", "instanceId": "i-01", "publicIp": "198.51.100.1", "publicDns": "ec2-1.example",
         "privateIp": "10.42.0.10", "availabilityZone": "eu-west-1a", "ipv6Address": None, "targetGroupArn": TG},
        {"name": "hello-dev-2", "instanceId": "i-02", "publicIp": "198.51.100.2", "publicDns": "ec2-2.example",
         "privateIp": "10.42.16.10", "availabilityZone": "eu-west-1b", "ipv6Address": "2001:db8::2", "targetGroupArn": TG},
    ],
}


def make_config(tmp_path: Path, **deploy) -> object:
    (tmp_path / "src").mkdir(exist_ok=True)
    data = {"app": {"name": "hello"},
            "image": {"repository": "127.0.0.1:5000/hello", "base": "127.0.0.1:5000/ferry/python:3.11",
                      "source": "src", "entrypoint": ["python3", "-m", "hello"]},
            "deploy": deploy}
    return parse(data, tmp_path / "ferry.toml")


def test_outputs_parse_into_typed_hosts_in_stack_order():
    out = parse_outputs(OUTPUTS, source="test")
    assert out == StackOutputs(
        source="test", region="eu-west-1", ssh_user="root", app="hello", domain="hello.example.com", ssm=False,
        registry_url="123456789012.dkr.ecr.eu-west-1.amazonaws.com/hello-dev",
        load_balancer_dns_name="hello-dev-1.eu-west-1.elb.amazonaws.com", target_group_arns=(TG,),
        hosts=(StackHost("hello-dev-1", "i-01", "198.51.100.1", "ec2-1.example", "10.42.0.10", "eu-west-1a", None, TG),
               StackHost("hello-dev-2", "i-02", "198.51.100.2", "ec2-2.example", "10.42.16.10", "eu-west-1b",
                         "2001:db8::2", TG)))
    assert out.ssh_targets() == ("root@198.51.100.1", "root@198.51.100.2")
    assert out.behind_load_balancer and out.ssh_proxy_command() is None
    assert json.loads(json.dumps(out.to_json()))["hosts"][1]["instance_id"] == "i-02"


def test_ssm_stack_connects_by_instance_id_through_session_manager():
    data = {"region": "eu-west-1", "ssm": True, "hosts": [{"instanceId": "i-0abc"}]}
    out = parse_outputs(data, source="test")
    assert out.ssh_targets() == ("root@i-0abc",)
    assert out.ssh_proxy_command() == ("aws ssm start-session --target %h --document-name AWS-StartSSHSession "
                                       "--parameters portNumber=%p --region eu-west-1")


@pytest.mark.parametrize("data, message", [
    ([], "expected a JSON object"),
    ({"region": "eu-west-1"}, "the stack has no `hosts` output"),
    ({"region": "eu-west-1", "hosts": []}, "the stack has no `hosts` output"),
    ({"region": "eu-west-1", "hosts": [{"publicIp": "1.2.3.4"}]}, "hosts[0] has no instanceId"),
    ({"region": "eu-west-1", "hosts": [{"instanceId": "i-1"}]}, "hosts[0] (i-1) has no public address"),
    ({"hosts": [{"instanceId": "i-1", "publicIp": "1.2.3.4"}]}, "no `region` output"),
    ({"region": "r", "hosts": [{"instanceId": "i-1", "publicIp": "1.2.3.4"}], "targetGroupArns": "x"}, "not a list"),
])
def test_incomplete_outputs_are_refused_with_the_reason(data, message):
    with pytest.raises(InfraError) as err:
        parse_outputs(data, source="file x.json")
    assert message in str(err.value) and str(err.value).startswith("file x.json: ")
    assert err.value.hint


class FakeCli:
    """Stands in for subprocess.run of the pulumi CLI (the real CLI path is covered by the
    integration test with an executable on PATH)."""

    def __init__(self, rc=0, stdout="", stderr=""):
        self.rc, self.stdout, self.stderr, self.argv, self.cwd = rc, stdout, stderr, None, None

    def __call__(self, argv, cwd=None, **kw):
        self.argv, self.cwd = argv, cwd
        return subprocess.CompletedProcess(argv, self.rc, self.stdout, self.stderr)


def test_cli_is_used_when_on_path_and_says_so(tmp_path):
    cfg = make_config(tmp_path, stack="dev")
    cli, log = FakeCli(stdout=json.dumps(OUTPUTS)), io.StringIO()
    out = read_outputs(cfg, which=lambda n: "/usr/bin/pulumi", run=cli, progress=Progress(log))
    assert cli.argv == ["/usr/bin/pulumi", "stack", "output", "--json", "--non-interactive", "--stack", "dev"]
    assert cli.cwd == tmp_path
    assert out.source == "pulumi stack output --stack dev"
    assert "hosts from the Pulumi stack 'dev'" in log.getvalue()


def test_file_is_used_without_the_cli_and_says_so(tmp_path):
    (tmp_path / "outputs.json").write_text(json.dumps(OUTPUTS))
    cfg = make_config(tmp_path, stack="dev", stack_outputs="outputs.json")
    log = io.StringIO()
    out = read_outputs(cfg, which=lambda n: None, run=FakeCli(rc=99), progress=Progress(log))
    assert out.source == f"file {tmp_path / 'outputs.json'}"
    assert "(the pulumi CLI is not on PATH)" in log.getvalue()


def test_failing_cli_falls_back_to_the_file_with_a_warning(tmp_path):
    (tmp_path / "outputs.json").write_text(json.dumps(OUTPUTS))
    cfg = make_config(tmp_path, stack="dev", stack_outputs="outputs.json")
    log = io.StringIO()
    cli = FakeCli(rc=255, stderr="error: no stack named 'dev' found\n")
    out = read_outputs(cfg, which=lambda n: "/usr/bin/pulumi", run=cli, progress=Progress(log))
    assert out.source.startswith("file ")
    assert "warning:" in log.getvalue() and "no stack named 'dev' found" in log.getvalue()


def test_failing_cli_without_a_file_is_an_error_that_says_what_to_check(tmp_path):
    cfg = make_config(tmp_path, stack="dev")
    with pytest.raises(InfraError, match=r"`pulumi stack output --stack dev` failed: error: no stack") as err:
        read_outputs(cfg, which=lambda n: "/usr/bin/pulumi", run=FakeCli(rc=255, stderr="error: no stack named 'dev'"))
    assert "pulumi login" in err.value.hint


def test_neither_cli_nor_file_is_a_clear_error(tmp_path):
    cfg = make_config(tmp_path, stack="dev")
    with pytest.raises(InfraError) as err:
        read_outputs(cfg, which=lambda n: None)
    assert "pulumi CLI is not on PATH and deploy.stack_outputs is not set" in err.value.message
    assert "pulumi stack output --json --stack dev > stack-outputs.json" in err.value.hint


def test_missing_or_broken_file_names_the_export_command(tmp_path):
    cfg = make_config(tmp_path, stack_outputs="nope.json")
    with pytest.raises(InfraError, match="does not exist") as err:
        read_outputs(cfg, which=lambda n: None)
    assert "pulumi stack output --json --stack NAME > nope.json" in err.value.hint
    (tmp_path / "nope.json").write_text("{not json")
    with pytest.raises(InfraError, match="is not JSON"):
        read_outputs(cfg, which=lambda n: None)


def test_no_stack_configured_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="neither stack nor stack_outputs"):
        read_outputs(make_config(tmp_path, hosts=["root@127.0.0.1:2222"]))
