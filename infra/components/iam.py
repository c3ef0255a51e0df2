"""IAM: the hosts' instance role (exactly what a host needs) and the CI pipeline's policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws

from .. import policies


@dataclass(frozen=True)
class HostRoleArgs:
    name: str
    tags: dict[str, str]
    repository_arn: pulumi.Input[str]
    partition: str = "aws"
    monitoring_repository_arns: Sequence[pulumi.Input[str]] = field(default_factory=tuple)
    ssm: bool = False
    cloudwatch_log_group_arn: pulumi.Input[str] | None = None
    database_secret_arn: pulumi.Input[str] | None = None  # with database = true: the one secret it may read


def _documents(repository_arn, monitoring_arns, secret_arn, make) -> pulumi.Output[str]:
    """One policy document from outputs: the repository, the monitoring repositories, the secret."""
    secret = [secret_arn] if secret_arn is not None else []
    return pulumi.Output.all(repository_arn, *secret, *monitoring_arns).apply(
        lambda a: policies.to_json(make(a[0], a[1 + len(secret):], a[1:1 + len(secret)])))


class HostRole(pulumi.ComponentResource):
    role: aws.iam.Role
    profile: aws.iam.InstanceProfile

    def __init__(self, name: str, args: HostRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:HostRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(f"{name}-host", name=f"{args.name}-host",
                                 assume_role_policy=policies.to_json(policies.assume_role("ec2.amazonaws.com")),
                                 tags=args.tags, opts=child)
        aws.iam.RolePolicy(f"{name}-ecr-pull", role=self.role.id,
                           policy=_documents(args.repository_arn, args.monitoring_repository_arns,
                                             args.database_secret_arn, policies.instance_policy),
                           opts=child)
        if args.ssm:
            # AWS's own policy for Session Manager: it changes with the agent, so it is attached
            # rather than copied.
            aws.iam.RolePolicyAttachment(f"{name}-ssm-core", role=self.role.name,
                                         policy_arn=policies.managed_policy_arn(args.partition,
                                                                                policies.SSM_CORE_POLICY),
                                         opts=child)
        if args.cloudwatch_log_group_arn is not None:
            aws.iam.RolePolicy(f"{name}-cloudwatch-agent", role=self.role.id,
                               policy=pulumi.Output.from_input(args.cloudwatch_log_group_arn).apply(
                                   lambda arn: policies.to_json(policies.cloudwatch_agent_policy(arn))), opts=child)
        self.profile = aws.iam.InstanceProfile(f"{name}-host", name=f"{args.name}-host", role=self.role.name,
                                               tags=args.tags, opts=child)
        self.register_outputs({"role": self.role.arn})


@dataclass(frozen=True)
class CiPoliciesArgs:
    name: str
    tags: dict[str, str]
    repository_arn: pulumi.Input[str]
    target_group_arns: Sequence[pulumi.Input[str]] = field(default_factory=tuple)
    monitoring_repository_arns: Sequence[pulumi.Input[str]] = field(default_factory=tuple)
    database_secret_arn: pulumi.Input[str] | None = None


class CiPolicies(pulumi.ComponentResource):
    """Managed policies for the pipeline's role (attach them there), and their documents as
    outputs for pipelines whose role lives elsewhere."""

    def __init__(self, name: str, args: CiPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:CiPolicies", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.deploy_document = _documents(args.repository_arn, args.monitoring_repository_arns,
                                          args.database_secret_arn, policies.ci_deploy_policy)
        self.deploy_policy = aws.iam.Policy(f"{name}-deploy", name=f"{args.name}-ci-deploy",
                                            description=f"push {args.name}'s images to its ECR repositories",
                                            policy=self.deploy_document, tags=args.tags, opts=child)
        self.release_document = None
        self.release_policy = None
        if args.target_group_arns:
            self.release_document = pulumi.Output.all(*args.target_group_arns).apply(
                lambda arns: policies.to_json(policies.lb_release_policy(arns)))
            self.release_policy = aws.iam.Policy(
                f"{name}-release", name=f"{args.name}-ci-release",
                description=f"move {args.name}'s hosts out of and into the load balancer during a release",
                policy=self.release_document, tags=args.tags, opts=child)
        self.register_outputs({"deploy_policy": self.deploy_policy.arn})
