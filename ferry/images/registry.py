"""A client for the OCI distribution API: the only code that talks HTTP to a registry.

One ``RegistryClient`` per registry host. Every call names the repository; the client asks
for a token scoped to it (``ferry.images.auth``), retries what is safe to retry, and turns
every refusal into a ``RegistryError`` / ``AuthError`` that names the registry, the
repository, the HTTP status and what to do.

Retries (exponential backoff, ``Retry-After`` honoured) cover 5xx, 429 and dropped
connections, and only idempotent steps: HEAD/GET, manifest PUT (same bytes, same digest) and a
*whole* blob upload, which restarts from a fresh upload session, never from the middle of one
the registry may have half-written. 4xx is never retried: the same request gets the same no.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import ssl
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable, Iterator

import httpx

from .. import __version__
from ..errors import AuthError, RegistryError
from ..progress import NULL, Progress, human_bytes
from .auth import RegistryAuth, login_hint, merge_scopes, parse_www_authenticate, repo_scope
from .oci import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, Blob, Reference, sha256

MANIFEST_ACCEPT = (*MANIFEST_TYPES, *INDEX_TYPES)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 10.0
MAX_RETRY_AFTER = 30.0
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class TransientError(RegistryError):
    """A failure worth retrying: 5xx, 429, or the connection dropped."""

    def __init__(self, message, hint=None, status=None, retry_after: float | None = None, connect: bool = False):
        super().__init__(message, hint, status)
        self.retry_after = retry_after
        self.connect = connect  # never reached the server (refused, DNS, TLS handshake)


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    media_type: str
    size: int


# --- error messages (pure) --------------------------------------------------------------------

def oci_errors(body: bytes) -> list[tuple[str, str]]:
    """(code, message) pairs from a registry's error body ``{"errors": [...]}``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(doc, dict):
        return []
    out = []
    for e in doc.get("errors") or []:
        if isinstance(e, dict):
            out.append((str(e.get("code", "")), str(e.get("message", ""))))
    return out


