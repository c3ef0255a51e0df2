"""Auth against real registries: htpasswd (basic) and token (ferry's issuer, which
docker-registry 2.8 must accept), right, wrong and missing credentials, a user without push
rights, credentials from the environment and from ~/.docker/config.json with a credential
helper, and the local target's own auth registries."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess

import pytest

from ferry.errors import AuthError
from ferry.images.auth import RegistryAuth, auth_for, basic, credentials_for
from ferry.images.publish import RegistryPublisher
from ferry.images.registry import RegistryClient
from ferry.images.remote import fetch_image
from ferry.local.token_server import TokenIssuer, load_private_key, make_signing_key
try:  # tests/ is a package tree; without __init__.py files the folder itself is on sys.path
    from .registry_servers import (PASSWORD, READER, READER_PASSWORD, USER, make_image, shared, skopeo, unique_name)
except ImportError:
    from registry_servers import (PASSWORD, READER, READER_PASSWORD, USER, make_image, shared, skopeo, unique_name)

pytestmark = pytest.mark.integration


def image(tag: str):
    return make_image([{f"app/{tag}": os.urandom(5000)}])


@pytest.fixture(scope="module")
def basic_reg():
    return shared("basic")


@pytest.fixture(scope="module")
def token_reg():
    return shared("token")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No credentials leak in from the machine running the tests."""
    for k in ("FERRY_REGISTRY_USERNAME", "FERRY_REGISTRY_PASSWORD", "FERRY_REGISTRY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return tmp_path


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_right_credentials_push_and_skopeo_reads_with_them(kind):
    reg = shared(kind)
    repo = unique_name(f"{kind}/ok")
    img = image("ok")
    c = RegistryClient(reg.address, auth=basic(USER, PASSWORD))
    res = RegistryPublisher(c, repo).publish(img, ["v1"])
    assert res.bytes_uploaded > 0
    r = skopeo("inspect", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{reg.address}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == img.digest
    # skopeo without credentials is refused: the registry really checks
    assert skopeo("inspect", "--tls-verify=false", f"docker://{reg.address}/{repo}:v1").returncode != 0


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_wrong_password_is_refused_with_clear_message_and_nothing_is_pushed(kind):
    reg = shared(kind)
    repo = unique_name(f"{kind}/wrong")
    c = RegistryClient(reg.address, auth=basic(USER, "not-the-password"))
    with pytest.raises(AuthError) as e:
        RegistryPublisher(c, repo).publish(image("wrong"), ["v1"])
    msg = str(e.value)
    assert reg.address in msg and "HTTP 401" in msg
    assert "credentials missing or wrong: set FERRY_REGISTRY_USERNAME/FERRY_REGISTRY_PASSWORD" in msg
    assert f"docker login {reg.address}" in msg
    assert "not-the-password" not in msg
    if kind == "basic":
        assert repo in msg  # the registry itself refused this repository
    else:
        assert "token server" in msg  # the issuer refused before the registry was asked
    ok = RegistryClient(reg.address, auth=basic(USER, PASSWORD))
    assert ok.list_tags(repo) == []


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_missing_credentials_are_refused_with_clear_message(kind, clean_env):
    reg = shared(kind)
    with pytest.raises(AuthError) as e:
        fetch_image(RegistryClient(reg.address, auth=auth_for(reg.address)), f"{reg.address}/some/base:1")
    assert "HTTP 401" in str(e.value) and "FERRY_REGISTRY_USERNAME" in str(e.value)
    assert e.value.status == 401


def test_user_without_push_right_can_pull_but_is_told_it_cannot_push(token_reg):
    repo = unique_name("token/readonly")
    img = image("ro")
    RegistryPublisher(RegistryClient(token_reg.address, auth=basic(USER, PASSWORD)), repo).publish(img, ["v1"])
    reader = RegistryClient(token_reg.address, auth=basic(READER, READER_PASSWORD))
    assert fetch_image(reader, f"{token_reg.address}/{repo}:v1").config == img.config
    with pytest.raises(AuthError) as e:
        RegistryPublisher(reader, repo).publish(image("ro2"), ["v2"])
    msg = str(e.value)
    assert f"have no push right on {repo}" in msg and token_reg.address in msg
    assert READER in msg  # who was refused
    assert reader.list_tags(repo) == ["v1"]


def test_env_credentials_are_used_for_the_token_registry(token_reg, clean_env, monkeypatch):
    monkeypatch.setenv("FERRY_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("FERRY_REGISTRY_PASSWORD", PASSWORD)
    creds = credentials_for(token_reg.address, "auto")
    assert creds.username == USER and "FERRY_REGISTRY_USERNAME" in creds.source
    repo = unique_name("token/env")
    res = RegistryPublisher(RegistryClient(token_reg.address, auth=RegistryAuth(creds)), repo).publish(image("e"), ["v1"])
    assert res.tags == ("v1",)


def test_docker_config_credential_helper_logs_in_to_the_basic_registry(basic_reg, clean_env, monkeypatch):
    tmp = clean_env
    bindir = tmp / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-ferrytest"
    # a helper in the docker protocol: server on stdin, JSON on stdout; logs what it was asked
    helper.write_text(f"""#!/bin/sh
read server
echo "$1 $server" >> {tmp}/helper.log
[ "$server" = "{basic_reg.address}" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}' "$server"
""")
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    (tmp / "docker").mkdir()
    (tmp / "docker" / "config.json").write_text(json.dumps({"credHelpers": {basic_reg.address: "ferrytest"}}))

    repo = unique_name("basic/helper")
    c = RegistryClient(basic_reg.address, auth=auth_for(basic_reg.address, "auto"))
    RegistryPublisher(c, repo).publish(image("h"), ["v1"])
    assert (tmp / "helper.log").read_text().strip() == f"get {basic_reg.address}"
    assert c.list_tags(repo) == ["v1"]


def test_docker_config_inline_auth_works_with_the_token_flow(token_reg, clean_env):
    (clean_env / "docker").mkdir()
    entry = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (clean_env / "docker" / "config.json").write_text(json.dumps({"auths": {f"http://{token_reg.address}": {"auth": entry}}}))
    repo = unique_name("token/cfg")
    c = RegistryClient(token_reg.address, auth=auth_for(token_reg.address, "docker-config"))
    assert RegistryPublisher(c, repo).publish(image("c"), ["v1"]).tags == ("v1",)


def test_token_issuer_reads_htpasswd_files_made_by_apache_htpasswd(tmp_path):
    f = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-B", "-b", "-c", str(f), "alice", "wonder-land"], check=True, capture_output=True)
    key = load_private_key(make_signing_key(tmp_path)[0])
    issuer = TokenIssuer(key, f, "iss", "svc")
    auth = "Basic " + base64.b64encode(b"alice:wonder-land").decode()
    assert issuer.answer({"scope": ["repository:x:pull"]}, auth)[0] == 200
    bad = "Basic " + base64.b64encode(b"alice:wonderland").decode()
    assert issuer.answer({"scope": ["repository:x:pull"]}, bad)[0] == 401


def test_local_target_auth_registries_accept_its_user(local_target):
    """The lead's local target runs ferry's token issuer: both auth registries work with its
    user, and refuse a wrong password."""
    user, pw = local_target["registry_user"], local_target["registry_password"]
    for addr in (local_target["registry_basic"], local_target["registry_token"]):
        repo = unique_name("ferry-tests/auth")
        c = RegistryClient(addr, auth=basic(user, pw))
        img = image("lt")
        RegistryPublisher(c, repo).publish(img, ["v1"])
        r = skopeo("inspect", "--tls-verify=false", "--creds", f"{user}:{pw}", f"docker://{addr}/{repo}:v1")
        assert r.returncode == 0 and json.loads(r.stdout)["Digest"] == img.digest, r.stderr
        with pytest.raises(AuthError):
            RegistryClient(addr, auth=basic(user, pw + "x")).manifest_exists(repo, "v1")
        assert c.delete_manifest(repo, img.digest)  # the local target's registries are shared: clean up
