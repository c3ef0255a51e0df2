"""IAM policy documents as plain dicts: least privilege, checked exactly by the unit tests.

No statement grants a wildcard action. `Resource: "*"` appears only for the few actions AWS
does not scope to a resource (ECR's GetAuthorizationToken, ELB's DescribeTargetHealth, the
CloudWatch agent's describe calls and PutMetricData, which is pinned to its namespace instead).
"""

from __future__ import annotations

import json
from typing import Iterable

VERSION = "2012-10-17"

# Pull an image by digest: what `docker pull` does after the credential helper logs in.
ECR_PULL_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
)
# Push an image: AWS's own minimal push set (BatchGetImage lets the pusher HEAD a manifest
# it is about to overwrite-check; tags are immutable so it cannot replace one).
ECR_PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
)
LB_RELEASE_ACTIONS = (
    "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:RegisterTargets",
)
SSM_CORE_POLICY = "AmazonSSMManagedInstanceCore"
# Read the database's master secret (RDS writes {"username", "password"} there). No kms:Decrypt:
# RDS encrypts it with the AWS-managed key aws/secretsmanager, whose key policy already lets
# any principal of the account decrypt through Secrets Manager (kms:ViaService), and only that.
SECRET_READ_ACTIONS = ("secretsmanager:GetSecretValue",)


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)


def _doc(*statements: dict) -> dict:
    return {"Version": VERSION, "Statement": list(statements)}


def assume_role(service: str) -> dict:
    """Trust policy: only this AWS service may take the role."""
    return _doc({
        "Sid": "AssumedBy" + service.split(".")[0].capitalize(),
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    })


def ecr_login_statement() -> dict:
    # GetAuthorizationToken has no resource-level permission: AWS requires "*" here. The token
    # it returns grants only what the other statements allow.
    return {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"}


def _monitoring_statements(monitoring_arns: Iterable[str], *, push: bool) -> list[dict]:
    """Pull (and push) on the monitoring stack's repositories (`ferry monitoring images`), named
    one by one: no wildcard in the resource either."""
    arns = sorted(set(monitoring_arns))
    if not arns:
        return []
    out = []
    if push:
        out.append({"Sid": "PushMonitoringImages", "Effect": "Allow", "Action": list(ECR_PUSH_ACTIONS),
                    "Resource": arns})
    out.append({"Sid": "PullMonitoringImages", "Effect": "Allow", "Action": list(ECR_PULL_ACTIONS),
                "Resource": arns})
    return out


def _secret_statements(secret_arns: Iterable[str]) -> list[dict]:
    """Read exactly these secrets (the database's), named by ARN: no wildcard."""
    arns = sorted(set(a for a in secret_arns if a))
    if not arns:
        return []
    return [{"Sid": "ReadDatabaseSecret", "Effect": "Allow", "Action": list(SECRET_READ_ACTIONS), "Resource": arns}]


def instance_policy(repository_arn: str, monitoring_arns: Iterable[str] = (), secret_arns: Iterable[str] = ()) -> dict:
    """What the host's role may do: pull this app's images and the monitoring stack's, read the
    database's secret (with database = true), nothing else."""
    return _doc(
        ecr_login_statement(),
        {"Sid": "PullThisRepository", "Effect": "Allow", "Action": list(ECR_PULL_ACTIONS),
         "Resource": repository_arn},
        *_monitoring_statements(monitoring_arns, push=False),
        *_secret_statements(secret_arns),
    )


def cloudwatch_agent_policy(log_group_arn: str) -> dict:
    """The CloudWatch agent: metrics in its own namespace, logs into this stack's group only."""
    return _doc(
        {"Sid": "AgentMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": "CWAgent"}}},
        {"Sid": "AgentDimensions", "Effect": "Allow", "Action": ["ec2:DescribeTags", "ec2:DescribeVolumes"],
         "Resource": "*"},
        {"Sid": "AgentLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
         "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"]},
    )


def flow_logs_policy(log_group_arn: str) -> dict:
    """VPC flow logs delivery into this stack's log group."""
    return _doc({
        "Sid": "DeliverFlowLogs", "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
        "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"],
    })


def ci_deploy_policy(repository_arn: str, monitoring_arns: Iterable[str] = (), secret_arns: Iterable[str] = ()) -> dict:
    """For the CI pipeline's role: push to and pull from this repository, nothing else.

    Pull too, because (1) ferry's builder reads the previous image's manifest and config blob
    from the repository ("the registry as the cache"), and a blob is read through
    GetDownloadUrlForLayer; (2) `ferry release` logs the host's docker in with this identity's
    ECR token for the pull (deploy/release.registry_credentials), so what the host may pull is
    what this policy allows, not the host's instance role.

    With the monitoring repositories: push (`ferry monitoring images --push`) and pull
    (`ferry monitoring up` logs the host's docker in with this identity's token too).

    With the database: read its secret, because `ferry release` builds the app's DATABASE_URL
    from it at deploy time (ferry/aws/secrets.py)."""
    return _doc(
        ecr_login_statement(),
        {"Sid": "PushThisRepository", "Effect": "Allow", "Action": list(ECR_PUSH_ACTIONS),
         "Resource": repository_arn},
        {"Sid": "PullThisRepository", "Effect": "Allow", "Action": list(ECR_PULL_ACTIONS),
         "Resource": repository_arn},
        *_monitoring_statements(monitoring_arns, push=True),
        *_secret_statements(secret_arns),
    )


def lb_release_policy(target_group_arns: Iterable[str]) -> dict:
    """For whoever runs a multi-host release: take each host out of and back into its target
    group, and watch its health."""
    arns = sorted(set(target_group_arns))
    return _doc(
        {"Sid": "MoveTargets", "Effect": "Allow", "Action": list(LB_RELEASE_ACTIONS), "Resource": arns},
        # Describe* calls of ELB have no resource-level permissions.
        {"Sid": "WatchTargetHealth", "Effect": "Allow",
         "Action": ["elasticloadbalancing:DescribeTargetHealth"], "Resource": "*"},
    )


def managed_policy_arn(partition: str, name: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{name}"


def actions(doc: dict) -> list[str]:
    """Every action a document allows (for checks and for the README)."""
    out: list[str] = []
    for st in doc["Statement"]:
        a = st["Action"]
        out.extend([a] if isinstance(a, str) else a)
    return out
