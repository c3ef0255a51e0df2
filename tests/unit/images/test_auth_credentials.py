"""Credentials and challenges: WWW-Authenticate parsing, scopes, docker config (inline auths,
credential helpers, credsStore), the environment, ECR helpers, and the token flow's logic."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from ferry.aws.ecr import EcrRegistry, decode_authorization_token
from ferry.errors import AuthError, RegistryError
from ferry.images import auth
from ferry.images.auth import (Credentials, RegistryAuth, credentials_for, merge_scopes, parse_token_response,
                               parse_www_authenticate, scopes_cover)


# --- WWW-Authenticate ------------------------------------------------------------------------

def test_bearer_challenge_is_parsed_with_realm_service_and_scope():
    [c] = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:samalba/my-app:pull,push"}
    assert c.scopes == ("repository:samalba/my-app:pull,push",)


def test_insufficient_scope_error_and_several_scopes_are_kept():
    [c] = parse_www_authenticate('Bearer realm="http://127.0.0.1:5003/token",service="svc",'
                                 'scope="repository:a:pull repository:b:pull,push",error="insufficient_scope"')
    assert c.params["error"] == "insufficient_scope"
    assert c.scopes == ("repository:a:pull", "repository:b:pull,push")


def test_several_challenges_in_one_header_and_quoted_commas():
    cs = parse_www_authenticate('Basic realm="my, registry", Bearer realm="https://t/x",service=s')
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[0].params == {"realm": "my, registry"}
    assert cs[1].params == {"realm": "https://t/x", "service": "s"}


def test_escaped_quotes_and_spaces_around_equals():
    [c] = parse_www_authenticate('Basic realm = "say \\"hi\\""')
    assert c.params == {"realm": 'say "hi"'}


def test_empty_or_missing_header_has_no_challenges():
    assert parse_www_authenticate(None) == []
    assert parse_www_authenticate("") == []


def test_token68_challenge_does_not_swallow_the_next_one():
    cs = parse_www_authenticate('Negotiate abc123==, Basic realm="r"')
    assert [c.scheme for c in cs] == ["negotiate", "basic"]
    assert cs[0].params == {"token68": "abc123=="}


# --- scopes ----------------------------------------------------------------------------------

def test_a_push_token_covers_pull_but_not_another_repository():
    have = ("repository:app:pull,push",)
    assert scopes_cover(have, ("repository:app:pull",))
    assert not scopes_cover(have, ("repository:base:pull",))
    assert not scopes_cover(("repository:app:pull",), ("repository:app:pull,push",))


def test_merge_scopes_unions_actions_per_repository_in_stable_order():
    assert merge_scopes(("repository:app:push",), ("repository:app:pull", "repository:base:pull")) == (
        "repository:app:pull,push", "repository:base:pull")


# --- token responses -------------------------------------------------------------------------

def test_token_response_accepts_token_or_access_token_and_renews_early():
    assert parse_token_response(b'{"token": "t1", "expires_in": 300}', 1000.0) == ("t1", 1290.0)
    assert parse_token_response(b'{"access_token": "t2"}', 0.0) == ("t2", 50.0)
    with pytest.raises(ValueError, match="neither"):
        parse_token_response(b'{"expires_in": 1}', 0.0)
    with pytest.raises(ValueError, match="not JSON"):
        parse_token_response(b"<html>", 0.0)


def _mock_registry(log: list, token_status: int = 200, token_body: dict | None = None):
    """A pretend registry + token server, to check the client's side of the token dance."""
    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        if request.url.path == "/token":
            if token_status != 200:
                return httpx.Response(token_status, json={"errors": [{"code": "UNAUTHORIZED"}]})
            scopes = request.url.params.get_list("scope")
            return httpx.Response(200, json=token_body or {"token": "tok:" + ",".join(scopes), "expires_in": 300})
        if request.headers.get("authorization", "").startswith("Bearer tok:"):
            return httpx.Response(200, json={})
        return httpx.Response(401, headers={"WWW-Authenticate":
                                            'Bearer realm="http://reg.test/token",service="svc",scope="repository:app:pull"'})
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_bearer_flow_fetches_a_token_with_basic_credentials_and_caches_it_per_scope():
    log: list[httpx.Request] = []
    http = _mock_registry(log)
    a = RegistryAuth(Credentials("u", "p", source="test"))
    scopes = ("repository:app:pull",)
    assert a.headers(scopes) == {}
    r = http.get("http://reg.test/v2/app/manifests/x")
    assert a.authenticate(r.headers["www-authenticate"], scopes, fetch=http.request, registry="reg.test")
    token_req = log[-1]
    assert token_req.url.params["service"] == "svc"
    assert token_req.url.params.get_list("scope") == ["repository:app:pull"]
    assert token_req.url.params["account"] == "u"
    assert token_req.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert a.headers(scopes) == {"Authorization": "Bearer tok:repository:app:pull"}
    # a different scope is not covered by the cached token
    assert a.headers(("repository:app:pull,push",)) == {}


