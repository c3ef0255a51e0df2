"""Where `ferry monitoring images --push` puts each image: the same names the Pulumi program
creates as ECR repositories (infra/naming.monitoring_repositories)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ferry.monitoring import images


def test_repository_names_are_prefix_slash_component_plus_grafanas_mirror():
    assert images.repository_names() == ("ferry/prometheus", "ferry/alertmanager", "ferry/node-exporter",
                                         "ferry/nginx-exporter", "ferry/blackbox-exporter", "ferry/grafana")
    assert images.repository_names("hello-dev")[0] == "hello-dev/prometheus"
    assert images.repository_name("grafana", "") == "grafana"
    assert images.repository_name("grafana", "team/shop/") == "team/shop/grafana"


def test_push_writes_to_exactly_the_named_repositories(monkeypatch):
    import ferry.images.auth as auth
    import ferry.images.publish as publish
    import ferry.images.registry as registry

    pushed: list[tuple[str, list[str]]] = []

    class Client:
        def __init__(self, host, **kw):
            self.host = host

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Publisher:
        def __init__(self, client, repository, **kw):
            self.repository = repository

        def publish(self, image, tags):
            pushed.append((self.repository, tags))
            return SimpleNamespace(digest="sha256:" + "ab" * 32, bytes_uploaded=0)

    monkeypatch.setattr(registry, "RegistryClient", Client)
    monkeypatch.setattr(publish, "RegistryPublisher", Publisher)
    monkeypatch.setattr(auth, "auth_for", lambda host, mode="auto": None)
    built = [images.Built(c, SimpleNamespace(), "1.0", "1.0-1") for c in images.COMPONENTS]
    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    out = images.push(built, ecr, "hello-dev")
    assert [r for r, _ in pushed] == [n for n in images.repository_names("hello-dev") if not n.endswith("/grafana")]
    assert out[0]["reference"] == f"{ecr}/hello-dev/prometheus@sha256:{'ab' * 32}"


@pytest.mark.parametrize("name", [c.name for c in images.COMPONENTS] + list(images.MIRRORED))
def test_every_name_is_a_valid_ecr_repository_component(name):
    import re

    assert re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", name)
