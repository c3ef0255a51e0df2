"""The stack's images, built by ferry from Debian's binaries: reproducible to the byte, and
each one runs on the local target's Docker engine as nobody."""

from __future__ import annotations

import json
import subprocess

import pytest

from ferry.monitoring import images

pytestmark = pytest.mark.integration


def test_two_builds_from_empty_caches_give_the_same_digests(tmp_path):
    a = images.build(cache_dir=tmp_path / "a")
    b = images.build(cache_dir=tmp_path / "b")
    assert [x.image.digest for x in a] == [x.image.digest for x in b]
    assert [x.component.name for x in a] == ["prometheus", "alertmanager", "node-exporter", "nginx-exporter",
                                             "blackbox-exporter"]
    # the runtime layer (glibc, CA set, passwd) is one blob shared by every image
    assert len({x.image.layers[0].digest for x in a}) == 1


@pytest.mark.parametrize("component, argv, expect", [
    ("prometheus", ["--version"], "prometheus, version 2.42.0"),
    ("prometheus", ["--entrypoint", "/usr/bin/promtool", "IMAGE", "--version"], "promtool, version 2.42.0"),
    ("alertmanager", ["--version"], "alertmanager, version 0.25.0"),
    ("alertmanager", ["--entrypoint", "/usr/bin/amtool", "IMAGE", "--version"], "amtool, version 0.25.0"),
    ("node_exporter", ["--version"], "node_exporter, version 1.5.0"),
    ("nginx_exporter", ["-version"], "NGINX Prometheus Exporter version=0.11.0"),
    ("blackbox_exporter", ["--version"], "blackbox_exporter, version 0.23.0"),
])
def test_each_pushed_image_runs_its_program(monitoring_images, docker_cli, component, argv, expect):
    ref = monitoring_images[component]
    run = [*docker_cli, "run", "--rm", "--network", "none", "--read-only"]
    if "IMAGE" in argv:
        run += [a if a != "IMAGE" else ref for a in argv]
    else:
        run += [ref, *argv]
    r = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert expect in r.stdout + r.stderr


def test_images_run_as_nobody_with_debians_package_recorded(monitoring_images, docker_cli):
    for component, ref in monitoring_images.items():
        subprocess.run([*docker_cli, "pull", "-q", ref], capture_output=True, timeout=120)
        r = subprocess.run([*docker_cli, "image", "inspect", ref], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        cfg = json.loads(r.stdout)[0]["Config"]
        assert cfg["User"] == "65534:65534", component
        assert cfg["Labels"]["dev.ferry.debian.package"].split("=")[0].startswith("prometheus")


def test_alertmanager_image_carries_debians_notification_templates(monitoring_images, docker_cli):
    ref = monitoring_images["alertmanager"]
    r = subprocess.run([*docker_cli, "run", "--rm", "--network", "none", "--entrypoint", "/usr/bin/amtool", ref,
                        "check-config", "/usr/share/prometheus/alertmanager/default.tmpl"],
                       capture_output=True, text=True, timeout=120)
    # not a config file, but amtool reading it at all proves the file is in the image
    assert "no such file" not in (r.stdout + r.stderr).lower()
