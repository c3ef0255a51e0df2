"""Names and tags, computed once so every resource agrees on them."""

from __future__ import annotations

MANAGED_BY = "pulumi"


def base_name(app: str, stack: str) -> str:
    """`hello-dev`: the prefix of every physical name, so two stacks never collide."""
    return f"{app}-{stack}"


def tags(app: str, stack: str, name: str | None = None) -> dict[str, str]:
    """The tags every taggable resource carries; `Name` shows up in the EC2 console."""
    out = {"app": app, "stack": stack, "managed-by": MANAGED_BY}
    if name:
        out["Name"] = name
    return out


def alb_name(app: str, stack: str, suffix: str = "") -> str:
    """ALB and target group names: at most 32 characters, letters, digits and dashes."""
    name = base_name(app, stack)
    room = 32 - len(suffix)
    return (name[:room].rstrip("-") + suffix)[:32]


def db_identifier(app: str, stack: str) -> str:
    """The RDS instance's identifier (and its subnet group's, parameter group's and final
    snapshot's prefix): RDS wants letters, digits and single dashes, a letter first, no dash last,
    at most 63 characters. Stack names may hold `_` and `.`, apps may start with a digit."""
    import re

    name = re.sub(r"[^a-z0-9-]+", "-", base_name(app, stack).lower())
    name = re.sub(r"-{2,}", "-", name).strip("-")
    if not name[:1].isalpha():
        name = f"db-{name}"
    suffix = "-db"
    return name[:63 - len(suffix)].rstrip("-") + suffix


def host_name(app: str, stack: str, index: int) -> str:
    return f"{base_name(app, stack)}-{index + 1}"


def monitoring_repositories(prefix: str) -> tuple[str, ...]:
    """ECR repositories of the monitoring stack's images and the accessories' (PostgreSQL,
    Redis, postgres_exporter): the names `ferry monitoring images --push` and `ferry accessory
    images --push` push to (ferry/monitoring/images.py, ferry/accessories/spec.py); the hosts
    may pull from each."""
    from ferry.accessories.spec import repository_names as accessory_repositories
    from ferry.monitoring.images import repository_names

    return repository_names(prefix) + accessory_repositories(prefix)
