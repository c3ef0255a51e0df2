"""The builder's pure parts (config, annotations, entrypoint checks) exactly, and its runner
with an in-memory base image and a fake wheel installer (no network)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import zlib
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import deps as deps_mod
from ferry.images.builder import BuildSpec, build, check_entrypoint, image_config
from ferry.images.cache import Cache
from ferry.images.steps import INVENTORY_PREFIX
from ferry.images.deps import Distribution
from ferry.images.layers import Entry, gzip_bytes, tar_bytes
from ferry.images.oci import (DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_LAYER_GZIP, Blob, Image, ImageIndex, Platform,
                              canonical_json, sha256)

BASE_TAR = tar_bytes([Entry("usr/bin/python3", data=b"#!fake\n", mode=0o755)])


def base_image(platform: Platform, media_type: str = DOCKER_LAYER_GZIP) -> Image:
    cfg = {"architecture": platform.architecture, "os": "linux",
           "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.11.2"], "Cmd": ["python3"],
                      "Labels": {"base.label": "kept", "org.opencontainers.image.vendor": "the base's"},
                      "User": "root"},
           "rootfs": {"type": "layers", "diff_ids": [sha256(BASE_TAR)]},
           "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "debian packages"},
                       {"created": "2024-01-01T00:00:00Z", "created_by": "ENV", "empty_layer": True}]}
    layer = gzip_bytes(BASE_TAR)
    return Image(Blob.from_bytes(canonical_json(cfg), OCI_CONFIG),
                 (Blob(sha256(layer), len(layer), media_type, source="127.0.0.1:5000/ferry/python"),), platform)


SPEC = BuildSpec(app="hello", repository="127.0.0.1:5000/hello", base="127.0.0.1:5000/ferry/python:3.11",
                 source=Path("/src"), entrypoint=("python3", "-m", "hello"), port=8000,
                 revision="abc123", version="v1.2.3", env={"GREETING": "hi"}, labels={"team": "web"})


def ferry_layers(deps: bool = True) -> list:
    """A dependency layer as DepsStep returns it and a source layer, known by digest only."""
    from ferry.images.deps import DepsSpec, Requirements
    from ferry.images.steps import DepsStep, Layer

    out = []
    if deps:
        dspec = DepsSpec(Requirements(Path("/src/requirements.txt"), "requirements", "h"), Platform(), "3.11")
        meta = {"packages": [Distribution("flask", "3.0.3", "BSD-3-Clause").to_json()], "scripts": ["flask"],
                "modules": ["flask"]}
        out.append(DepsStep(dspec).layer("k" * 64, Blob("sha256:dd", 10, OCI_LAYER_GZIP), "sha256:d1", "built", meta))
    out.append(Layer("source", "s", Blob("sha256:ss", 5, OCI_LAYER_GZIP), "sha256:s1", "built", "ferry: source (/app)"))
    return out


def test_image_config_is_exactly_what_the_spec_asks():
    base = base_image(Platform()).config_json()
    base["rootfs"]["diff_ids"] = ["sha256:b1"]
    cfg = image_config(base, SPEC, Platform(), ferry_layers(), "sha256:base")
    assert cfg == {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:01Z",
        "config": {
            "Entrypoint": ["python3", "-m", "hello"],
            "Env": ["PATH=/app/deps/bin:/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.11.2",
                    "PYTHONPATH=/app:/app/deps", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "PORT=8000",
                    "GREETING=hi"],
            "ExposedPorts": {"8000/tcp": {}},
            "Labels": {
                "base.label": "kept",
                "team": "web",
                "org.opencontainers.image.title": "hello",
                "org.opencontainers.image.created": "1970-01-01T00:00:01Z",
                "org.opencontainers.image.base.name": "127.0.0.1:5000/ferry/python:3.11",
                "org.opencontainers.image.base.digest": "sha256:base",
                "org.opencontainers.image.revision": "abc123",
                "org.opencontainers.image.version": "v1.2.3",
                "dev.ferry.port": "8000",
                "dev.ferry.health.path": "/healthz",
                "dev.ferry.deps.key": "k" * 64,
                "dev.ferry.deps.layer": "sha256:dd",
                "dev.ferry.deps.inventory": INVENTORY_PREFIX + base64.b64encode(zlib.compress(
                    b'{"modules":["flask"],"packages":[{"license":"BSD-3-Clause",'
                    b'"name":"flask","version":"3.0.3"}],"scripts":["flask"]}', 9)).decode(),
            },
            "User": "65532:65532",
            "WorkingDir": "/app",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:b1", "sha256:d1", "sha256:s1"]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "debian packages"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "ENV", "empty_layer": True},
            {"created": "1970-01-01T00:00:01Z", "created_by": f"ferry: dependencies (app/deps, key {'k' * 12})",
             "comment": "ferry"},
            {"created": "1970-01-01T00:00:01Z", "created_by": "ferry: source (/app)", "comment": "ferry"},
        ],
    }
    text = canonical_json(cfg).decode()
    assert "hostname" not in text.lower() and os.uname().nodename not in text


def test_console_scripts_interpreter_comes_from_config_then_base_label_then_env():
    from ferry.images.builder import interpreter
    assert interpreter("/opt/py/bin/python3", {"config": {"Labels": {"dev.ferry.python": "/usr/bin/python3"}}}) \
        == "/opt/py/bin/python3"
    assert interpreter("", {"config": {"Labels": {"dev.ferry.python": "/usr/local/bin/python3"}}}) == "/usr/local/bin/python3"
    # ferry's own Debian base has no /usr/bin/env
    assert interpreter("", {"config": {"Labels": {"dev.ferry.base.recipe": "sha256:x"}}}) == "/usr/bin/python3"
    assert interpreter("", {"config": {}}) == "/usr/bin/env python3"


def test_config_without_deps_and_with_a_base_lacking_history():
    base = {"architecture": "arm64", "os": "linux", "variant": "v8", "config": {},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:b1"]}}
    cfg = image_config(base, SPEC, Platform("linux", "arm64", "v8"), ferry_layers(deps=False))
    assert cfg["variant"] == "v8"
    assert cfg["config"]["Env"][:2] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                        "PYTHONPATH=/app"]
    assert [h["created_by"] for h in cfg["history"]] == ["base image layer", "ferry: source (/app)"]
    assert not any(k.startswith("dev.ferry.deps") for k in cfg["config"]["Labels"])


@pytest.mark.parametrize("entrypoint, files, message", [
    (("python3", "-m", "helo"), {"hello/__init__.py", "hello/__main__.py"},
     "image.entrypoint needs the module 'helo', but neither /src (no helo.py or helo/) nor the dependencies provide it"),
    (("python3", "-m", "hello"), {"hello/__init__.py"},
     "image.entrypoint runs `python -m hello`, but hello is a package without __main__.py in /src"),
    (("python3", "app.py"), {"main.py"}, "image.entrypoint runs app.py, which is not in /src"),
    (("python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "helo:app"), {"hello/__init__.py"},
     "image.entrypoint needs the module 'helo'"),
    (("gunicorn", "-b", "0.0.0.0:8000", "main:app"), {"main.py"}, "image.entrypoint runs gunicorn, but no dependency installs it"),
    (("/app/run.sh",), {"main.py"}, "image.entrypoint runs /app/run.sh, which is not in /src"),
])
def test_a_missing_entrypoint_module_names_it_and_the_fix(entrypoint, files, message):
    with pytest.raises(BuildError) as e:
        check_entrypoint(entrypoint, files, "/app", ("flask",), ("flask", "gunicorn"), "/src")
    assert str(e.value.message).startswith(message)
    assert e.value.hint


@pytest.mark.parametrize("entrypoint, files", [
    (("python3", "-m", "hello"), {"hello/__init__.py", "hello/__main__.py"}),
    (("python3", "-m", "hello"), {"hello.py"}),
    (("python3", "-u", "-m", "hello.web"), {"hello/__init__.py", "hello/web.py"}),
    (("python3", "-m", "gunicorn", "-c", "gunicorn.conf.py", "hello:app"), {"hello/__init__.py"}),
    (("gunicorn", "--bind", "127.0.0.1:8000", "hello:create_app()"), {"hello.py"}),
    (("python3", "-m", "http.server"), set()),
    (("python3", "/app/main.py"), {"main.py"}),
    (("sh", "-c", "exec python3 x.py"), set()),
])
def test_entrypoints_the_image_can_run_pass(entrypoint, files):
    check_entrypoint(entrypoint, files, "/app", ("gunicorn",), ("gunicorn",), "/src")


def test_unknown_dependency_side_only_checks_the_source():
    check_entrypoint(("python3", "-m", "uvicorn", "hello:app"), {"hello.py"}, "/app", None, None)
    check_entrypoint(("python3", "-m", "uvicorn", "maybe_a_dep:app"), {"hello.py"}, "/app", None, None)
    with pytest.raises(BuildError, match="package without __main__.py"):
        check_entrypoint(("python3", "-m", "hello"), {"hello/__init__.py"}, "/app", None, None)


# --- the runner, with a fake installer ----------------------------------------------------------

def fake_install(calls):
    def install(spec, target, work, uv_cache, environ=None, runner=None):
        calls.append((str(spec.platform), spec.requirements.path.read_text()))
        arch = "x86_64" if spec.platform.architecture == "amd64" else "aarch64"
        for line in spec.requirements.path.read_text().split():
            name, _, version = line.partition("==")
            d = target / f"{name}-{version}.dist-info"
            d.mkdir(parents=True, exist_ok=True)
            (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: MIT\n")
            (target / name).mkdir(exist_ok=True)
            (target / name / "__init__.py").write_text(f"# {name} {version}\n")
            (target / name / f"_speedups.cpython-311-{arch}-linux-gnu.so").write_bytes(b"\x7fELF" + arch.encode())
        (target / "bin").mkdir(exist_ok=True)
        (target / "bin" / "gunicorn").write_text("#!/build/host/python3.11\nimport gunicorn\n")
        return "fake"
    return install


@pytest.fixture
def app(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(deps_mod, "install", fake_install(calls))
    src = tmp_path / "src"
    (src / "hello").mkdir(parents=True)
    (src / "hello" / "__init__.py").write_text("app = 1\n")
    (src / "hello" / "__main__.py").write_text("print('hi')\n")
    (src / "requirements.txt").write_text("flask==3.0.3\ngunicorn==22.0.0\n")
    (src / "tests").mkdir()
    (src / "tests" / "test_x.py").write_text("")
    spec = BuildSpec(app="hello", repository="127.0.0.1:5000/hello", base="127.0.0.1:5000/ferry/python:3.11",
                     source=src, entrypoint=("python3", "-m", "hello"), requirements=src / "requirements.txt",
                     exclude=("tests", "__pycache__"))
    return spec, calls, tmp_path


def run(spec, tmp_path, cache_name="cache", previous=None, **kw):
    return build(spec, fetch_base=base_image, fetch_previous=previous, cache=Cache(tmp_path / cache_name), **kw)


def test_layers_are_base_then_deps_then_source_with_oci_media_types(app):
    spec, calls, tmp = app
    r = run(spec, tmp)
    img = r.image
    assert isinstance(img, Image)
    assert [layer.media_type for layer in img.layers] == [OCI_LAYER_GZIP] * 3
    assert r.roles() == {img.layers[0].digest: "base", img.layers[1].digest: "deps", img.layers[2].digest: "source"}
    assert img.layers[0].source == "127.0.0.1:5000/ferry/python" and img.layers[0].data is None
    cfg = img.config_json()
    assert cfg["rootfs"]["diff_ids"][0] == sha256(BASE_TAR)
    assert cfg["config"]["Labels"]["dev.ferry.deps.layer"] == img.layers[1].digest
    assert [d.name for d in r.packages()] == ["flask", "gunicorn"]
    assert calls == [("linux/amd64", "flask==3.0.3\ngunicorn==22.0.0\n")]


def test_manifest_is_exactly_config_layers_and_annotations(app):
    spec, calls, tmp = app
    spec = BuildSpec(**{**spec.__dict__, "revision": "abc", "version": "1.0"})
    img = run(spec, tmp).image
    m = json.loads(img.manifest_bytes)
    assert m == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": OCI_CONFIG, "digest": img.config.digest, "size": img.config.size},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size} for layer in img.layers],
        "annotations": {
            "org.opencontainers.image.base.digest": base_image(Platform()).digest,
            "org.opencontainers.image.base.name": "127.0.0.1:5000/ferry/python:3.11",
            "org.opencontainers.image.created": "1970-01-01T00:00:01Z",
            "org.opencontainers.image.revision": "abc",
            "org.opencontainers.image.title": "hello",
            "org.opencontainers.image.version": "1.0",
        },
    }
    assert img.manifest_bytes == canonical_json(m)


def test_a_second_build_uses_the_cache_and_gives_the_same_digest(app):
    spec, calls, tmp = app
    first = run(spec, tmp)
    second = run(spec, tmp)
    assert second.digest == first.digest
    assert len(calls) == 1
    assert (second.builds[0].deps_origin, second.builds[0].source_origin) == ("cache", "cache")


def test_source_change_rebuilds_only_the_source_layer(app):
    spec, calls, tmp = app
    first = run(spec, tmp)
    (spec.source / "hello" / "__init__.py").write_text("app = 2\n")
    second = run(spec, tmp)
    assert first.image.layers[:2] == second.image.layers[:2]
    assert first.image.layers[2].digest != second.image.layers[2].digest
    assert len(calls) == 1 and second.builds[0].source_origin == "built"


def test_requirements_change_rebuilds_only_the_deps_layer(app):
    spec, calls, tmp = app
    first = run(spec, tmp)
    spec.requirements.write_text("flask==3.0.3\ngunicorn==22.0.0\nblinker==1.8.2\n")
    second = run(spec, tmp)
    assert first.image.layers[2] == second.image.layers[2]  # requirements.txt is not in the source layer
    assert first.image.layers[1].digest != second.image.layers[1].digest
    assert len(calls) == 2


def test_two_checkouts_with_different_times_give_one_digest(app):
    spec, calls, tmp = app
    other = tmp / "elsewhere" / "checkout"
    shutil.copytree(spec.source, other)
    for p in other.rglob("*"):
        os.utime(p, (1_234_567_890, 1_234_567_890))
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
    a = run(spec, tmp, "cache-a")
    b2 = run(BuildSpec(**{**spec.__dict__, "source": other, "requirements": other / "requirements.txt"}), tmp, "cache-b")
    assert a.digest == b2.digest


def test_a_fresh_machine_reuses_the_deps_layer_recorded_in_the_previous_image(app):
    spec, calls, tmp = app
    first = run(spec, tmp, "machine-one")
    fresh = run(spec, tmp, "machine-two", previous=lambda p: first.image)
    assert len(calls) == 1  # nothing resolved or downloaded
    assert fresh.builds[0].deps_origin == "registry"
    assert fresh.digest == first.digest
    reused = fresh.image.layers[1]
    assert reused.data is None and reused.path is None and reused.source == "127.0.0.1:5000/hello"
    assert fresh.packages() == first.packages()  # the same SBOM on a fresh machine


def test_a_previous_image_with_another_key_is_not_reused(app):
    spec, calls, tmp = app
    first = run(spec, tmp, "m1")
    spec.requirements.write_text("flask==3.0.3\n")
    second = run(spec, tmp, "m2", previous=lambda p: first.image)
    assert second.builds[0].deps_origin == "built" and len(calls) == 2


def test_several_platforms_make_an_index_with_per_platform_wheels(app):
    spec, calls, tmp = app
    spec = BuildSpec(**{**spec.__dict__, "platforms": (Platform("linux", "amd64"), Platform("linux", "arm64"))})
    r = run(spec, tmp)
    assert isinstance(r.image, ImageIndex)
    assert [m.platform.architecture for m in r.image.manifests] == ["amd64", "arm64"]
    assert sorted(c[0] for c in calls) == ["linux/amd64", "linux/arm64"]
    arm = r.image.for_platform("linux/arm64")
    assert arm.config_json()["architecture"] == "arm64"
    index = json.loads(r.image.manifest_bytes)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]


def test_excluded_files_are_not_in_the_source_layer(app):
    spec, calls, tmp = app
    r = run(spec, tmp)
    import gzip, io, tarfile
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(r.image.layers[2].read()))) as t:
        names = t.getnames()
    assert "app/hello/__main__.py" in names and not any("tests" in n for n in names)
    assert "app/requirements.txt" not in names


def test_unpinned_requirements_warn(app):
    spec, calls, tmp = app
    spec.requirements.write_text("flask>=3\n")
    r = run(spec, tmp)
    assert r.warnings and "not reproducible" in r.warnings[0] and "flask" in r.warnings[0]


def test_a_base_without_the_platform_is_refused(app):
    spec, calls, tmp = app
    with pytest.raises(BuildError, match="is linux/amd64, not linux/arm64"):
        build(BuildSpec(**{**spec.__dict__, "platforms": (Platform("linux", "arm64"),)}),
              fetch_base=lambda p: base_image(Platform()), cache=Cache(tmp / "c"))


def test_a_missing_entrypoint_module_fails_the_build(app):
    spec, calls, tmp = app
    with pytest.raises(BuildError, match="needs the module 'nothere'"):
        run(BuildSpec(**{**spec.__dict__, "entrypoint": ("python3", "-m", "nothere")}), tmp)


def test_spec_from_config_refuses_a_wrong_manylinux_tag(tmp_path):
    from ferry.config import parse
    from ferry.errors import ConfigError

    (tmp_path / "src").mkdir()
    cfg = parse({"app": {"name": "hello"}, "image": {"repository": "127.0.0.1:5000/hello", "base": "b", "source": "src",
                                                      "entrypoint": ["python3", "-m", "hello"], "manylinux": "glibc"}},
                tmp_path / "ferry.toml")
    with pytest.raises(ConfigError, match="image.manylinux: 'glibc' is not a manylinux tag"):
        BuildSpec.from_config(cfg)
    ok = parse({"app": {"name": "hello"}, "image": {"repository": "r", "base": "b", "source": "src",
                                                     "entrypoint": ["x"], "interpreter": "#!/usr/bin/python3",
                                                     "platforms": ["linux/arm64"]}}, tmp_path / "ferry.toml")
    spec = BuildSpec.from_config(ok, environ={"SOURCE_DATE_EPOCH": "1700000000"})
    assert (spec.shebang, spec.manylinux, spec.epoch, spec.platforms) == (
        "/usr/bin/python3", "manylinux_2_28", 1700000000, (Platform("linux", "arm64"),))


def test_a_layer_pushed_to_another_repository_is_offered_for_a_mount(app):
    spec, calls, tmp = app
    first = run(spec, tmp)
    cache = Cache(tmp / "cache")
    cache.note_pushed([first.image.layers[1].digest], "127.0.0.1:5000/other")
    again = run(spec, tmp)
    assert again.image.layers[1].source == "127.0.0.1:5000/other"
    assert again.image.layers[2].source is None
    assert again.digest == first.digest


@pytest.mark.parametrize("entrypoint", [
    ("gunicorn", "-b", "0.0.0.0:{port}", "hello:app"),
    ("gunicorn", "--bind=[::]:{port}", "hello:create_app()"),
    ("python3", "-m", "uvicorn", "hello:app", "--host", "127.0.0.1", "--port", "{port}"),
    ("python3", "-m", "gunicorn", "hello:app", "localhost:{port}"),  # a stray host:port is no module
    ("waitress-serve", "--listen=127.0.0.1:{port}", "hello:app"),
])
def test_the_deployers_port_placeholder_does_not_trip_the_entrypoint_check(entrypoint):
    check_entrypoint(entrypoint, {"hello/__init__.py"}, "/app", ("gunicorn", "waitress-serve"),
                     ("gunicorn", "uvicorn", "waitress"), "/src")


def test_a_wrong_module_is_still_found_next_to_the_placeholder():
    with pytest.raises(BuildError, match="needs the module 'helo'"):
        check_entrypoint(("gunicorn", "-b", "0.0.0.0:{port}", "helo:app"), {"hello/__init__.py"}, "/app",
                         ("gunicorn",), ("gunicorn",), "/src")


def test_files_not_known_check_only_the_commands_shape():
    check_entrypoint(("python3", "/app/generated.py"), {"main.py"}, "/app", (), (), "/src", files_known=False)
    with pytest.raises(BuildError, match="`-m` without a module"):
        check_entrypoint(("python3", "-m"), set(), "/app", (), (), "/src", files_known=False)


def test_a_base_with_another_python_fails_before_anything_is_resolved(app):
    spec, calls, tmp = app
    with pytest.raises(BuildError) as e:
        run(BuildSpec(**{**spec.__dict__, "python": "3.13"}), tmp)
    assert e.value.message == ("image.python asks for Python 3.13, but the base image "
                               "127.0.0.1:5000/ferry/python:3.11 has Python 3.11.2")
    assert "`ferry local up --python 3.13` makes that base" in e.value.hint
    assert calls == []  # no wheel resolved


def test_packages_on_a_base_that_is_not_debian_say_so_and_build_nothing(app):
    spec, calls, tmp = app
    cache = Cache(tmp / "c")

    def fetch_blob(blob):  # the fake base's only layer: no os-release, no dpkg status
        dest = cache.blob_path(blob.digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gzip_bytes(BASE_TAR))
        return dest
    with pytest.raises(BuildError) as e:
        build(BuildSpec(**{**spec.__dict__, "packages": ("libpq5",)}), fetch_base=base_image, cache=cache,
              fetch_blob=fetch_blob)
    assert e.value.message == ("image.packages: the base image 127.0.0.1:5000/ferry/python:3.11 is not Debian-based, "
                               "so Debian packages cannot be added to it")
    assert calls == []


def test_a_contribution_reaches_the_source_layer_and_the_entrypoint_check(app):
    from ferry.images.steps import Contribution

    spec, calls, tmp = app
    spec = BuildSpec(**{**spec.__dict__, "entrypoint": ("/app/deps/bin/hello-serve",)})
    with pytest.raises(BuildError, match="runs /app/deps/bin/hello-serve, which is not in"):
        build(spec, fetch_base=base_image, cache=Cache(tmp / "c"))
    script = Contribution("app scripts", (Entry("app/deps/bin/hello-serve", data=b"#!/usr/bin/python3\n", mode=0o755),),
                          scripts=("hello-serve",))
    r = build(spec, fetch_base=base_image, cache=Cache(tmp / "c"), contributions=[script])
    import gzip, io, tarfile
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(r.builds[0].layer("source").blob.read()))) as t:
        assert "app/deps/bin/hello-serve" in t.getnames()


def test_contributions_may_depend_on_the_platforms_base(app):
    from ferry.images.steps import Contribution

    spec, calls, tmp = app
    spec = BuildSpec(**{**spec.__dict__, "platforms": (Platform("linux", "amd64"), Platform("linux", "arm64"))})
    seen = []

    def per_platform(ctx):
        seen.append(str(ctx.platform))
        data = f"#!{ctx.base_facts().interpreter or '/usr/bin/env python3'}\n# {ctx.platform.architecture}\n".encode()
        return [Contribution("script", (Entry("app/deps/bin/hello-serve", data=data, mode=0o755),), scripts=("hello-serve",))]
    r = build(spec, fetch_base=base_image, cache=Cache(tmp / "c"), contributions=per_platform)
    assert sorted(seen) == ["linux/amd64", "linux/arm64"]
    amd, arm = (b.layer("source") for b in r.builds)
    assert amd.digest != arm.digest and amd.scripts == ("hello-serve",)


def test_a_debian_base_that_says_nothing_in_its_config_is_read_from_its_dpkg_status(app):
    """No PYTHON_VERSION, no labels (a Debian image with python3 from apt and no coreutils): the
    Python check and the console scripts' interpreter come from its files."""
    spec, calls, tmp = app
    status = (b"Package: python3.11-minimal\nStatus: install ok installed\nArchitecture: amd64\n"
              b"Version: 3.11.2-6+deb12u6\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\n"
              b"Version: 2.36-9\n")
    tar = tar_bytes([Entry("usr/bin/python3", data=b"\x7fELF", mode=0o755), Entry("var/lib/dpkg/status", data=status),
                     Entry("etc/os-release", data=b"ID=debian\nVERSION_CODENAME=bookworm\n")])
    gz = gzip_bytes(tar)
    cfg = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
           "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]}}
    quiet = Image(Blob.from_bytes(canonical_json(cfg), OCI_CONFIG),
                  (Blob(sha256(gz), len(gz), OCI_LAYER_GZIP, source="127.0.0.1:5000/debian"),))
    cache = Cache(tmp / "c")

    def fetch_blob(blob):
        dest = cache.blob_path(blob.digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gz)
        return dest
    r = build(spec, fetch_base=lambda p: quiet, cache=cache, fetch_blob=fetch_blob)
    import gzip, io, tarfile
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(r.builds[0].layer("deps").blob.read()))) as t:
        assert t.extractfile("app/deps/bin/gunicorn").read().split(b"\n")[0] == b"#!/usr/bin/python3"
    assert r.warnings == ()  # the Python was found: 3.11.2
    with pytest.raises(BuildError, match="image.python asks for Python 3.12, but the base image .* has Python 3.11.2"):
        build(BuildSpec(**{**spec.__dict__, "python": "3.12"}), fetch_base=lambda p: quiet, cache=cache,
              fetch_blob=fetch_blob)
