"""``ferry build``: the thin command over ``pipeline.build_and_publish``."""

from __future__ import annotations

import click

from ..cli import Context, command, emit
from ..errors import ConfigError


def register(main: click.Group) -> None:
    @command(main, "build", help="""Build the app image without Docker; optionally publish it.

    \b
    Layers: the base image's, then the dependencies (wheels for each platform),
    then the source. Reproducible: the same source gives the same digest anywhere.

    \b
    Examples:
      ferry build                          # build; print the digest (nothing published)
      ferry build --push                   # push to image.repository, tag latest
      ferry build --push --tag v1 --json   # {"image": "REPO@sha256:...", "layers": [...], ...}
      ferry build --to-docker              # load into the Docker daemon
      ferry build --to-tar out.tar --platform linux/arm64
      ferry build --to-oci ./layout --sbom sbom.spdx.json
    """)
    @click.option("--push", is_flag=True, help="Push to image.repository (OCI distribution API).")
    @click.option("--to-docker", is_flag=True, help="Load into the Docker daemon (DOCKER_HOST or deploy.docker_host).")
    @click.option("--to-tar", "to_tar", metavar="PATH", help="Write a docker-archive / OCI tar.")
    @click.option("--to-oci", "to_oci", metavar="DIR", help="Write (or add to) an OCI image layout directory.")
    @click.option("--tag", "tags", multiple=True, metavar="T", help="Tag (repeatable; default latest).")
    @click.option("--platform", "platform", metavar="P,...", help="Platforms, e.g. linux/amd64,linux/arm64 "
                                                                  "(default: image.platforms).")
    @click.option("--sbom", "sbom_path", metavar="PATH", help="Also write the SBOM to PATH.")
    @click.option("--sbom-format", type=click.Choice(["spdx", "cyclonedx"]), default="spdx", show_default=True)
    @click.option("--version", "version", metavar="V", help="org.opencontainers.image.version "
                                                            "(default: git describe).")
    def build_cmd(ctx: Context, push: bool, to_docker: bool, to_tar: str | None, to_oci: str | None,
                  tags: tuple[str, ...], platform: str | None, sbom_path: str | None, sbom_format: str,
                  version: str | None) -> None:
        chosen = [name for name, on in (("--push", push), ("--to-docker", to_docker), ("--to-tar", to_tar),
                                        ("--to-oci", to_oci)) if on]
        if len(chosen) > 1:
            raise ConfigError(f"choose one target, not {' and '.join(chosen)}",
                              "run ferry build once per target")
        target, path = "none", None
        if push:
            target = "registry"
        elif to_docker:
            target = "docker"
        elif to_tar:
            target, path = "tar", to_tar
        elif to_oci:
            target, path = "oci", to_oci
        platforms = [p.strip() for p in platform.split(",") if p.strip()] if platform else None
        from .pipeline import build_and_publish, summary

        cfg = ctx.config()
        doc = build_and_publish(cfg, target=target, path=path, tags=list(tags), platforms=platforms,
                                sbom_path=sbom_path, sbom_format=sbom_format, version=version,
                                progress=ctx.progress)
        emit(ctx, doc, summary)


def build_and_push(cfg, progress=None, version: str | None = None, tags: list[str] | None = None) -> dict:
    """Build and push the app image (what ``ferry release`` runs): the ``ferry build --push
    --json`` document, whose ``image`` is REPO@sha256:... . Tags: ``latest`` (the tag the next
    build reads its dependency layer back from) and the version when it is a valid tag."""
    import re

    from ..progress import NULL
    from .pipeline import build_and_publish

    if tags is None:
        tags = ["latest"]
        if version and re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$", version) and version != "latest":
            tags.append(version)
    return build_and_publish(cfg, target="registry", tags=tags, version=version, progress=progress or NULL)
