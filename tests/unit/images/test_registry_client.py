"""The registry client's logic, against an in-process fake of the distribution API
(httpx.MockTransport): request sequences for uploads, the retry policy, error messages.
The real registry is exercised in tests/integration/images."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest

from ferry.errors import AuthError, RegistryError
from ferry.images.oci import OCI_MANIFEST, Blob, sha256
from ferry.images.registry import (MAX_RETRY_AFTER, RegistryClient, backoff_delay, error_for_response,
                                   parse_retry_after)


class FakeRegistry:
    """Just enough of the OCI distribution API, with failures on demand."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.uploads: dict[str, bytearray] = {}
        self.log: list[tuple[str, str, int]] = []
        self.fail: list[tuple[str, str, int, object]] = []  # (method, path regex, status | exception, remaining)
        self.n = 0

    def fail_next(self, method: str, path: str, what, times: int = 1):
        self.fail.append([method, path, what, times])

    def __call__(self, req: httpx.Request) -> httpx.Response:
        resp = self._handle(req)
        self.log.append((req.method, req.url.path, resp.status_code))
        return resp

    def _handle(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        for rule in self.fail:
            if rule[0] == req.method and re.search(rule[1], path) and rule[3] > 0:
                rule[3] -= 1
                if isinstance(rule[2], int):
                    return httpx.Response(rule[2], json={"errors": [{"code": "UNKNOWN", "message": "injected"}]},
                                          headers={"Retry-After": "7"} if rule[2] == 429 else {})
                raise rule[2]
        m = re.match(r"^/v2/(.+)/blobs/uploads/([^/]*)$", path)
        if m:
            repo, uid = m.groups()
            if req.method == "POST":
                if "mount" in req.url.params and req.url.params["mount"] in self.blobs:
                    return httpx.Response(201)
                self.n += 1
                uid = f"u{self.n}"
                self.uploads[uid] = bytearray()
                # relative Location with state in the query, like distribution's
                return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=s{self.n}"})
            if uid not in self.uploads or not req.url.params.get("_state"):
                return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
            buf = self.uploads[uid]
            body = req.read()
            if req.method == "PATCH":
                start, end = map(int, req.headers["content-range"].split("-"))
                assert start == len(buf) and end == start + len(body) - 1
                buf += body
                return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=p{len(buf)}",
                                                    "Range": f"0-{len(buf) - 1}"})
            if req.method == "PUT":
                buf += body
                digest = req.url.params["digest"]
                if sha256(bytes(buf)) != digest:
                    return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID", "message": "digest"}]})
                self.blobs[digest] = bytes(buf)
                del self.uploads[uid]
                return httpx.Response(201, headers={"Docker-Content-Digest": digest})
            if req.method == "DELETE":
                del self.uploads[uid]
                return httpx.Response(204)
        m = re.match(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]+)$", path)
        if m:
            data = self.blobs.get(m.group(2))
            if data is None:
                return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
            return httpx.Response(200, content=b"" if req.method == "HEAD" else data,
                                  headers={"Content-Length": str(len(data))})
        m = re.match(r"^/v2/(.+)/manifests/(.+)$", path)
        if m:
            ref = m.group(2)
            if req.method == "PUT":
                body = req.read()
                self.manifests[ref] = (body, req.headers["content-type"])
                self.manifests[sha256(body)] = (body, req.headers["content-type"])
                return httpx.Response(201, headers={"Docker-Content-Digest": sha256(body)})
            if ref not in self.manifests:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
            body, ctype = self.manifests[ref]
            return httpx.Response(200, content=b"" if req.method == "HEAD" else body,
                                  headers={"Content-Type": ctype, "Docker-Content-Digest": sha256(body),
                                           "Content-Length": str(len(body))})
        return httpx.Response(404)


@pytest.fixture
def fake():
    return FakeRegistry()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(fake, sleeps):
    return RegistryClient("reg.test:5000", insecure=True, transport=httpx.MockTransport(fake), sleep=sleeps.append)