def test_anonymous_bearer_flow_sends_no_credentials():
    log: list[httpx.Request] = []
    http = _mock_registry(log, token_body={"access_token": "tok:anon"})
    a = RegistryAuth(None)
    ok = a.authenticate('Bearer realm="http://reg.test/token",service="svc"', ("repository:app:pull",),
                        fetch=http.request, registry="reg.test")
    assert ok and "authorization" not in log[-1].headers
    assert a.headers(("repository:app:pull",)) == {"Authorization": "Bearer tok:anon"}


def test_token_server_refusal_is_an_auth_error_naming_the_fix():
    http = _mock_registry([], token_status=401)
    a = RegistryAuth(Credentials("u", "Pw-9f3k", source="FERRY_REGISTRY_USERNAME/FERRY_REGISTRY_PASSWORD"))
    with pytest.raises(AuthError) as e:
        a.authenticate('Bearer realm="http://reg.test/token",service="svc"', ("repository:app:pull",),
                       fetch=http.request, registry="reg.test:5002")
    msg = str(e.value)
    assert "reg.test:5002" in msg and "HTTP 401" in msg and "FERRY_REGISTRY_USERNAME" in msg
    assert "docker login reg.test:5002" in msg
    assert "Pw-9f3k" not in msg  # never the password


def test_token_server_403_names_the_rights_that_were_refused():
    http = _mock_registry([], token_status=403)
    with pytest.raises(AuthError) as e:
        RegistryAuth(Credentials("ci", "pw", source="env")).authenticate(
            'Bearer realm="http://reg.test/token",service="svc"', ("repository:team/app:pull,push",),
            fetch=http.request, registry="reg.test")
    assert "repository:team/app:pull,push" in str(e.value) and "HTTP 403" in str(e.value)
    assert "ci (from env)" in str(e.value) and e.value.status == 403


def test_token_server_failure_is_a_registry_error():
    http = _mock_registry([], token_status=503)
    with pytest.raises(RegistryError, match="HTTP 503"):
        RegistryAuth(None).authenticate('Bearer realm="http://reg.test/token"', (), fetch=http.request, registry="r")


def test_identity_token_uses_the_oauth2_refresh_grant():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json={"access_token": "at"})
    http = httpx.Client(transport=httpx.MockTransport(handler))
    a = RegistryAuth(Credentials(identity_token="refresh-me", source="helper"))
    assert a.authenticate('Bearer realm="http://t/token",service="svc"', ("repository:x:pull",),
                          fetch=http.request, registry="r")
    req = seen[0]
    assert req.method == "POST"
    form = dict(x.split("=", 1) for x in req.content.decode().split("&"))
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "refresh-me"
    assert form["service"] == "svc"


def test_basic_challenge_is_answered_once_and_not_again_with_the_same_credentials():
    a = RegistryAuth(Credentials("u", "p"))
    header = "Basic " + base64.b64encode(b"u:p").decode()
    assert a.authenticate('Basic realm="r"', (), fetch=None, registry="r") is True
    assert a.headers(()) == {"Authorization": header}
    assert a.authenticate('Basic realm="r"', (), fetch=None, registry="r", sent=header) is False
    assert RegistryAuth(None).authenticate('Basic realm="r"', (), fetch=None, registry="r") is False


def test_repr_of_credentials_hides_the_password():
    assert "hunter2" not in repr(Credentials("u", "hunter2", identity_token="tok"))


# --- the environment --------------------------------------------------------------------------

def test_env_credentials_need_both_variables():
    assert auth.from_env("r", {}) is None
    c = auth.from_env("r", {"FERRY_REGISTRY_USERNAME": "u", "FERRY_REGISTRY_PASSWORD": "p"})
    assert (c.username, c.password) == ("u", "p")
    with pytest.raises(AuthError, match="FERRY_REGISTRY_PASSWORD is not set"):
        auth.from_env("r", {"FERRY_REGISTRY_USERNAME": "u"})


def test_env_credentials_scoped_to_one_registry_are_not_offered_to_another():
    env = {"FERRY_REGISTRY_USERNAME": "u", "FERRY_REGISTRY_PASSWORD": "p", "FERRY_REGISTRY": "reg.example.com"}
    assert auth.from_env("reg.example.com", env).username == "u"
    assert auth.from_env("127.0.0.1:5000", env) is None


# --- docker config ----------------------------------------------------------------------------

def _docker_config(tmp_path: Path, doc: dict) -> dict:
    d = tmp_path / "dockercfg"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(doc))
    return {"DOCKER_CONFIG": str(d), "PATH": os.environ.get("PATH", "")}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_inline_auth_is_found_by_host_whatever_the_key_spelling(tmp_path):
    env = _docker_config(tmp_path, {"auths": {
        "http://127.0.0.1:5001/v2/": {"auth": _b64("ferry:pw:with:colons")},
        "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpw")},
        "reg.example.com": {"username": "x", "password": "y"},
    }})
    c = auth.from_docker_config("127.0.0.1:5001", environ=env)
    assert (c.username, c.password) == ("ferry", "pw:with:colons")
    assert c.source.endswith("config.json")
    assert auth.from_docker_config("registry-1.docker.io", environ=env).username == "hubuser"
    assert auth.from_docker_config("reg.example.com", environ=env).password == "y"
    assert auth.from_docker_config("other:5000", environ=env) is None


