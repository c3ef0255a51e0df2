"""The stack config (`Pulumi.<stack>.yaml`) read into one frozen dataclass, validated whole
before any resource is declared.

Pulumi hands a program its config as strings (lists and objects JSON-encoded), so the
parser here is pure: a mapping of key -> value in, `StackConfig` out, or a `ConfigError`
naming the key and the `pulumi config set ...` that fixes it. `load()` is the thin part that
asks the Pulumi runtime for those strings.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ferry.errors import ConfigError

from . import naming

OPERATING_SYSTEMS = {
    # name: (AMI owner account, AMI name pattern with {arch}, ssh user of the image)
    "debian-12": ("136693071363", "debian-12-{arch}-*", "admin"),
    "ubuntu-24.04": ("099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-*", "ubuntu"),
}
# CloudWatch Logs accepts only these retention periods (0 here: no flow logs).
LOG_RETENTION_DAYS = (0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)

_APP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d+$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_ECR_NAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( .*)?$")
_KEY_NAME_RE = re.compile(r"^[\x20-\x7e]{1,255}$")
_PG_VERSION_RE = re.compile(r"^(1[3-9]|[2-9]\d)(\.\d+)?$")
_DB_CLASS_RE = re.compile(r"^db\.[a-z0-9]+\.[a-z0-9]+$")
_PG_IDENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# names RDS refuses as the master user of PostgreSQL (and the engine's own roles)
RESERVED_DB_USERS = ("admin", "postgres", "rdsadmin", "rdsrepladmin", "rds_superuser", "public")


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    region: str
    app: str
    domain: str | None = None
    zone: str | None = None  # the Route53 hosted zone the domain lives in
    create_zone: bool = False
    hosts: int = 1
    instance_type: str = "t3.small"
    os: str = "debian-12"
    root_volume_gb: int = 20
    admin_cidrs: tuple[str, ...] = ()
    ssm: bool = False
    ssh_public_key: str | None = None
    key_name: str | None = None
    detailed_monitoring: bool = False
    termination_protection: bool = False
    use_default_vpc: bool = False
    vpc_cidr: str = "10.42.0.0/16"
    ipv6: bool = True
    health_path: str = "/healthz"
    repository_name: str = ""
    ecr_keep_images: int = 30
    cloudwatch_agent: bool = False
    flow_log_retention_days: int = 30
    # RDS PostgreSQL (`pulumi config set database true`): private subnets, SSL forced, password
    # managed by RDS in Secrets Manager
    database: bool = False
    database_engine_version: str = "17"
    database_instance_class: str = "db.t4g.micro"
    database_storage_gb: int = 20
    database_name: str = ""  # default: the app's name with _ for - (db_ first if it starts with a digit)
    database_user: str = "ferry"
    database_backup_days: int = 7
    database_deletion_protection: bool = True
    database_final_snapshot: bool = True
    database_multi_az: bool = False

    @property
    def name(self) -> str:
        return naming.base_name(self.app, self.stack)

    def tags(self, name: str | None = None) -> dict[str, str]:
        return naming.tags(self.app, self.stack, name)

    @property
    def behind_load_balancer(self) -> bool:
        return self.hosts > 1

    @property
    def architecture(self) -> str:
        return architecture_of(self.instance_type)

    @property
    def ssh_user(self) -> str:
        # ferry deploys as root, as on the local target; cloud-init installs the key for root
        # (disable_root: false) and sshd still refuses passwords.
        return "root"

    @property
    def image_user(self) -> str:
        return OPERATING_SYSTEMS[self.os][2]


def architecture_of(instance_type: str) -> str:
    """Graviton families have a `g` after the generation digit (t4g, m7gd, c6gn, im4gn)."""
    family = instance_type.split(".", 1)[0]
    if family == "a1":
        return "arm64"
    m = re.match(r"^[a-z]+\d+([a-z-]*)$", family)
    return "arm64" if m and "g" in m.group(1).split("-")[0] else "x86_64"


def ami_filter(os_name: str, architecture: str) -> tuple[str, str]:
    """(owner, name pattern) of the newest official image of that OS and architecture."""
    owner, pattern, _ = OPERATING_SYSTEMS[os_name]
    arch = {"x86_64": "amd64", "arm64": "arm64"}[architecture]
    return owner, pattern.format(arch=arch)


# --- one reader per value type ----------------------------------------------------------------

class _Bad(Exception):
    """A value is wrong; the caller adds the key and the fix."""


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise _Bad(f"expected true or false, got {v!r}")


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def read(v: Any) -> int:
        if isinstance(v, bool):
            raise _Bad(f"expected a whole number, got {v!r}")
        try:
            n = int(v.strip()) if isinstance(v, str) else int(v)
        except (TypeError, ValueError):
            raise _Bad(f"expected a whole number, got {v!r}") from None
        if isinstance(v, float) and v != n:
            raise _Bad(f"expected a whole number, got {v!r}")
        if not lo <= n <= hi:
            raise _Bad(f"{n} is out of range {lo}..{hi}")
        return n
    return read


def _str(pattern: re.Pattern, what: str) -> Callable[[Any], str]:
    def read(v: Any) -> str:
        if not isinstance(v, str) or not pattern.match(v.strip()):
            raise _Bad(f"{v!r} is not {what}")
        return v.strip()
    return read


def _choice(*choices: str) -> Callable[[Any], str]:
    def read(v: Any) -> str:
        if v not in choices:
            raise _Bad(f"{v!r} is not one of {', '.join(choices)}")
        return v
    return read


def _cidr_list(v: Any) -> tuple[str, ...]:
    """A JSON list (`pulumi config set --path 'adminCidrs[0]' ...`) or a comma-separated string."""
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            try:
                v = json.loads(text)
            except json.JSONDecodeError:
                raise _Bad(f"{text!r} is not a JSON list") from None
        else:
            v = [p for p in (s.strip() for s in text.split(",")) if p]
    if not isinstance(v, (list, tuple)):
        raise _Bad(f"expected a list of CIDR ranges, got {v!r}")
    out = []
    for item in v:
        try:
            net = ipaddress.ip_network(str(item).strip(), strict=True)
        except ValueError:
            raise _Bad(f"{item!r} is not a CIDR range like 203.0.113.7/32") from None
        if net.prefixlen == 0:
            raise _Bad(f"{item} would open SSH to the whole internet")
        out.append(str(net))
    return tuple(out)


def _vpc_cidr(v: Any) -> str:
    try:
        net = ipaddress.IPv4Network(str(v).strip(), strict=True)
    except ValueError:
        raise _Bad(f"{v!r} is not an IPv4 CIDR range like 10.42.0.0/16") from None
    if not 16 <= net.prefixlen <= 24:
        raise _Bad(f"{net} must have a prefix between /16 and /24 (two subnets are cut from it)")
    if not net.is_private:
        raise _Bad(f"{net} is not a private range")
    return str(net)


def _retention(v: Any) -> int:
    n = _int(0, 3653)(v)
    if n not in LOG_RETENTION_DAYS:
        raise _Bad(f"{n} is not a retention CloudWatch accepts ({', '.join(map(str, LOG_RETENTION_DAYS[1:8]))}, ...)")
    return n


# key: (field, reader, example value for the fix)
KEYS: dict[str, tuple[str, Callable[[Any], Any], str]] = {
    "app": ("app", _str(_APP_RE, "a name of lower-case letters, digits and dashes (at most 24)"), "hello"),
    "domain": ("domain", _str(_HOSTNAME_RE, "a lower-case DNS name like app.example.com"), "app.example.com"),
    "zone": ("zone", _str(_HOSTNAME_RE, "a lower-case DNS zone name like example.com"), "example.com"),
    "createZone": ("create_zone", _bool, "false"),
    "hosts": ("hosts", _int(1, 20), "1"),
    "instanceType": ("instance_type", _str(_INSTANCE_TYPE_RE, "an EC2 instance type like t3.small"), "t3.small"),
    "os": ("os", _choice(*OPERATING_SYSTEMS), "debian-12"),
    "rootVolumeGb": ("root_volume_gb", _int(8, 16384), "20"),
    "adminCidrs": ("admin_cidrs", _cidr_list, "203.0.113.7/32"),
    "ssm": ("ssm", _bool, "false"),
    "sshPublicKey": ("ssh_public_key", _str(_SSH_KEY_RE, "an OpenSSH public key (ssh-ed25519 AAAA...)"),
                     '"$(cat ~/.ssh/id_ed25519.pub)"'),
    "keyName": ("key_name", _str(_KEY_NAME_RE, "an EC2 key pair name"), "my-key"),
    "detailedMonitoring": ("detailed_monitoring", _bool, "false"),
    "terminationProtection": ("termination_protection", _bool, "true"),
    "useDefaultVpc": ("use_default_vpc", _bool, "false"),
    "vpcCidr": ("vpc_cidr", _vpc_cidr, "10.42.0.0/16"),
    "ipv6": ("ipv6", _bool, "true"),
    "healthPath": ("health_path", _str(re.compile(r"^/[\x21-\x7e]*$"), "a path starting with /"), "/healthz"),
    "repositoryName": ("repository_name", _str(_ECR_NAME_RE, "an ECR repository name (lower case, . _ - /)"), "hello"),
    "ecrKeepImages": ("ecr_keep_images", _int(1, 1000), "30"),
    "cloudwatchAgent": ("cloudwatch_agent", _bool, "false"),
    "flowLogRetentionDays": ("flow_log_retention_days", _retention, "30"),
    "database": ("database", _bool, "true"),
    "databaseEngineVersion": ("database_engine_version", _str(_PG_VERSION_RE, "a PostgreSQL version like 17 or 16.4"), "17"),
    "databaseInstanceClass": ("database_instance_class", _str(_DB_CLASS_RE, "an RDS instance class like db.t4g.micro"),
                              "db.t4g.micro"),
    "databaseStorageGb": ("database_storage_gb", _int(20, 65536), "20"),
    "databaseName": ("database_name", _str(_PG_IDENT_RE, "a PostgreSQL name (lower case, digits, _)"), "hello"),
    "databaseUser": ("database_user", _str(_PG_IDENT_RE, "a PostgreSQL user name (lower case, digits, _)"), "ferry"),
    "databaseBackupDays": ("database_backup_days", _int(1, 35), "7"),
    "databaseDeletionProtection": ("database_deletion_protection", _bool, "true"),
    "databaseFinalSnapshot": ("database_final_snapshot", _bool, "true"),
    "databaseMultiAz": ("database_multi_az", _bool, "false"),
}
DATABASE_KEYS = tuple(k for k in KEYS if k.startswith("database") and k != "database")


def _where(stack: str, project: str, key: str) -> str:
    return f"Pulumi.{stack}.yaml: {project}:{key}"


def _fix(key: str, example: str, stack: str) -> str:
    return f"pulumi config set {key} {example} --stack {stack}"


def parse(raw: Mapping[str, Any], *, project: str, stack: str, region: str | None) -> StackConfig:
    """Validate one stack's config (keys without the `project:` prefix). Pure."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        known = ", ".join(KEYS)
        raise ConfigError(f"{_where(stack, project, unknown[0])}: unknown key",
                          f"pulumi config rm {unknown[0]} --stack {stack}, and use one of: {known}")
    if not region:
        raise ConfigError(f"Pulumi.{stack}.yaml: aws:region: missing",
                          f"pulumi config set aws:region eu-west-1 --stack {stack}")
    if not _REGION_RE.match(region):
        raise ConfigError(f"Pulumi.{stack}.yaml: aws:region: {region!r} is not an AWS region",
                          f"pulumi config set aws:region eu-west-1 --stack {stack}")
    if "app" not in raw or raw["app"] in (None, ""):
        raise ConfigError(f"{_where(stack, project, 'app')}: missing (it names every resource and the host layout)",
                          _fix("app", "hello", stack))
    values: dict[str, Any] = {}
    for key, value in raw.items():
        field, read, example = KEYS[key]
        try:
            values[field] = read(value)
        except _Bad as e:
            raise ConfigError(f"{_where(stack, project, key)}: {e}", _fix(key, example, stack)) from None

    def fail(key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{_where(stack, project, key)}: {problem}", fix)

    domain = values.get("domain")
    if "zone" in values and not domain:
        raise fail("zone", "set without a domain", _fix("domain", "app.example.com", stack))
    if domain:
        zone = values.get("zone") or (domain.split(".", 1)[1] if domain.count(".") >= 2 else domain)
        if domain != zone and not domain.endswith("." + zone):
            raise fail("zone", f"{domain} is not inside the zone {zone}", _fix("zone", domain.split(".", 1)[-1], stack))
        values["zone"] = zone
    if values.get("create_zone") and not domain:
        raise fail("createZone", "there is no domain to create a zone for", _fix("domain", "app.example.com", stack))
    if values.get("hosts", 1) > 1 and not domain:
        raise fail("hosts", "several hosts sit behind a load balancer whose HTTPS certificate needs a domain",
                   _fix("domain", "app.example.com", stack) + " (or set hosts to 1)")
    if values.get("ssm") and values.get("admin_cidrs"):
        raise fail("adminCidrs", "with ssm = true no SSH port is opened, so admin ranges would be ignored",
                   f"pulumi config rm adminCidrs --stack {stack}")
    if not values.get("ssm") and not values.get("admin_cidrs"):
        raise fail("adminCidrs", "missing: with ssm = false, SSH (22) is the only way in and it is closed to everyone",
                   _fix("adminCidrs", "203.0.113.7/32", stack) + f", or pulumi config set ssm true --stack {stack}")
    if values.get("ssh_public_key") and values.get("key_name"):
        raise fail("keyName", "set together with sshPublicKey: the host gets one key pair",
                   f"pulumi config rm keyName --stack {stack} (or rm sshPublicKey)")
    if not values.get("ssh_public_key") and not values.get("key_name"):
        raise fail("sshPublicKey", "missing: ferry deploys over SSH (also through SSM) and needs its key on the host",
                   _fix("sshPublicKey", '"$(cat ~/.ssh/id_ed25519.pub)"', stack) + " (or keyName for an existing key pair)")
    if values.get("use_default_vpc"):
        if values.get("ipv6"):
            raise fail("ipv6", "the default VPC has no IPv6 range ferry can rely on",
                       f"pulumi config set ipv6 false --stack {stack} (or useDefaultVpc false)")
        if "vpc_cidr" in values:
            raise fail("vpcCidr", "is ignored with useDefaultVpc = true", f"pulumi config rm vpcCidr --stack {stack}")
        values.setdefault("ipv6", False)
    if values.get("database"):
        if values.get("use_default_vpc"):
            raise fail("database", "RDS goes into private subnets of the VPC ferry creates, and useDefaultVpc is true",
                       f"pulumi config set useDefaultVpc false --stack {stack} (or database false)")
        if values.get("database_user", "ferry") in RESERVED_DB_USERS:
            raise fail("databaseUser", f"{values['database_user']!r} is reserved by RDS PostgreSQL",
                       _fix("databaseUser", "ferry", stack))
    else:
        stray = [k for k in DATABASE_KEYS if KEYS[k][0] in values]
        if stray:
            raise fail(stray[0], "is set but database is not true, so no database would use it",
                       _fix("database", "true", stack) + f" (or pulumi config rm {stray[0]} --stack {stack})")
    values.setdefault("repository_name", f"{values['app']}-{stack}")
    # PostgreSQL on RDS: letters, digits and _, a letter first
    default_db = values["app"].replace("-", "_")
    values.setdefault("database_name", default_db if default_db[0].isalpha() else f"db_{default_db}")
    return StackConfig(project=project, stack=stack, region=region, **values)


def decode(value: Any) -> Any:
    """Pulumi passes structured values JSON-encoded; plain strings stay strings."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def load() -> StackConfig:
    """Read this stack's config from the Pulumi runtime and validate it (raises ConfigError)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    project, stack = pulumi.get_project(), pulumi.get_stack()
    prefix = f"{project}:"
    try:  # every key of the stack, so a typo is reported instead of silently ignored
        everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
        keys = {k[len(prefix):] for k in everything if k.startswith(prefix)}
    except AttributeError:  # the SDK moved its config map: fall back to the keys we know
        keys = set(KEYS)
    conf = pulumi.Config()
    raw = {k: decode(conf.get(k)) for k in keys if conf.get(k) is not None}
    region = pulumi.Config("aws").get("region")
    return parse(raw, project=project, stack=stack, region=region)
