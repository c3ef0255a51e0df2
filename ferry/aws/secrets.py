"""Secrets from AWS: `deploy.secrets` references and the RDS database's URL, read at deploy time.

An entry of `deploy.secrets` is one of
- `NAME`: the value of environment variable NAME (or deploy.env_file), as before;
- `NAME=aws-sm:<arn-or-name>[#json-key]`: a Secrets Manager secret (its SecretString, or one
  key of its JSON object);
- `NAME=ssm:/path/to/param`: an SSM Parameter Store SecureString, decrypted.
`parse_entry` is pure (ferry.toml's validation uses it; nothing is read then). `resolve` reads the
values with boto3 and the deployer's credentials (ferry/aws/session.py) when a deploy starts, once,
before any host is touched. `[accessories.NAME] kind = "rds"` adds its `url_env`: the stack's
databaseSecretArn (the {"username", "password"} JSON RDS keeps) and databaseEndpoint become
`postgresql://user:pass@host:5432/db?sslmode=require`.

Values go only into the returned dict, which the deployer writes to the host's 0600 env file:
never into a message, a log line, `--json` or the release history. Errors name the entry, the
secret and the IAM action AWS refused, never a value.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote

from ..errors import ConfigError, InfraError

SCHEMES = ("aws-sm", "ssm")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Secrets Manager: a name (letters, digits, /_+=.@-) or a full ARN
_SM_ID_RE = re.compile(r"^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@!-]+"
                       r"|[A-Za-z0-9/_+=.@!-]{1,512})$")
# SSM: a name or /path (letters, digits, _.-/), or a full ARN
_SSM_ID_RE = re.compile(r"^(arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:parameter/[A-Za-z0-9_./-]+|[A-Za-z0-9_./-]{1,2048})$")
_REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")
_BAD_CREDENTIALS = ("UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
                    "ExpiredTokenException", "ExpiredToken")


@dataclass(frozen=True)
class SecretRef:
    """One entry of deploy.secrets: where NAME's value comes from."""

    name: str  # the environment variable the app gets
    source: str = "env"  # "env" | "aws-sm" | "ssm"
    id: str = ""  # secret name or ARN, parameter path or ARN
    json_key: str | None = None  # aws-sm: one key of the secret's JSON

    @property
    def action(self) -> str:
        """The IAM action reading it takes."""
        return {"aws-sm": "secretsmanager:GetSecretValue", "ssm": "ssm:GetParameter"}.get(self.source, "")

    def describe(self) -> str:
        """Where it comes from, for messages (never the value)."""
        if self.source == "env":
            return f"{self.name} (environment)"
        return f"{self.name}={self.source}:{self.id}" + (f"#{self.json_key}" if self.json_key else "")

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "id": self.id or None, "json_key": self.json_key}


def parse_entry(entry: str) -> SecretRef:
    """`NAME`, `NAME=aws-sm:id[#key]` or `NAME=ssm:/path` -> SecretRef (pure; raises ConfigError)."""
    name, sep, ref = entry.partition("=")
    name = name.strip()
    if not _ENV_NAME_RE.match(name):
        raise ConfigError(f"deploy.secrets: {entry!r}: {name!r} is not an environment variable name",
                          'list names ("API_KEY") or NAME=aws-sm:<secret> / NAME=ssm:/path')
    if not sep:
        return SecretRef(name)
    scheme, colon, rest = ref.strip().partition(":")
    if not colon or scheme not in SCHEMES:
        raise ConfigError(f"deploy.secrets: {entry!r}: {scheme or ref!r} is not a secret source",
                          f'use {name}=aws-sm:<arn-or-name>[#json-key] or {name}=ssm:/path/to/param '
                          f'(or just "{name}" for an environment variable)')
    if scheme == "aws-sm":
        ident, hash_, key = rest.partition("#")
        if hash_ and not key:
            raise ConfigError(f"deploy.secrets: {entry!r}: nothing after #", f"name the JSON key, e.g. {name}=aws-sm:{ident}#password")
        if not _SM_ID_RE.match(ident):
            raise ConfigError(f"deploy.secrets: {entry!r}: {ident!r} is not a Secrets Manager secret name or ARN",
                              f"e.g. {name}=aws-sm:prod/app/api-key or {name}=aws-sm:arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME")
        return SecretRef(name, "aws-sm", ident, key or None)
    if "#" in rest or not _SSM_ID_RE.match(rest):
        raise ConfigError(f"deploy.secrets: {entry!r}: {rest!r} is not an SSM parameter name",
                          f"e.g. {name}=ssm:/prod/app/api-key (a SecureString; no #key)")
    return SecretRef(name, "ssm", rest)


