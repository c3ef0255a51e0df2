"""The local token issuer's pure parts: scopes, grants, the JWT it signs, htpasswd, and the
registry config YAML. (docker-registry accepting the tokens is in the integration tests.)"""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ferry.local.token_server import (Access, TokenIssuer, check_password, grant, issue_token, libtrust_key_id,
                                      load_private_key, make_signing_key, parse_scopes, read_htpasswd,
                                      registry_config, write_htpasswd)


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_scopes_parse_several_per_parameter():
    got = parse_scopes(["repository:app:pull,push repository:ferry/python:pull", "registry:catalog:*", "junk"])
    assert got == [Access("repository", "app", ("pull", "push")), Access("repository", "ferry/python", ("pull",)),
                   Access("registry", "catalog", ("*",))]


def test_read_only_users_get_pull_only_and_unknown_types_nothing():
    req = parse_scopes(["repository:app:pull,push,delete", "weird:x:pull"])
    assert grant(req, "ci") == [Access("repository", "app", ("pull", "push", "delete"))]
    assert grant(req, "reader", frozenset({"reader"})) == [Access("repository", "app", ("pull",))]
    assert grant(parse_scopes(["repository:app:push"]), "reader", frozenset({"reader"})) == []


def test_libtrust_key_id_has_twelve_groups_of_four_base32():
    key = ec.generate_private_key(ec.SECP256R1())
    kid = libtrust_key_id(key.public_key())
    assert re.fullmatch(r"[A-Z2-7]{4}(:[A-Z2-7]{4}){11}", kid)
    assert kid == libtrust_key_id(key.public_key())


def test_es256_token_has_kid_claims_and_a_raw_signature_that_verifies(tmp_path):
    key = load_private_key(make_signing_key(tmp_path)[0])
    tok = issue_token(key, issuer="iss", service="svc", subject="ferry", ttl=300, now=1000, jti="j",
                      access=[Access("repository", "app", ("pull", "push"))])
    h, c, s = tok.split(".")
    header, claims = json.loads(b64d(h)), json.loads(b64d(c))
    assert header == {"typ": "JWT", "alg": "ES256", "kid": libtrust_key_id(key.public_key())}
    assert claims == {"iss": "iss", "sub": "ferry", "aud": "svc", "exp": 1300, "nbf": 990, "iat": 1000, "jti": "j",
                      "access": [{"type": "repository", "name": "app", "actions": ["pull", "push"]}]}
    sig = b64d(s)
    assert len(sig) == 64  # JWS raw r||s, not DER
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.public_key().verify(der, f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256()))


def test_rs256_for_rsa_keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tok = issue_token(key, issuer="i", service="s", subject="u", access=[])
    h, c, s = tok.split(".")
    assert json.loads(b64d(h))["alg"] == "RS256"
    key.public_key().verify(b64d(s), f"{h}.{c}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_htpasswd_uses_bcrypt_2y_and_checks_passwords(tmp_path):
    p = write_htpasswd(tmp_path / "htpasswd", {"ferry": "pw1", "reader": "pw2"}, rounds=4)
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    hashes = read_htpasswd(p)
    assert all(h.startswith(b"$2y$") for h in hashes.values())
    assert check_password(hashes, "ferry", "pw1")
    assert not check_password(hashes, "ferry", "pw2")
    assert not check_password(hashes, "nobody", "pw1")
    assert not check_password({"md5": b"$apr1$abc$def"}, "md5", "x")  # distribution takes bcrypt only


def test_issuer_answers_401_without_or_with_wrong_credentials_and_a_token_with_right_ones(tmp_path):
    key = load_private_key(make_signing_key(tmp_path)[0])
    issuer = TokenIssuer(key, write_htpasswd(tmp_path / "h", {"ferry": "pw"}, rounds=4), "iss", "svc")
    q = {"service": ["svc"], "scope": ["repository:app:pull,push"]}
    assert issuer.answer(q, None)[0] == 401
    bad = "Basic " + base64.b64encode(b"ferry:nope").decode()
    status, body, headers = issuer.answer(q, bad)
    assert status == 401 and "WWW-Authenticate" in headers
    good = "Basic " + base64.b64encode(b"ferry:pw").decode()
    status, body, _ = issuer.answer(q, good)
    assert status == 200 and body["token"] == body["access_token"] and body["expires_in"] == 300
    claims = json.loads(b64d(body["token"].split(".")[1]))
    assert claims["access"] == [{"type": "repository", "name": "app", "actions": ["pull", "push"]}]
    assert issuer.answer({"service": ["other"]}, good)[0] == 400


def test_registry_config_for_each_auth_kind(tmp_path):
    anon = yaml.safe_load(registry_config(5000, tmp_path / "s"))
    assert anon["http"]["addr"] == "127.0.0.1:5000"
    assert anon["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "s")
    assert anon["storage"]["delete"] == {"enabled": True} and "auth" not in anon
    basic = yaml.safe_load(registry_config(5001, "/s", "htpasswd", htpasswd="/h"))
    assert basic["auth"] == {"htpasswd": {"realm": "ferry", "path": "/h"}}
    tok = yaml.safe_load(registry_config(5002, "/s", "token", realm="http://127.0.0.1:5003/token", service="svc",
                                         issuer="iss", rootcertbundle="/c.pem"))
    assert tok["auth"] == {"token": {"realm": "http://127.0.0.1:5003/token", "service": "svc", "issuer": "iss",
                                     "rootcertbundle": "/c.pem"}}
    ro = yaml.safe_load(registry_config(5004, "/s", read_only=True))
    assert ro["storage"]["maintenance"]["readonly"] == {"enabled": True}
    with pytest.raises(ValueError, match="realm, service"):
        registry_config(1, "/s", "token", issuer="i", rootcertbundle="/c")
    with pytest.raises(ValueError):
        registry_config(1, "/s", "kerberos")
