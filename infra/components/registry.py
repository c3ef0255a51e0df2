"""Registry: the app's ECR repository: scanned on push, immutable tags, encrypted, pruned."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class RegistryArgs:
    name: str  # the repository name
    tags: dict[str, str]
    keep_images: int = 30


def lifecycle_policy(keep_images: int) -> dict:
    """Keep the newest N images (releases to roll back to), expire the rest."""
    return {"rules": [{
        "rulePriority": 1,
        "description": f"keep the last {keep_images} images",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep_images},
        "action": {"type": "expire"},
    }]}


def registry_host(repository_url: str) -> str:
    """`ACCOUNT.dkr.ecr.REGION.amazonaws.com/name` -> the registry part."""
    return repository_url.split("/", 1)[0]


class Registry(pulumi.ComponentResource):
    repository: aws.ecr.Repository

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ferry:infra:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repository = aws.ecr.Repository(
            f"{name}-repository",
            name=args.name,
            image_tag_mutability="IMMUTABLE",  # a tag names one image forever (FSBP ECR.2)
            image_scanning_configuration={"scan_on_push": True},  # FSBP ECR.1
            encryption_configurations=[{"encryption_type": "KMS"}],  # AWS-managed KMS key
            force_delete=False,  # `pulumi destroy` refuses while images remain: releases are not lost by accident
            tags=args.tags,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(f"{name}-lifecycle", repository=self.repository.name,
                                policy=json.dumps(lifecycle_policy(args.keep_images), sort_keys=True),
                                opts=child)  # FSBP ECR.3
        self.url = self.repository.repository_url
        self.arn = self.repository.arn
        self.register_outputs({"url": self.url, "arn": self.arn})