def parse_entries(entries: Iterable[str]) -> tuple[SecretRef, ...]:
    """Every entry, each NAME once."""
    refs = tuple(parse_entry(e) for e in entries)
    seen: set[str] = set()
    for r in refs:
        if r.name in seen:
            raise ConfigError(f"deploy.secrets: {r.name} is listed twice", "keep one entry per name")
        seen.add(r.name)
    return refs


def _region_of_arn(ident: str) -> str | None:
    parts = ident.split(":")
    return parts[3] if ident.startswith("arn:") and len(parts) > 4 and parts[3] else None


def region_for(ref_id: str, environ: Mapping[str, str], stack_region: Callable[[], str | None]) -> str:
    """The ARN's region, else AWS_REGION / AWS_DEFAULT_REGION, else the stack's region."""
    region = _region_of_arn(ref_id) or next((environ[k] for k in _REGION_ENV if environ.get(k)), None)
    region = region or stack_region()
    if not region:
        raise ConfigError(f"deploy.secrets: no AWS region for {ref_id}",
                          "export AWS_REGION=eu-west-1, use the secret's full ARN, or set deploy.stack")
    return region


# --- reading: one function per source, AWS's errors mapped to the action refused ----------------

def error_of(response: Mapping[str, Any]) -> tuple[str, str]:
    """(code, message) of a botocore error response. A 403 is a denial whatever its code says:
    some endpoints (moto's IAM enforcement among them) answer a JSON API's denial with an XML
    body, which botocore leaves as Code "403" and the XML as the message."""
    err = response.get("Error", {}) or {}
    code, message = str(err.get("Code", "?")), str(err.get("Message", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if message.lstrip().startswith("<"):
        inner_code = re.search(r"<Code>([^<]*)</Code>", message)
        inner = re.search(r"<Message>([^<]*)</Message>", message)
        code = inner_code.group(1) if inner_code else code
        message = inner.group(1) if inner else message
    if (status == 403 or code == "403") and code not in _DENIED:
        code = "AccessDenied"
    return code, message


def _refused(ref: SecretRef, where: str, code: str, message: str) -> InfraError:
    """AWS said no: name the entry, the secret, the action and what to change (never a value)."""
    action = ref.action
    if "kms" in message.lower() or code in ("DecryptionFailure", "KMSAccessDeniedException"):
        action = "kms:Decrypt"
    if code in ("ResourceNotFoundException", "ParameterNotFound"):
        kind = "secret" if ref.source == "aws-sm" else "parameter"
        create = (f"aws secretsmanager create-secret --name {ref.id} --secret-string ... --region {where}"
                  if ref.source == "aws-sm" else
                  f"aws ssm put-parameter --name {ref.id} --type SecureString --value ... --region {where}")
        return InfraError(f"deploy.secrets: {ref.describe()}: the {kind} {ref.id} does not exist in {where} "
                          f"({action}: {code})",
                          f"create it ({create}), or fix the reference in ferry.toml")
    if code in _BAD_CREDENTIALS or "security token" in message.lower():
        return InfraError(f"deploy.secrets: {ref.describe()}: AWS did not accept the credentials to call {action} "
                          f"on {ref.id} in {where} ({code}: {message})",
                          "refresh them (`aws sts get-caller-identity` must work), e.g. aws sso login or the "
                          "pipeline's role")
    if code in _DENIED or code in ("DecryptionFailure", "KMSAccessDeniedException"):
        if action == "kms:Decrypt":
            fix = (f"allow kms:Decrypt on the key that encrypts {ref.id} for the identity running ferry "
                   f"(with the condition kms:ViaService = {'secretsmanager' if ref.source == 'aws-sm' else 'ssm'}"
                   f".{where}.amazonaws.com)")
        else:
            resource = ref.id if ref.id.startswith("arn:") else f"the {'secret' if ref.source == 'aws-sm' else 'parameter'}'s ARN"
            fix = (f"allow {action} on {resource} for the identity running ferry (`aws sts get-caller-identity` "
                   "names it); for the stack's database secret, attach the ciDeployPolicy output")
        return InfraError(f"deploy.secrets: {ref.describe()}: AWS refused {action} on {ref.id} in {where} "
                          f"({code}: {message})", fix)
    return InfraError(f"deploy.secrets: {ref.describe()}: {ref.action} on {ref.id} in {where} failed ({code}: {message})",
                      "check the reference and the region; retry if AWS was throttling")


def _call(ref: SecretRef, region: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return fn(**kwargs)
    except NoCredentialsError:
        raise InfraError(f"deploy.secrets: {ref.describe()}: no AWS credentials to read it",
                         "export AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (CI: the pipeline's role)") from None
    except ClientError as e:
        code, message = error_of(e.response)
        raise _refused(ref, region, code, message) from None
    except BotoCoreError as e:
        raise InfraError(f"deploy.secrets: {ref.describe()}: {e}",
                         "check the network and the region (FERRY_AWS_ENDPOINT_URL if set)") from None


def _json_value(ref: SecretRef, text: str) -> str:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise InfraError(f"deploy.secrets: {ref.describe()}: the secret is not a JSON object, so it has no key {ref.json_key!r}",
                         f"drop #{ref.json_key} to use the whole value, or store a JSON object")
    if ref.json_key not in doc:
        raise InfraError(f"deploy.secrets: {ref.describe()}: the secret's JSON has no key {ref.json_key!r} "
                         f"(its keys: {', '.join(sorted(map(str, doc))) or 'none'})", "name one of its keys after #")
    value = doc[ref.json_key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InfraError(f"deploy.secrets: {ref.describe()}: the value under {ref.json_key!r} is not a string or number",
                         "point #key at a string")
    return str(value)


def read_secrets_manager(ref: SecretRef, client: Any, region: str) -> str:
    r = _call(ref, region, client.get_secret_value, SecretId=ref.id)
    text = r.get("SecretString")
    if text is None:
        raw = r.get("SecretBinary") or b""
        try:
            text = raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)
        except UnicodeDecodeError:
            raise InfraError(f"deploy.secrets: {ref.describe()}: the secret is binary, not text",
                             "store it as a SecretString (an env var holds text)") from None
    return _json_value(ref, text) if ref.json_key else text


def read_parameter(ref: SecretRef, client: Any, region: str) -> str:
    r = _call(ref, region, client.get_parameter, Name=ref.id, WithDecryption=True)
    p = r["Parameter"]
    if p.get("Type") != "SecureString":
        raise InfraError(f"deploy.secrets: {ref.describe()}: the parameter is a {p.get('Type')}, stored unencrypted",
                         f"store secrets as a SecureString: aws ssm put-parameter --name {ref.id} --type SecureString "
                         "--overwrite --value ...")
    return p["Value"]


def _checked(ref: SecretRef, value: str) -> str:
    """An env file holds one line per variable."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise InfraError(f"deploy.secrets: {ref.describe()}: the value has a line break, which docker's env file cannot hold",
                         "store it on one line (e.g. base64) and decode it in the app")
    return value


ClientFactory = Callable[[str, str], Any]


def _default_clients() -> ClientFactory:
    from . import session

    cache: dict[tuple[str, str], Any] = {}

    def make(service: str, region: str) -> Any:
        if (service, region) not in cache:
            cache[(service, region)] = session.client(service, region)
        return cache[(service, region)]
    return make


def resolve(refs: Iterable[SecretRef], *, environ: Mapping[str, str] | None = None,
            stack_region: Callable[[], str | None] = lambda: None,
            clients: ClientFactory | None = None) -> dict[str, str]:
    """The values of the AWS references among `refs` (env entries are skipped), NAME -> value."""
    environ = os.environ if environ is None else environ
    clients = clients or _default_clients()
    out: dict[str, str] = {}
    for ref in refs:
        if ref.source == "env":
            continue
        region = region_for(ref.id, environ, stack_region)
        if ref.source == "aws-sm":
            value = read_secrets_manager(ref, clients("secretsmanager", region), region)
        else:
            value = read_parameter(ref, clients("ssm", region), region)
        out[ref.name] = _checked(ref, value)
    return out


# --- RDS: the app's url_env from the stack's database ------------------------------------------

@dataclass(frozen=True)
class RdsConnection:
    host: str
    port: int
    user: str
    password: str
    name: str

    @property
    def url(self) -> str:
        """postgresql://user:pass@host:port/name?sslmode=require (user and password URL-quoted:
        RDS's generated passwords contain characters a URL reserves). The instance forces SSL."""
        return (f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}"
                f"/{quote(self.name, safe='')}?sslmode=require")

    def __repr__(self) -> str:  # a stray print never shows the password
        return f"RdsConnection(host={self.host!r}, port={self.port}, user={self.user!r}, name={self.name!r})"


@dataclass(frozen=True)
class StackDatabase:
    """The stack's database outputs (infra/__main__.py exports them with `database = true`)."""

    endpoint: str | None = None  # host name, no port
    port: int = 5432
    name: str | None = None
    secret_arn: str | None = None  # Secrets Manager: {"username", "password"}, written by RDS


def stack_database(outputs: Any) -> StackDatabase:
    """databaseEndpoint, databasePort, databaseName, databaseSecretArn of the stack outputs
    (`outputs`: ferry.aws.stack.StackOutputs; read from its raw JSON). Pure."""
    raw = getattr(outputs, "raw", None) or {}

    def text(key: str) -> str | None:
        v = raw.get(key)
        return v if isinstance(v, str) and v else None
    port = raw.get("databasePort")
    return StackDatabase(text("databaseEndpoint"), port if isinstance(port, int) and not isinstance(port, bool) else 5432,
                         text("databaseName"), text("databaseSecretArn"))


def rds_connection(accessory: str, outputs: Any, client: Any, database: str | None = None) -> RdsConnection:
    """Read the stack's database secret (`outputs`: ferry.aws.stack.StackOutputs)."""
    where = f"accessories.{accessory}"
    db = stack_database(outputs)
    if not db.endpoint or not db.secret_arn:
        raise InfraError(f"{where}: kind \"rds\", but the stack outputs ({outputs.source}) have no database",
                         "pulumi config set database true --stack NAME && pulumi up (then export the outputs again "
                         "if deploy.stack_outputs is used)")
    arn = db.secret_arn
    ref = SecretRef(f"{where}.url_env", "aws-sm", arn)
    region = _region_of_arn(arn) or outputs.region
    r = _call(ref, region, client.get_secret_value, SecretId=arn)
    try:
        doc = json.loads(r.get("SecretString") or "")
        user, password = doc["username"], doc["password"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InfraError(f"{where}: the database secret {arn} is not the {{\"username\", \"password\"}} JSON RDS writes",
                         "is databaseSecretArn the instance's master user secret? run `pulumi up` again") from None
    return RdsConnection(db.endpoint, db.port, str(user), str(password), database or db.name or "postgres")


# --- the deploy path's one call -----------------------------------------------------------------

def aws_values(cfg: Any, *, environ: Mapping[str, str] | None = None, clients: ClientFactory | None = None,
               read_outputs: Callable[[Any], Any] | None = None) -> dict[str, str]:
    """Everything ferry.toml asks AWS for, NAME -> value: deploy.secrets references, then each
    kind "rds" accessory's url_env. Nothing is asked (no client made, no stack read) when the
    config has neither."""
    refs = [r for r in parse_entries(cfg.deploy.secrets) if r.source != "env"]
    rds = {n: a for n, a in cfg.accessories.items() if a.kind == "rds" and a.url_env}
    if not refs and not rds:
        return {}
    clients = clients or _default_clients()
    outputs_cache: list[Any] = []

    def outputs() -> Any:
        if not outputs_cache:
            if read_outputs is not None:
                outputs_cache.append(read_outputs(cfg))
            else:
                from . import stack
                outputs_cache.append(stack.read_outputs(cfg))
        return outputs_cache[0]

    def stack_region() -> str | None:
        return outputs().region if (cfg.deploy.stack or cfg.deploy.stack_outputs) else None

    values = resolve(refs, environ=environ, stack_region=stack_region, clients=clients)
    for name, a in sorted(rds.items()):
        out = outputs()
        region = _region_of_arn(stack_database(out).secret_arn or "") or out.region
        values[a.url_env] = rds_connection(name, out, clients("secretsmanager", region), a.database).url
    return values