def test_docker_config_honours_DOCKER_CONFIG_and_a_missing_file_means_none(tmp_path):
    assert auth.from_docker_config("r", environ={"DOCKER_CONFIG": str(tmp_path / "nope")}) is None
    assert auth.docker_config_path({"HOME": "/home/x"}) == Path("/home/x/.docker/config.json")


def test_broken_docker_config_is_a_clear_error(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "config.json").write_text("{not json")
    with pytest.raises(AuthError, match="not valid JSON"):
        auth.from_docker_config("r", environ={"DOCKER_CONFIG": str(d)})
    env = _docker_config(tmp_path, {"auths": {"r": {"auth": _b64("no-colon")}}})
    with pytest.raises(AuthError, match="docker login r"):
        auth.from_docker_config("r", environ=env)


def _fake_helper(tmp_path: Path, name: str, script: str) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / f"docker-credential-{name}"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bindir}:{os.environ.get('PATH', '')}"}


def test_cred_helper_is_run_with_the_server_on_stdin(tmp_path):
    path = _fake_helper(tmp_path, "fake", """
read server
[ "$1" = get ] || exit 3
echo "{\\"ServerURL\\":\\"$server\\",\\"Username\\":\\"helper-user\\",\\"Secret\\":\\"secret-for-$server\\"}"
""")
    env = {**_docker_config(tmp_path, {"credHelpers": {"reg.example.com:5000": "fake"},
                                       "auths": {"reg.example.com:5000": {"auth": _b64("inline:ignored")}}}), **path}
    c = auth.from_docker_config("reg.example.com:5000", environ=env)
    assert c.username == "helper-user"
    assert c.password == "secret-for-reg.example.com:5000"
    assert c.source == "docker-credential-fake"


def test_creds_store_is_used_and_not_found_falls_back_to_inline_auths(tmp_path):
    path = _fake_helper(tmp_path, "store", """
read server
case "$server" in
  known.example.com) echo '{"Username":"<token>","Secret":"identity"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
""")
    env = {**_docker_config(tmp_path, {"credsStore": "store",
                                       "auths": {"inline.example.com": {"auth": _b64("a:b")}}}), **path}
    c = auth.from_docker_config("known.example.com", environ=env)
    assert c.identity_token == "identity" and c.username is None
    assert auth.from_docker_config("inline.example.com", environ=env).username == "a"
    assert auth.from_docker_config("unknown.example.com", environ=env) is None


def test_missing_or_failing_helper_is_a_clear_error(tmp_path):
    env = {**_docker_config(tmp_path, {"credHelpers": {"r": "absent"}}), "PATH": str(tmp_path)}
    with pytest.raises(AuthError, match="docker-credential-absent is not on PATH"):
        auth.from_docker_config("r", environ=env)
    path = _fake_helper(tmp_path, "broken", 'echo "keychain locked" >&2; exit 2\n')
    env = {**_docker_config(tmp_path, {"credHelpers": {"r": "broken"}}), **path}
    with pytest.raises(AuthError, match="keychain locked"):
        auth.from_docker_config("r", environ=env)


# --- the resolver -----------------------------------------------------------------------------

def test_auto_prefers_env_then_docker_config_then_anonymous(tmp_path):
    env = _docker_config(tmp_path, {"auths": {"r:5000": {"auth": _b64("cfg:pw")}}})
    assert credentials_for("r:5000", environ=env).username == "cfg"
    env2 = {**env, "FERRY_REGISTRY_USERNAME": "envuser", "FERRY_REGISTRY_PASSWORD": "envpw"}
    assert credentials_for("r:5000", environ=env2).username == "envuser"
    assert credentials_for("other:5000", environ=env) is None
    assert credentials_for("r:5000", "anonymous", environ=env2) is None
    assert credentials_for("r:5000", "docker-config", environ=env2).username == "cfg"


def test_explicit_modes_fail_clearly_when_they_cannot_apply(tmp_path):
    with pytest.raises(AuthError, match="FERRY_REGISTRY_USERNAME"):
        credentials_for("r", "env", environ={})
    with pytest.raises(AuthError, match="not an ECR registry"):
        credentials_for("127.0.0.1:5000", "ecr", environ={})
    with pytest.raises(AuthError, match="unknown credentials mode"):
        credentials_for("r", "kerberos", environ={})


def test_ecr_hosts_are_recognised():
    assert auth.is_ecr("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
    assert auth.is_ecr("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com")
    assert auth.is_ecr("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn")
    assert not auth.is_ecr("public.ecr.aws")
    assert not auth.is_ecr("127.0.0.1:5000")
    assert EcrRegistry.parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com") == EcrRegistry("123456789012", "eu-west-1")


def test_ecr_token_decodes_to_user_and_password():
    assert decode_authorization_token(base64.b64encode(b"AWS:pa:ss").decode()) == ("AWS", "pa:ss")
    with pytest.raises(AuthError):
        decode_authorization_token(base64.b64encode(b"nocolon").decode())


