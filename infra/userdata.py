"""cloud-init user data for a host: embed `scripts/prepare-host` and run it.

The host is prepared by the very file the test suite runs against the local target: it is
embedded byte for byte (gzip + base64, so it stays well under EC2's 16 KB user-data limit)
and run once by `runcmd`. Only the AWS-specific extras live here: the SSM agent on Debian
(Ubuntu's AMIs ship it) and the CloudWatch agent when asked for.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PREPARE_HOST = REPO_ROOT / "scripts" / "prepare-host"
SCRIPT_PATH = "/usr/local/sbin/ferry-prepare-host"
CLOUDWATCH_CONFIG_PATH = "/opt/aws/amazon-cloudwatch-agent/etc/ferry.json"
USER_DATA_LIMIT = 16 * 1024  # bytes, EC2's limit before base64


@dataclass(frozen=True)
class UserDataArgs:
    region: str
    architecture: str  # x86_64 | arm64
    os: str  # debian-12 | ubuntu-24.04
    ecr_registry: str | None = None  # e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com
    ssm: bool = False
    cloudwatch_log_group: str | None = None  # set: install and start the CloudWatch agent
    script: bytes | None = None  # default: scripts/prepare-host as it is in this checkout


def _deb_arch(architecture: str) -> str:
    return {"x86_64": "amd64", "arm64": "arm64"}[architecture]


def ssm_agent_url(region: str, architecture: str) -> str:
    return (f"https://s3.{region}.amazonaws.com/amazon-ssm-{region}/latest/"
            f"debian_{_deb_arch(architecture)}/amazon-ssm-agent.deb")


def cloudwatch_agent_url(region: str, architecture: str) -> str:
    return (f"https://amazoncloudwatch-agent-{region}.s3.{region}.amazonaws.com/debian/"
            f"{_deb_arch(architecture)}/latest/amazon-cloudwatch-agent.deb")


def cloudwatch_agent_config(log_group: str) -> dict:
    """Memory and disk use (EC2 does not see inside the guest) and nginx's logs."""
    def log(path: str, stream: str) -> dict:
        return {"file_path": path, "log_group_name": log_group, "log_stream_name": "{instance_id}/" + stream,
                "retention_in_days": -1}
    return {
        "agent": {"metrics_collection_interval": 60, "run_as_user": "root"},
        "metrics": {
            "namespace": "CWAgent",
            "append_dimensions": {"InstanceId": "${aws:InstanceId}"},
            "metrics_collected": {
                "mem": {"measurement": ["mem_used_percent"]},
                "disk": {"measurement": ["used_percent"], "resources": ["/"]},
            },
        },
        "logs": {"logs_collected": {"files": {"collect_list": [
            log("/var/log/nginx/access.log", "nginx-access"),
            log("/var/log/nginx/error.log", "nginx-error"),
        ]}}},
    }


def _install_deb(url: str, name: str) -> str:
    # A one-off download from AWS's own bucket over HTTPS; apt-get installs its dependencies.
    return (f"set -eu; f=$(mktemp --suffix=.deb); curl -fsSL --retry 5 -o \"$f\" '{url}'; "
            f"DEBIAN_FRONTEND=noninteractive apt-get install -y \"$f\"; rm -f \"$f\"  # {name}")


def prepare_host_command(args: UserDataArgs) -> list[str]:
    cmd = [SCRIPT_PATH]
    if args.ecr_registry:
        cmd += ["--ecr-registry", args.ecr_registry]
    return cmd


def cloud_config(args: UserDataArgs) -> dict:
    """The cloud-config document as a dict (pure)."""
    script = args.script if args.script is not None else PREPARE_HOST.read_bytes()
    write_files = [{
        "path": SCRIPT_PATH,
        "owner": "root:root",
        "permissions": "0755",
        "encoding": "gz+b64",
        # mtime=0: the same script gives the same user data, so `pulumi up` sees no change.
        "content": base64.b64encode(gzip.compress(script, mtime=0)).decode("ascii"),
    }]
    runcmd: list = [prepare_host_command(args)]
    if args.ssm and args.os == "debian-12":
        runcmd.append(["sh", "-c", _install_deb(ssm_agent_url(args.region, args.architecture), "SSM agent")])
        runcmd.append(["systemctl", "enable", "--now", "amazon-ssm-agent"])
    if args.cloudwatch_log_group:
        write_files.append({
            "path": CLOUDWATCH_CONFIG_PATH,
            "owner": "root:root",
            "permissions": "0644",
            "content": json.dumps(cloudwatch_agent_config(args.cloudwatch_log_group), indent=2, sort_keys=True) + "\n",
        })
        runcmd.append(["sh", "-c", _install_deb(cloudwatch_agent_url(args.region, args.architecture),
                                                "CloudWatch agent")])
        runcmd.append(["/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl", "-a", "fetch-config",
                       "-m", "ec2", "-s", "-c", f"file:{CLOUDWATCH_CONFIG_PATH}"])
    return {
        # ferry deploys as root, like on the local target: the instance's key pair is installed
        # for root too (key only: sshd keeps refusing passwords, see prepare-host).
        "disable_root": False,
        "ssh_pwauth": False,
        "package_update": True,
        "package_upgrade": True,
        "packages": ["curl", "ca-certificates"],
        "write_files": write_files,
        "runcmd": runcmd,
    }


def render(args: UserDataArgs) -> str:
    """The user data text, `#cloud-config` first; raises ValueError past EC2's size limit."""
    text = "#cloud-config\n" + yaml.safe_dump(cloud_config(args), sort_keys=False, width=1 << 16)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"user data is {len(text.encode())} bytes, over EC2's limit of {USER_DATA_LIMIT}")
    return text


def embedded_script(user_data: str) -> bytes:
    """The prepare-host script inside rendered user data (what a test compares with the file)."""
    doc = yaml.safe_load(user_data)
    for f in doc["write_files"]:
        if f["path"] == SCRIPT_PATH:
            return gzip.decompress(base64.b64decode(f["content"]))
    raise KeyError(SCRIPT_PATH)
