"""Fixtures for release tests on the local target: the sample service built in a few variants
(each a real image in the local registry), an isolated app per test (own name, ports and
directory), and a bounded load through nginx."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferry.loadgen import Load
from ferry.local.appconfig import app_toml

ROOT = Path(__file__).resolve().parents[3]
FERRY = [sys.executable, "-m", "ferry"]
_ports = itertools.count(0)


def ferry(config: Path, *args: str, check: bool = True, timeout: float = 600, env: dict | None = None,
          ) -> subprocess.CompletedProcess:
    r = subprocess.run([*FERRY, "-c", str(config), *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and r.returncode != 0:
        raise AssertionError(f"ferry {' '.join(args)} exited {r.returncode}:\n{r.stderr[-4000:]}")
    return r


def ferry_json(config: Path, *args: str, **kw) -> dict:
    r = ferry(config, *args, "--json", **kw)
    return json.loads(r.stdout)


VARIANTS = {
    "v1": "",
    "v2": "",
    "v3": "",
    "v4": "",
    "v5": "",
    "v6": "",
    # /healthz answers 503 forever
    "unhealthy": """
        @app.before_request
        def _fail_health():
            from flask import request as _r
            if _r.path == "/healthz":
                return ("not ready: the database is unreachable\\n", 503)
    """,
    # the server refuses to start (its config fails): the container exits at start
    "crash": ("gunicorn.conf.py", """
        raise SystemExit("hello: missing setting HELLO_REQUIRED; refusing to start")
    """),
}


def write_variant(dest: Path, name: str) -> Path:
    src = dest / name
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "examples" / "hello", src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "hello" / "__init__.py"
    init.write_text(init.read_text().replace('GREETING = "hello from ferry"', f'GREETING = "hello from ferry ({name})"'))
    target, code = VARIANTS[name] if isinstance(VARIANTS[name], tuple) else ("hello/__init__.py", VARIANTS[name])
    f = src / target
    f.write_text(f.read_text() + textwrap.dedent(code))
    return src


def app_config(path: Path, app: str, source: Path, http_port: int, blue: int, green: int, repo: str) -> Path:
    path.write_text(app_toml(app=app, source=source, http_port=http_port, blue=blue, green=green, repository=repo,
                             health='path = "/healthz", interval = "300ms", timeout = "20s", healthy_after = 2'))
    return path


@dataclass
class App:
    name: str
    config: Path
    http_port: int
    ports: dict
    images: dict
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self) -> Path:
        return app_config(self.config, self.name, self.tmp / "src" / "v1", self.http_port, self.ports["blue"],
                          self.ports["green"], "127.0.0.1:5000/ferry-test/hello")

    def deploy(self, variant: str, *args: str, check: bool = True, env: dict | None = None):
        return ferry(self.config, "deploy", self.images[variant], "--version", variant, *args, check=check, env=env)

    def status(self) -> dict:
        return ferry_json(self.config, "status", check=False)

    def live(self) -> dict | None:
        return self.status()["hosts"][0]["live"]


@pytest.fixture(scope="session")
def hello_images(local_target, tmp_path_factory) -> dict[str, str]:
    """Every variant built and pushed once per session: name -> repo@digest."""
    tmp = tmp_path_factory.mktemp("hello-variants")
    images = {}
    for name in VARIANTS:
        src = write_variant(tmp, name)
        cfg = app_config(tmp / f"{name}.toml", "ferry-test", src, 18000, 18003, 18004,
                         "127.0.0.1:5000/ferry-test/hello")
        out = ferry_json(cfg, "build", "--push", "--tag", name, timeout=900)
        images[name] = out["image"]
    assert len(set(images.values())) == len(images), "each variant must have its own digest"
    return images


@pytest.fixture
def app(request, hello_images, tmp_path, local_target, docker_cli) -> App:
    n = next(_ports)
    # FERRY_TEST_PORT_BASE / FERRY_TEST_PREFIX: a session of its own (ports, app names) when
    # several run these tests on one machine at once
    base = int(os.environ.get("FERRY_TEST_PORT_BASE") or 18100 + (os.getpid() % 50) * 200) + 10 * n
    # at most 32 characters: nginx's variables_hash_bucket_size (64) bounds $ferry_<app>_release
    prefix = os.environ.get("FERRY_TEST_PREFIX", "t-")
    name = (prefix + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()))[:32].strip("-")
    a = App(name, tmp_path / "ferry.toml", base, {"blue": base + 3, "green": base + 4}, hello_images, tmp_path)
    (tmp_path / "src").mkdir()
    write_variant(tmp_path / "src", "v1")
    a.write_config()
    yield a
    # leave nothing behind: containers, the app's directory, its nginx site
    subprocess.run([*docker_cli, "rm", "-f", f"{name}-blue", f"{name}-green"], capture_output=True)
    subprocess.run(["umount", f"/opt/ferry/{name}/releases.json"], capture_output=True)
    shutil.rmtree(f"/opt/ferry/{name}", ignore_errors=True)
    subprocess.run(["nginx", "-c", local_target["nginx_conf"], "-s", "reload"], capture_output=True)


@pytest.fixture
def load():
    loads: list[Load] = []

    def start(url: str, **kw) -> Load:
        lo = Load(url, **kw)
        loads.append(lo)
        return lo

    yield start
    for lo in loads:
        lo.kill()


@dataclass
class BalancedStack:
    """EC2 instances in one moto target group, and the exported stack outputs naming them."""

    ids: list[str]
    arn: str
    elbv2: object

    def states(self) -> dict[str, str]:
        d = self.elbv2.describe_target_health(TargetGroupArn=self.arn)["TargetHealthDescriptions"]
        return {x["Target"]["Id"]: x["TargetHealth"]["State"] for x in d}


def balanced_stack_for(moto_endpoint: str, app: "App", outputs: Path, group: str, hosts: list[dict],
                       others: int = 0) -> BalancedStack:
    """Reset moto, make one instance per entry of ``hosts`` (stack-output host dicts without
    instanceId/targetGroupArn) plus ``others`` that serve in the group but are not in the
    outputs, register them all in a target group, write the stack outputs and point the app's
    ferry.toml at them (ssh to the local target's port)."""
    import httpx

    from ferry.aws import session

    httpx.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    ec2, elbv2 = session.client("ec2", "eu-west-1"), session.client("elbv2", "eu-west-1")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/20", AvailabilityZone="eu-west-1a")["Subnet"]["SubnetId"]
    n = len(hosts) + others
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-0f00dfeedface0001", MinCount=n, MaxCount=n,
                                                       InstanceType="t3.small", SubnetId=subnet)["Instances"]]
    arn = elbv2.create_target_group(Name=group, Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance",
                                    HealthCheckPath="/healthz")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in ids])
    outputs.write_text(json.dumps({
        "region": "eu-west-1", "sshUser": "root", "targetGroupArns": [arn],
        "hosts": [{**h, "instanceId": i, "targetGroupArn": arn} for h, i in zip(hosts, ids)],
    }))
    text = app.config.read_text().replace('hosts = ["root@127.0.0.1:2222"]',
                                          f'stack_outputs = "{outputs}"\nssh_port = 2222')
    app.config.write_text(text)
    return BalancedStack(ids, arn, elbv2)