def error_for_response(registry: str, repo: str, what: str, status: int, body: bytes = b"", *,
                       www_authenticate: str | None = None, action: str = "pull", kind: str = "",
                       ref: str | None = None, auth: str = "anonymous") -> RegistryError:
    """The error for a registry's final answer to one request.

    ``what`` says what ferry was doing ("push blob sha256:ab12… to"), ``action`` is the right
    it needed (pull / push / delete), ``kind`` what was addressed (manifest / blob / upload).
    """
    errs = oci_errors(body)
    codes = {c for c, _ in errs}
    detail = "; ".join(f"{c}: {m}" if m else c for c, m in errs)[:300]
    target = f"{registry}/{repo}" + (f":{ref}" if ref and not ref.startswith("sha256:") else f"@{ref}" if ref else "")
    head = f"registry {registry}: {what} {repo} failed: HTTP {status}" + (f" ({detail})" if detail else "")
    if status == 401:
        challenges = parse_www_authenticate(www_authenticate)
        insufficient = any(c.params.get("error") == "insufficient_scope" for c in challenges)
        if insufficient and auth != "anonymous":
            return AuthError(head, f"the credentials of {auth} have no {action} right on {repo}: "
                                   f"grant it, or use other credentials", status=status)
        return AuthError(head, login_hint(registry) + ("" if auth == "anonymous" else f" (sent: {auth})"),
                         status=status)
    if status == 403:
        return AuthError(head, f"the credentials ({auth}) have no {action} right on {repo}: "
                               f"grant it, or use other credentials", status=status)
    if status == 404:
        if kind == "manifest":
            return RegistryError(f"no such image {target}: registry {registry} answered HTTP 404"
                                 + (f" ({detail})" if detail else ""),
                                 f"check the name and tag (image.base / image.repository in ferry.toml); "
                                 f"list tags with `skopeo list-tags docker://{registry}/{repo}`", status=status)
        if "NAME_UNKNOWN" in codes:
            return RegistryError(head, f"repository {repo} does not exist on {registry}: create it "
                                       f"(ECR needs the repository created first: the Pulumi stack does)", status=status)
        if kind == "blob":
            return RegistryError(head, f"the blob is gone from {registry}/{repo}: the image that named it was "
                                       f"deleted or garbage-collected; rebuild from a base that exists", status=status)
        if kind == "upload":
            return RegistryError(head, "the registry forgot the upload session (restarted?); rerun to start afresh",
                                 status=status)
        return RegistryError(head, f"is {registry} a registry (does /v2/ answer)?", status=status)
    if status == 405:
        return RegistryError(head, f"{registry} does not allow this: it is read-only, or deletes are disabled "
                                   f"(storage.delete.enabled)", status=status)
    if status == 413:
        return RegistryError(head, "the registry limits request size: push with a chunk size (chunked upload)",
                             status=status)
    if status == 429:
        return RegistryError(head, "the registry is rate-limiting: wait a minute and rerun "
                                   "(the push resumes where it stopped)", status=status)
    if status >= 500:
        return RegistryError(head, "the registry is failing: check its logs; rerun once it is healthy "
                                   "(the push resumes where it stopped)", status=status)
    if codes & {"DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "SIZE_INVALID"}:
        return RegistryError(head, "the uploaded bytes do not match their digest: the local cache may be "
                                   "corrupt; clear it (.ferry/cache) and rebuild", status=status)
    if codes & {"MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED"}:
        return RegistryError(head, "the registry rejected the manifest (a blob it names is missing, or a "
                                   "media type it does not support)", status=status)
    if codes & {"NAME_INVALID", "TAG_INVALID"}:
        return RegistryError(head, "repository names are lower-case [a-z0-9._/-]; tags [A-Za-z0-9_.-], "
                                   "at most 128 characters", status=status)
    return RegistryError(head, "the registry refused the request as shown; this is not retried", status=status)


def unreachable_error(registry: str, repo: str, what: str, exc: Exception, scheme: str) -> RegistryError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and ("SSL" in text or "TLS" in text or "certificate" in text.lower()):
        hint = (f"{registry} did not speak TLS as expected: if it serves plain HTTP set image.insecure = true; "
                "if its certificate is private, add the CA to SSL_CERT_FILE")
    elif isinstance(exc, httpx.TimeoutException):
        hint = f"is the registry overloaded or the address wrong? check `curl {scheme}://{registry}/v2/`"
    else:
        hint = (f"is the registry running? check the host and port in ferry.toml and "
                f"`curl {scheme}://{registry}/v2/` (locally: `ferry local up`)")
    return RegistryError(f"cannot reach registry {registry} ({what} {repo}): {text}", hint)


def backoff_delay(attempt: int, base: float, retry_after: float | None = None, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential, jittered, capped;
    a server's Retry-After wins (capped so a bad header cannot hang a build)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
    d = min(base * (2 ** attempt), MAX_BACKOFF)
    return d * (0.75 + 0.5 * rand())


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # the HTTP-date form: fall back to our own backoff


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class RegistryClient:
    """``RegistryClient("127.0.0.1:5000")``: HTTP for loopback (or ``insecure=True``), HTTPS
    otherwise. ``insecure=None`` decides from the host; ``False`` forces HTTPS."""

    def __init__(self, registry: str, *, auth: RegistryAuth | None = None, insecure: bool | None = None,
                 progress: Progress | None = None, retries: int = 5, backoff: float = 0.2,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, verify: bool | str = True):
        self.registry = registry
        self.auth = auth or RegistryAuth()
        loopback = Reference(registry, "_").insecure
        self.insecure = loopback if insecure is None else insecure
        self.scheme = "http" if self.insecure else "https"
        self.base = f"{self.scheme}://{registry}"
        self.progress = progress or NULL
        self.retries = max(0, retries)
        self.backoff = backoff
        self._sleep = sleep
        self._reached = False
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            # loopback must never go through the machine's HTTP proxy; remote registries may need it
            trust_env=not loopback,
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            headers={"User-Agent": f"ferry/{__version__}"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base!r}, auth={self.auth.describe()})"

    # --- plumbing --------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    def _fetch_for_auth(self, method: str, url: str, **kw) -> httpx.Response:
        """What the authenticator uses to reach the token server (same client, same timeouts)."""
        try:
            return self._http.request(method, url, **kw)
        except httpx.TransportError as e:
            raise RegistryError(f"cannot reach the token server {url} of registry {self.registry}: {e}",
                                "is the token server running? its address is the registry's auth.token.realm") from None

    def _call(self, method: str, path: str, *, repo: str, what: str, scopes: tuple[str, ...],
              action: str = "pull", kind: str = "", ref: str | None = None, ok: Iterable[int] = (200,),
              allow: Iterable[int] = (), params=None, headers: dict | None = None,
              body: Callable[[], bytes | Iterator[bytes]] | None = None, stream: bool = False,
              follow_redirects: bool = False) -> httpx.Response:
        """One request, authenticated (answering one 401 challenge), no retry. Statuses in
        ``ok`` and ``allow`` are returned; retryable failures raise TransientError; the rest
        raise the error that says what to do."""
        url = httpx.URL(self._url(path))
        if params:
            # merged by hand: httpx replaces a URL's query with `params`, and an upload
            # Location carries state (distribution's `_state`) in its query
            url = url.copy_merge_params(params)
        for attempt in range(2):
            hdrs = dict(headers or {})
            hdrs.update(self.auth.headers(scopes))
            req = self._http.build_request(method, url, headers=hdrs,
                                           content=body() if body is not None else None)
            try:
                resp = self._http.send(req, stream=stream, follow_redirects=follow_redirects)
            except httpx.TransportError as e:
                connect = isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                err = unreachable_error(self.registry, repo, what, e, self.scheme)
                raise TransientError(err.message, err.hint, connect=connect) from e
            self._reached = True
            if resp.status_code == 401 and attempt == 0:
                challenge = resp.headers.get("www-authenticate")
                if stream:
                    resp.read()
                if self.auth.authenticate(challenge, scopes, fetch=self._fetch_for_auth, registry=self.registry,
                                          sent=hdrs.get("Authorization")):
                    resp.close()
                    continue
            break
        status = resp.status_code
        if status in ok or status in allow:
            return resp
        content = resp.read() if stream else resp.content
        resp.close()
        err = error_for_response(self.registry, repo, what, status, content,
                                 www_authenticate=resp.headers.get("www-authenticate"), action=action,
                                 kind=kind, ref=ref, auth=self.auth.describe())
        if status in RETRY_STATUSES:
            raise TransientError(err.message, err.hint, status=status,
                                 retry_after=parse_retry_after(resp.headers.get("retry-after")))
        raise err

    def _retrying(self, fn: Callable[[], object], what: str):
        """Run an idempotent step, again after a transient failure, with backoff."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except TransientError as e:
                last = attempt >= self.retries
                # a registry never reached at all is most likely down or misnamed: say so fast
                # instead of backing off for seconds; once it has answered, a refused connection
                # is a restart worth waiting for.
                if e.connect and not self._reached and attempt >= 1:
                    last = True
                if last:
                    if attempt:
                        raise RegistryError(f"{e.message} (after {attempt + 1} attempts)", e.hint,
                                            status=e.status) from None
                    raise RegistryError(e.message, e.hint, status=e.status) from None
                delay = backoff_delay(attempt, self.backoff, e.retry_after)
                why = f"HTTP {e.status}" if e.status else "connection failed"
                self.progress.warn(f"{self.registry}: {what}: {why}; retrying in {delay:.1f}s "
                                   f"(attempt {attempt + 2} of {self.retries + 1})")
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        return self._retrying(lambda: self._call(method, path, **kw), kw.get("what", method))

    # --- base ------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: is this a registry, reachable, and do our credentials work there?"""
        self._request("GET", "/v2/", repo="", what="check", scopes=(), allow=())

    # --- blobs -----------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        r = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo, what=f"check blob {_short(digest)} in",
                          scopes=(repo_scope(repo, "pull"),), kind="blob", allow=(404,), follow_redirects=True)
        return r.status_code == 200

    def get_blob(self, repo: str, digest: str) -> bytes:
        def once() -> bytes:
            with self._open_blob(repo, digest) as chunks:
                return b"".join(chunks)
        return self._retrying(once, f"download blob {_short(digest)}")

    def open_blob(self, repo: str, digest: str) -> ContextManager[Iterator[bytes]]:
        """Stream a blob: ``with client.open_blob(repo, d) as chunks: for c in chunks: ...``.
        The digest is checked when the stream ends (a mismatch raises RegistryError). The
        connection is opened with retries; a failure mid-stream is the caller's to retry."""
        ctx = None

        def opener():
            nonlocal ctx
            ctx = self._open_blob(repo, digest)
            return ctx.__enter__()
        chunks = self._retrying(opener, f"download blob {_short(digest)}")
        return _Entered(ctx, chunks)

    @contextmanager
    def _open_blob(self, repo: str, digest: str):
        # registries may redirect blob GETs to object storage; httpx drops Authorization on a
        # redirect to another origin, so credentials never leak to the storage host
        resp = self._call("GET", f"/v2/{repo}/blobs/{digest}", repo=repo, what=f"download blob {_short(digest)} from",
                          scopes=(repo_scope(repo, "pull"),), kind="blob", stream=True, follow_redirects=True)
        try:
            yield _verified(resp, digest, f"{self.registry}/{repo}", self.registry, repo)
        finally:
            resp.close()

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount: True if the registry now has the blob in ``repo`` without
        any bytes sent (201); False if it declined (202: the session it opened is cancelled)."""
        what = f"mount blob {_short(digest)} from {from_repo} into"
        r = self._request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, what=what, action="push", kind="upload",
                          scopes=merge_scopes((repo_scope(repo, "pull", "push"), repo_scope(from_repo, "pull"))),
                          params={"mount": digest, "from": from_repo}, ok=(201, 202))
        if r.status_code == 201:
            return True
        self._cancel_upload(repo, r)
        return False

    def _cancel_upload(self, repo: str, resp: httpx.Response) -> None:
        loc = resp.headers.get("location")
        if not loc:
            return
        try:
            self._call("DELETE", str(resp.url.join(loc)), repo=repo, what="cancel upload to", action="push",
                       kind="upload", scopes=(repo_scope(repo, "pull", "push"),), ok=(200, 202, 204), allow=(404,))
        except RegistryError:
            pass  # an abandoned session expires on its own; not worth failing the push for

    def upload_blob(self, repo: str, blob: Blob, chunk_size: int | None = None) -> int:
        """Upload a blob with local content; returns the bytes sent. Monolithic (POST + PUT)
        when ``chunk_size`` is None or the blob is small, else chunked (PATCH with
        Content-Range). Digest and size are checked."""
        if not blob.local:
            raise RegistryError(f"blob {blob.digest} has no local content to upload to {self.registry}/{repo}",
                                "upload it from its source registry (upload_stream), or rebuild to recreate it")
        return self.upload_stream(repo, blob.digest, blob.size, lambda: _nullcontext(blob.chunks()), chunk_size)

    def upload_stream(self, repo: str, digest: str, size: int,
                      open_chunks: Callable[[], ContextManager[Iterable[bytes]]], chunk_size: int | None = None) -> int:
        """Upload bytes that ``open_chunks()`` yields (a local file, or another registry's
        stream); a retry reopens them and starts a fresh upload session."""
        return self._retrying(lambda: self._upload_once(repo, digest, size, open_chunks, chunk_size),
                              f"upload blob {_short(digest)}")

    def _upload_once(self, repo, digest, size, open_chunks, chunk_size) -> int:
        scopes = (repo_scope(repo, "pull", "push"),)
        what = f"upload blob {_short(digest)} to"
        kw = dict(repo=repo, what=what, scopes=scopes, action="push", kind="upload")
        start = self._call("POST", f"/v2/{repo}/blobs/uploads/", ok=(202,), **kw)
        loc = _location(start)
        h = hashlib.sha256()
        sent = 0
        try:
            with open_chunks() as chunks:
                if chunk_size is None or size <= chunk_size:
                    def body():
                        nonlocal sent
                        for c in chunks:
                            h.update(c)
                            sent += len(c)
                            if sent > size:
                                break
                            yield c
                        # checked before the body ends, so a wrong digest is never committed
                        # (and a wrong length never becomes an HTTP protocol error to retry)
                        _check_digest(h, sent, digest, size, self.registry, repo)
                    resp = self._call("PUT", loc, params={"digest": digest}, ok=(201,),
                                      headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                                      body=body, **kw)
                else:
                    for piece in _rechunk(chunks, chunk_size):
                        h.update(piece)
                        end = sent + len(piece) - 1
                        resp = self._call("PATCH", loc, ok=(202,), body=lambda p=piece: p, headers={
                            "Content-Type": "application/octet-stream", "Content-Length": str(len(piece)),
                            "Content-Range": f"{sent}-{end}"}, **kw)
                        sent += len(piece)
                        loc = _location(resp, loc)
                    # check before the final PUT: a wrong digest must not be committed
                    _check_digest(h, sent, digest, size, self.registry, repo)
                    resp = self._call("PUT", loc, params={"digest": digest}, ok=(201,),
                                      headers={"Content-Length": "0"}, **kw)
        except RegistryError:
            self._cancel_upload(repo, start)
            raise
        echoed = resp.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise RegistryError(f"registry {self.registry} stored blob {echoed} for {digest} in {repo}",
                                "the registry or a proxy altered the bytes; check it")
        return sent

    # --- manifests -------------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str, accept: Iterable[str] = MANIFEST_ACCEPT) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index, by tag or digest."""
        r = self._request("GET", f"/v2/{repo}/manifests/{ref}", repo=repo, what=f"read manifest {ref} of",
                          scopes=(repo_scope(repo, "pull"),), kind="manifest", ref=ref,
                          headers={"Accept": ", ".join(accept)})
        data = r.content
        media_type = r.headers.get("content-type", "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "application/octet-stream"):
            try:
                media_type = json.loads(data).get("mediaType") or media_type
            except (ValueError, AttributeError):
                pass
        digest = sha256(data)
        if DIGEST_RE.match(ref) and digest != ref:
            raise RegistryError(f"registry {self.registry} returned a manifest for {repo}@{ref} whose digest is {digest}",
                                "the registry or a proxy altered it; do not use this image")
        return data, media_type, digest

    def manifest_info(self, repo: str, ref: str, accept: Iterable[str] = MANIFEST_ACCEPT) -> ManifestInfo | None:
        """HEAD a manifest: its digest, media type and size, or None if there is none."""
        r = self._request("HEAD", f"/v2/{repo}/manifests/{ref}", repo=repo, what=f"check manifest {ref} of",
                          scopes=(repo_scope(repo, "pull"),), kind="manifest", ref=ref, allow=(404,),
                          headers={"Accept": ", ".join(accept)})
        if r.status_code == 404:
            return None
        digest = r.headers.get("docker-content-digest")
        media_type = r.headers.get("content-type", "").split(";")[0].strip()
        size = int(r.headers.get("content-length") or 0)
        if not digest or not size:  # some registries answer HEAD sparsely: ask for the body
            data, media_type, digest = self.get_manifest(repo, ref, accept)
            size = len(data)
        return ManifestInfo(digest, media_type, size)

    def manifest_exists(self, repo: str, ref: str) -> bool:
        return self.manifest_info(repo, ref) is not None

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """PUT a manifest by tag or by digest; returns its digest."""
        digest = sha256(data)
        if DIGEST_RE.match(ref) and ref != digest:
            raise RegistryError(f"manifest bytes have digest {digest}, not {ref}", "this is a bug in the caller")
        r = self._request("PUT", f"/v2/{repo}/manifests/{ref}", repo=repo, what=f"push manifest {ref} to",
                          scopes=(repo_scope(repo, "pull", "push"),), action="push", kind="manifest-put",
                          ok=(201, 200), headers={"Content-Type": media_type}, body=lambda: data)
        echoed = r.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise RegistryError(f"registry {self.registry} stored manifest {echoed} for {digest} in {repo}",
                                "the registry rewrote the manifest; it may not support this media type")
        return digest

    def put_manifest_response(self, repo: str, ref: str, data: bytes, media_type: str) -> httpx.Response:
        """Like put_manifest, but the response (its OCI-Subject header tells whether the
        registry indexed a referrer)."""
        return self._request("PUT", f"/v2/{repo}/manifests/{ref}", repo=repo, what=f"push manifest {ref} to",
                             scopes=(repo_scope(repo, "pull", "push"),), action="push", kind="manifest-put",
                             ok=(201, 200), headers={"Content-Type": media_type}, body=lambda: data)

    def delete_manifest(self, repo: str, ref: str) -> bool:
        """Delete a manifest (by digest; a tag is resolved first). False if it did not exist."""
        digest = ref
        if not DIGEST_RE.match(ref):
            info = self.manifest_info(repo, ref)
            if info is None:
                return False
            digest = info.digest
        r = self._request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo, what=f"delete manifest {ref} of",
                          scopes=(repo_scope(repo, "pull", "push", "delete"),),
                          action="delete", kind="manifest-delete", ok=(202, 200, 204), allow=(404,))
        return r.status_code != 404

    def list_tags(self, repo: str) -> list[str]:
        tags: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list"
        while path:
            r = self._request("GET", path, repo=repo, what="list tags of", scopes=(repo_scope(repo, "pull"),),
                              kind="tags", allow=(404,))
            if r.status_code == 404:
                return []
            tags += r.json().get("tags") or []
            nxt = r.links.get("next", {}).get("url")
            path = str(r.url.join(nxt)) if nxt else None
        return tags

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict] | None:
        """The OCI 1.1 referrers API: descriptors of manifests whose ``subject`` is ``digest``.
        None when the registry has no such API (distribution 2.8 answers 404)."""
        r = self._request("GET", f"/v2/{repo}/referrers/{digest}", repo=repo, what="list referrers in",
                          scopes=(repo_scope(repo, "pull"),), kind="referrers", allow=(404, 400, 405),
                          params={"artifactType": artifact_type} if artifact_type else None)
        ctype = r.headers.get("content-type", "")
        if r.status_code != 200 or OCI_INDEX not in ctype:
            return None
        manifests = r.json().get("manifests") or []
        if artifact_type:
            manifests = [m for m in manifests if m.get("artifactType") == artifact_type]
        return manifests