def blob(n: int, seed: bytes = b"x") -> Blob:
    data = hashlib.sha256(seed).digest() * (n // 32 + 1)
    return Blob.from_bytes(data[:n], "application/octet-stream")


# --- uploads ---------------------------------------------------------------------------------

def test_monolithic_upload_is_post_then_put_with_the_digest_keeping_the_session_state(client, fake):
    b = blob(1000)
    assert client.upload_blob("app", b) == 1000
    assert fake.blobs[b.digest] == b.data
    assert [(m, p) for m, p, _ in fake.log] == [("POST", "/v2/app/blobs/uploads/"), ("PUT", "/v2/app/blobs/uploads/u1")]


def test_chunked_upload_patches_with_content_range_then_commits(client, fake):
    b = blob(2500)
    assert client.upload_blob("app", b, chunk_size=1000) == 2500
    assert fake.blobs[b.digest] == b.data
    assert [m for m, _, _ in fake.log] == ["POST", "PATCH", "PATCH", "PATCH", "PUT"]


def test_small_blob_goes_monolithic_even_with_a_chunk_size(client, fake):
    client.upload_blob("app", blob(10), chunk_size=1000)
    assert [m for m, _, _ in fake.log] == ["POST", "PUT"]


@pytest.mark.parametrize("chunk_size", [None, 1000])
def test_content_that_does_not_match_its_digest_is_never_committed(client, fake, sleeps, chunk_size):
    good = blob(3000)
    bad = Blob(digest=good.digest, size=good.size, media_type=good.media_type, data=b"y" * 3000)
    with pytest.raises(RegistryError, match="read back as") as e:
        client.upload_blob("app", bad, chunk_size=chunk_size)
    assert "clear the cache" in str(e.value)
    assert good.digest not in fake.blobs
    assert sleeps == []  # corrupt content is not a reason to retry
    assert fake.log[-1][0] == "DELETE"  # the session is cancelled, not left to rot


def test_blob_without_local_content_cannot_be_uploaded_directly(client):
    with pytest.raises(RegistryError, match="no local content"):
        client.upload_blob("app", Blob(digest="sha256:" + "0" * 64, size=1, media_type="x", source="r/x"))


def test_mount_returns_true_on_201_and_cancels_the_session_on_202(client, fake):
    b = blob(100)
    fake.blobs[b.digest] = b.data
    assert client.mount_blob("app", b.digest, "base") is True
    assert client.mount_blob("app", "sha256:" + "1" * 64, "base") is False
    assert [m for m, _, _ in fake.log] == ["POST", "POST", "DELETE"]
    assert fake.uploads == {}


# --- retries ---------------------------------------------------------------------------------

def test_500_twice_then_success_is_retried_with_growing_backoff(client, fake, sleeps):
    fake.fail_next("PUT", "/manifests/", 500, times=2)
    data = b'{"schemaVersion":2}'
    assert client.put_manifest("app", "v1", data, OCI_MANIFEST) == sha256(data)
    assert [s for _, _, s in fake.log] == [500, 500, 201]
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] > 0


def test_a_failed_upload_restarts_from_a_fresh_session(client, fake, sleeps):
    fake.fail_next("PATCH", "/blobs/uploads/", 502, times=1)
    b = blob(2500)
    client.upload_blob("app", b, chunk_size=1000)
    methods = [m for m, _, _ in fake.log]
    # POST, PATCH fails, DELETE (cancel), then a whole new session
    assert methods == ["POST", "PATCH", "DELETE", "POST", "PATCH", "PATCH", "PATCH", "PUT"]
    assert fake.blobs[b.digest] == b.data and len(sleeps) == 1


def test_429_honours_retry_after(client, fake, sleeps):
    fake.fail_next("HEAD", "/blobs/", 429)
    assert client.blob_exists("app", "sha256:" + "2" * 64) is False
    assert sleeps == [7.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405])
def test_4xx_is_never_retried(client, fake, sleeps, status):
    fake.fail_next("PUT", "/manifests/", status, times=5)
    with pytest.raises(RegistryError) as e:
        client.put_manifest("app", "v1", b"{}", OCI_MANIFEST)
    assert e.value.status == status
    assert len(fake.log) == 1 and sleeps == []


def test_retries_give_up_after_the_limit_with_the_count_in_the_message(fake, sleeps):
    c = RegistryClient("reg.test", insecure=True, transport=httpx.MockTransport(fake), sleep=sleeps.append, retries=3)
    fake.fail_next("GET", "/manifests/", 503, times=10)
    with pytest.raises(RegistryError) as e:
        c.get_manifest("app", "v1")
    assert "after 4 attempts" in str(e.value) and "check its logs" in str(e.value)
    assert e.value.status == 503 and len(sleeps) == 3


def test_dropped_connection_after_the_registry_answered_is_retried(client, fake, sleeps):
    client.blob_exists("app", "sha256:" + "3" * 64)  # the registry has answered once
    fake.fail_next("GET", "/manifests/", httpx.ReadError("connection reset"), times=2)
    fake.fail_next("GET", "/manifests/", httpx.ConnectError("connection refused"), times=1)
    fake.manifests["v1"] = (b"{}", OCI_MANIFEST)
    assert client.get_manifest("app", "v1")[0] == b"{}"
    assert len(sleeps) == 3


def test_a_registry_never_reached_fails_fast_with_what_to_check(fake, sleeps):
    def refuse(req):
        raise httpx.ConnectError("[Errno 111] Connection refused")
    c = RegistryClient("127.0.0.1:5999", transport=httpx.MockTransport(refuse), sleep=sleeps.append)
    with pytest.raises(RegistryError) as e:
        c.blob_exists("app", "sha256:" + "4" * 64)
    msg = str(e.value)
    assert "cannot reach registry 127.0.0.1:5999" in msg and "is the registry running?" in msg
    assert "http://127.0.0.1:5999/v2/" in msg
    assert len(sleeps) == 1  # one quick second try, not a minute of backoff


