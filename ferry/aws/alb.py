"""Take one host out of its load balancer target group before its swap, and put it back after.

`deregister` returns once the load balancer has drained the host (state `unused`): no new
requests reach it, the open ones finished (the target group's deregistration delay). `register`
returns once the load balancer's own health check passes (state `healthy`), so the next host
is only taken out while this one serves again. Both are no-ops that say so when the host is
already where it should be, and both give up with a clear error after `timeout` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import InfraError
from ..progress import NULL, Progress
from . import session


@dataclass(frozen=True)
class TargetState:
    target_group_arn: str
    instance_id: str
    state: str  # initial | healthy | unhealthy | unused | draining | unavailable | ...
    reason: str | None = None
    description: str | None = None

    def __str__(self) -> str:
        extra = f" ({self.reason}: {self.description})" if self.reason else ""
        return f"{self.state}{extra}"


def group_name(target_group_arn: str) -> str:
    """`arn:...:targetgroup/hello-dev-hosts/73e2...` -> `hello-dev-hosts` (for messages)."""
    part = target_group_arn.split(":")[-1]
    bits = part.split("/")
    return bits[1] if len(bits) >= 2 else part


def target_state(client: Any, target_group_arn: str, instance_id: str, port: int | None = None) -> TargetState:
    target = {"Id": instance_id, **({"Port": port} if port else {})}
    resp = session.call(f"describe the health of {instance_id} in {group_name(target_group_arn)}",
                        client.describe_target_health, TargetGroupArn=target_group_arn, Targets=[target])
    for d in resp.get("TargetHealthDescriptions", []):
        if d["Target"]["Id"] == instance_id:
            h = d.get("TargetHealth", {})
            return TargetState(target_group_arn, instance_id, h.get("State", "unknown"), h.get("Reason"),
                               h.get("Description"))
    return TargetState(target_group_arn, instance_id, "unused", "Target.NotRegistered", "not in the target group")


def _wait(client: Any, arn: str, instance_id: str, port: int | None, *, want: str, fail_fast: Callable[[TargetState], bool],
          timeout: float, interval: float, progress: Progress, clock: Callable[[], float],
          sleep: Callable[[float], None], hint: str) -> TargetState:
    deadline = clock() + timeout
    last: TargetState | None = None
    while True:
        s = target_state(client, arn, instance_id, port)
        if last is None or (s.state, s.reason) != (last.state, last.reason):
            progress.info(f"{instance_id} in {group_name(arn)}: {s}")
        last = s
        if s.state == want:
            return s
        if fail_fast(s):
            raise InfraError(f"{instance_id} cannot become {want} in {group_name(arn)}: it is {s}", hint)
        if clock() >= deadline:
            raise InfraError(f"{instance_id} is still {s} in {group_name(arn)} after {timeout:.0f}s (wanted {want})", hint)
        sleep(interval)


def deregister(target_group_arn: str, instance_id: str, *, region: str, port: int | None = None,
               timeout: float = 300.0, interval: float = 2.0, progress: Progress = NULL, client: Any = None,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> TargetState:
    """Take the instance out of the target group and wait until it is drained (`unused`)."""
    client = client or session.client("elbv2", region)
    name = group_name(target_group_arn)
    now = target_state(client, target_group_arn, instance_id, port)
    if now.state == "unused":
        progress.info(f"{instance_id} is already out of {name}: nothing to drain")
        return now
    progress.step(f"take {instance_id} out of {name} (draining)")
    if now.state != "draining":
        target = {"Id": instance_id, **({"Port": port} if port else {})}
        session.call(f"deregister {instance_id} from {name}", client.deregister_targets,
                     TargetGroupArn=target_group_arn, Targets=[target])
    return _wait(client, target_group_arn, instance_id, port, want="unused", fail_fast=lambda s: False,
                 timeout=timeout, interval=interval, progress=progress, clock=clock, sleep=sleep,
                 hint="the target group's deregistration delay is longer than the wait: lower it, or raise the timeout")


def register(target_group_arn: str, instance_id: str, *, region: str, port: int | None = None,
             timeout: float = 300.0, interval: float = 2.0, progress: Progress = NULL, client: Any = None,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> TargetState:
    """Put the instance (back) into the target group and wait until its health check passes."""
    client = client or session.client("elbv2", region)
    name = group_name(target_group_arn)
    now = target_state(client, target_group_arn, instance_id, port)
    if now.state == "healthy":
        progress.info(f"{instance_id} is already healthy in {name}")
        return now
    progress.step(f"put {instance_id} back into {name}")
    if now.state in ("unused", "draining"):
        target = {"Id": instance_id, **({"Port": port} if port else {})}
        session.call(f"register {instance_id} in {name}", client.register_targets,
                     TargetGroupArn=target_group_arn, Targets=[target])
    # A stopped or terminated instance never turns healthy: say so at once instead of waiting.
    stopped = {"Target.InvalidState", "Target.NotInUse"}
    return _wait(client, target_group_arn, instance_id, port, want="healthy",
                 fail_fast=lambda s: s.state in ("unused", "unavailable") and s.reason in stopped,
                 timeout=timeout, interval=interval, progress=progress, clock=clock, sleep=sleep,
                 hint="check that nginx on the host answers the health path on port 80 for any Host header "
                      "(the load balancer sends the host's private IP), and the target group's health check")