# --- helpers --------------------------------------------------------------------------------

class _Entered:
    """A context manager over an already-entered one (open_blob retries the entering)."""

    def __init__(self, ctx, value):
        self._ctx, self._value = ctx, value

    def __enter__(self):
        return self._value

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


@contextmanager
def _nullcontext(value):
    yield value


def _location(resp: httpx.Response, fallback: str | None = None) -> str:
    loc = resp.headers.get("location")
    if not loc:
        if fallback:
            return fallback
        raise RegistryError(f"registry at {resp.url.host} opened an upload without a Location header",
                            "this registry does not follow the OCI distribution API")
    return str(resp.url.join(loc))  # relative Locations are allowed by the spec


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buf = bytearray()
    for c in chunks:
        buf += c
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def _check_digest(h, sent: int, digest: str, size: int, registry: str, repo: str) -> None:
    got = "sha256:" + h.hexdigest()
    if got != digest or sent != size:
        raise RegistryError(f"blob {digest} ({size} bytes) read back as {got} ({sent} bytes) while uploading "
                            f"to {registry}/{repo}", "the local content changed or is corrupt: clear the cache "
                                                     "(.ferry/cache) and rebuild")


def _verified(resp: httpx.Response, digest: str, where: str, registry: str, repo: str) -> Iterator[bytes]:
    h = hashlib.sha256()
    n = 0
    try:
        for c in resp.iter_bytes(1 << 20):
            h.update(c)
            n += len(c)
            yield c
    except httpx.TransportError as e:
        raise TransientError(f"download of {digest} from {where} broke off after {human_bytes(n)}: {e}",
                             "rerun; the download starts again") from None
    got = "sha256:" + h.hexdigest()
    if got != digest:
        raise RegistryError(f"blob {digest} from {where} has digest {got}",
                            "the registry or a proxy altered it; do not use this image")