def test_tls_failure_suggests_insecure_for_a_plain_http_registry(sleeps):
    def tls(req):
        raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
    c = RegistryClient("reg.example.com:5000", transport=httpx.MockTransport(tls), sleep=sleeps.append)
    assert c.base == "https://reg.example.com:5000"
    with pytest.raises(RegistryError, match="image.insecure = true"):
        c.manifest_exists("app", "v1")


def test_loopback_is_http_and_other_hosts_https_unless_told():
    assert RegistryClient("127.0.0.1:5000").base == "http://127.0.0.1:5000"
    assert RegistryClient("localhost:5000").base == "http://localhost:5000"
    assert RegistryClient("reg.example.com").base == "https://reg.example.com"
    assert RegistryClient("reg.example.com", insecure=True).base == "http://reg.example.com"
    assert RegistryClient("127.0.0.1:5000", insecure=False).base == "https://127.0.0.1:5000"


# --- manifests and blobs ---------------------------------------------------------------------

def test_manifest_by_digest_is_checked_against_its_bytes(client, fake):
    data = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
    fake.manifests[sha256(data)] = (data, OCI_MANIFEST)
    fake.manifests["sha256:" + "5" * 64] = (data, OCI_MANIFEST)  # a lying registry
    assert client.get_manifest("app", sha256(data)) == (data, OCI_MANIFEST, sha256(data))
    with pytest.raises(RegistryError, match="altered"):
        client.get_manifest("app", "sha256:" + "5" * 64)


def test_missing_base_image_says_no_such_image(client):
    with pytest.raises(RegistryError) as e:
        client.get_manifest("ferry/python", "3.99")
    msg = str(e.value)
    assert "no such image reg.test:5000/ferry/python:3.99" in msg and "HTTP 404" in msg
    assert "skopeo list-tags" in msg


def test_blob_download_is_verified(client, fake):
    b = blob(5000)
    fake.blobs[b.digest] = b.data
    assert client.get_blob("app", b.digest) == b.data
    with client.open_blob("app", b.digest) as chunks:
        assert b"".join(chunks) == b.data
    fake.blobs["sha256:" + "6" * 64] = b"tampered"
    with pytest.raises(RegistryError, match="altered"):
        client.get_blob("app", "sha256:" + "6" * 64)


def test_manifest_info_and_exists(client, fake):
    fake.manifests["v1"] = (b'{"a":1}', OCI_MANIFEST)
    info = client.manifest_info("app", "v1")
    assert (info.digest, info.media_type, info.size) == (sha256(b'{"a":1}'), OCI_MANIFEST, 7)
    assert client.manifest_exists("app", "nope") is False


# --- messages (pure) -------------------------------------------------------------------------

def test_401_message_names_registry_repository_status_and_the_fix():
    e = error_for_response("127.0.0.1:5001", "hello", "push manifest v1 to", 401,
                           b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                           www_authenticate='Basic realm="r"', action="push")
    assert isinstance(e, AuthError)
    s = str(e)
    assert "127.0.0.1:5001" in s and "hello" in s and "HTTP 401" in s and "UNAUTHORIZED" in s
    assert "credentials missing or wrong: set FERRY_REGISTRY_USERNAME/FERRY_REGISTRY_PASSWORD" in s
    assert "docker login 127.0.0.1:5001" in s


def test_insufficient_scope_and_403_say_no_push_right():
    e = error_for_response("r", "team/app", "upload blob x to", 401, b"",
                           www_authenticate='Bearer realm="t",error="insufficient_scope"', action="push",
                           auth="reader (from env)")
    assert "have no push right on team/app" in str(e)
    e = error_for_response("r", "team/app", "upload blob x to", 403, b"", action="push", auth="ci")
    assert isinstance(e, AuthError) and "no push right on team/app" in str(e) and "HTTP 403" in str(e)


def test_other_statuses_say_what_to_do():
    assert "create it" in str(error_for_response("r", "x", "push", 404,
                                                 b'{"errors":[{"code":"NAME_UNKNOWN"}]}', kind="upload"))
    assert "read-only" in str(error_for_response("r", "x", "push", 405))
    assert "rate-limiting" in str(error_for_response("r", "x", "push", 429))
    assert "check its logs" in str(error_for_response("r", "x", "push", 502))
    assert "corrupt" in str(error_for_response("r", "x", "push", 400, b'{"errors":[{"code":"DIGEST_INVALID"}]}'))


def test_backoff_grows_is_capped_and_retry_after_wins():
    mid = lambda: 0.5  # noqa: E731 (no jitter)
    assert [backoff_delay(i, 0.2, rand=mid) for i in range(4)] == [0.2, 0.4, 0.8, 1.6]
    assert backoff_delay(20, 0.2, rand=mid) == 10.0
    assert backoff_delay(0, 0.2, retry_after=3) == 3
    assert backoff_delay(0, 0.2, retry_after=3600) == MAX_RETRY_AFTER
    assert parse_retry_after("12") == 12.0 and parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
