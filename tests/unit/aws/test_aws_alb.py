"""The waiting logic of ferry/aws/alb.py against a scripted load balancer (the real API flow
runs against moto in tests/integration/aws)."""

from __future__ import annotations

import io

import pytest

from ferry.aws import alb
from ferry.errors import InfraError
from ferry.progress import Progress

TG = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/hello-dev-hosts/73e2d6bc24d8a067"


class ScriptedElb:
    """Answers describe_target_health from a list of (state, reason) in order; the last repeats."""

    def __init__(self, states):
        self.states = list(states)
        self.calls = []

    def describe_target_health(self, TargetGroupArn, Targets):
        self.calls.append("describe")
        state, reason = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        health = {"State": state, **({"Reason": reason, "Description": f"{reason} here"} if reason else {})}
        return {"TargetHealthDescriptions": [{"Target": Targets[0], "TargetHealth": health}]}

    def deregister_targets(self, TargetGroupArn, Targets):
        self.calls.append(("deregister", Targets[0]["Id"]))

    def register_targets(self, TargetGroupArn, Targets):
        self.calls.append(("register", Targets[0]["Id"]))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_deregister_waits_through_draining_until_unused_and_reports_each_state():
    elb = ScriptedElb([("healthy", None), ("draining", "Target.DeregistrationInProgress"),
                       ("draining", "Target.DeregistrationInProgress"), ("unused", "Target.NotRegistered")])
    clock, log = Clock(), io.StringIO()
    s = alb.deregister(TG, "i-01", region="eu-west-1", client=elb, clock=clock, sleep=clock.sleep,
                       progress=Progress(log))
    assert s.state == "unused"
    assert elb.calls == ["describe", ("deregister", "i-01"), "describe", "describe", "describe"]
    assert clock.now == 4.0
    text = log.getvalue()
    assert "take i-01 out of hello-dev-hosts (draining)" in text
    assert text.count("draining (Target.DeregistrationInProgress") == 1  # a state is reported once
    assert "unused (Target.NotRegistered" in text


def test_deregister_of_a_host_already_out_does_nothing_and_says_so():
    elb = ScriptedElb([("unused", "Target.NotRegistered")])
    log = io.StringIO()
    alb.deregister(TG, "i-01", region="eu-west-1", client=elb, progress=Progress(log))
    assert elb.calls == ["describe"]
    assert "already out of hello-dev-hosts" in log.getvalue()


def test_deregister_gives_up_after_the_timeout_with_a_hint():
    elb = ScriptedElb([("healthy", None), ("draining", "Target.DeregistrationInProgress")])
    clock = Clock()
    with pytest.raises(InfraError) as err:
        alb.deregister(TG, "i-01", region="eu-west-1", client=elb, timeout=10, clock=clock, sleep=clock.sleep)
    assert "i-01 is still draining (Target.DeregistrationInProgress" in err.value.message
    assert "after 10s" in err.value.message
    assert "deregistration delay" in err.value.hint


def test_register_waits_until_the_health_check_passes():
    elb = ScriptedElb([("unused", "Target.NotRegistered"), ("initial", "Elb.RegistrationInProgress"),
                       ("unhealthy", "Target.FailedHealthChecks"), ("healthy", None)])
    clock = Clock()
    s = alb.register(TG, "i-01", region="eu-west-1", client=elb, clock=clock, sleep=clock.sleep)
    assert s.state == "healthy"
    assert elb.calls[:2] == ["describe", ("register", "i-01")]


def test_register_of_a_healthy_host_does_nothing():
    elb = ScriptedElb([("healthy", None)])
    alb.register(TG, "i-01", region="eu-west-1", client=elb)
    assert elb.calls == ["describe"]


def test_register_fails_at_once_for_a_stopped_instance():
    elb = ScriptedElb([("unused", "Target.NotRegistered"), ("unused", "Target.InvalidState")])
    clock = Clock()
    with pytest.raises(InfraError, match="cannot become healthy .* unused \\(Target.InvalidState"):
        alb.register(TG, "i-01", region="eu-west-1", client=elb, clock=clock, sleep=clock.sleep)
    assert clock.now == 0.0


def test_register_that_never_turns_healthy_names_the_reason_and_what_to_check():
    elb = ScriptedElb([("unused", "Target.NotRegistered"), ("unhealthy", "Target.ResponseCodeMismatch")])
    clock = Clock()
    with pytest.raises(InfraError) as err:
        alb.register(TG, "i-01", region="eu-west-1", client=elb, timeout=30, clock=clock, sleep=clock.sleep)
    assert "still unhealthy (Target.ResponseCodeMismatch" in err.value.message
    assert "private IP" in err.value.hint


def test_group_name_is_read_from_the_arn():
    assert alb.group_name(TG) == "hello-dev-hosts"
