"""Publishers' pure parts: the result document, the artifact (SBOM) manifest and its tags,
docker-archive / OCI layout documents, and the per-blob decision (skip / mount / upload /
stream) against a recording fake client."""

from __future__ import annotations

import io
import json
import tarfile
from contextlib import contextmanager

import pytest

from ferry.errors import BuildError, ConfigError
from ferry.images.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, Image, ImageIndex, Platform
from ferry.images.publish import (EMPTY_CONFIG, BlobOutcome, PublishResult, RegistryPublisher, add_referrer,
                                  artifact_manifest, artifact_tag, check_repository, check_tags, layer_report,
                                  referrers_tag, split_source, unique_blobs)
from ferry.images.publish_local import (docker_manifest_json, layout_entries, write_docker_archive)

SUBJECT = "sha256:" + "ab" * 32


def img(arch="amd64", layers=(b"base", b"deps", b"src"), source=None) -> Image:
    blobs = tuple(Blob.from_bytes(d, OCI_LAYER_GZIP, source=source) for d in layers)
    cfg = Blob.from_bytes(json.dumps({"architecture": arch, "os": "linux"}).encode(), OCI_CONFIG)
    return Image(config=cfg, layers=blobs, platform=Platform("linux", arch))


def test_publish_result_json_has_what_ferry_build_prints():
    r = PublishResult(reference="127.0.0.1:5000/hello@sha256:aa", digest="sha256:aa",
                      layers=({"digest": "sha256:l1", "size": 10, "uploaded": True, "mounted": False},),
                      bytes_uploaded=10, tags=("v1",))
    doc = r.to_json()
    assert doc["image"] == doc["reference"] == "127.0.0.1:5000/hello@sha256:aa"
    assert doc["digest"] == "sha256:aa" and doc["bytes_uploaded"] == 10 and doc["tags"] == ["v1"]
    assert doc["layers"] == [{"digest": "sha256:l1", "size": 10, "uploaded": True, "mounted": False}]
    json.dumps(doc)  # one JSON document


def test_layer_report_lists_each_layer_once_with_its_platforms_for_an_index():
    a, b = img("amd64", (b"base-amd", b"src")), img("arm64", (b"base-arm", b"src"))
    index = ImageIndex((a, b))
    outcomes = {x.digest: BlobOutcome("uploaded", x.size) for x in unique_blobs(index)}
    layers, config = layer_report(index, outcomes)
    assert [row["platforms"] for row in layers] == [["linux/amd64"], ["linux/amd64", "linux/arm64"], ["linux/arm64"]]
    assert config["digest"] == a.config.digest
    assert len(unique_blobs(index)) == 5  # the shared source layer once, two configs


def test_tags_and_repository_names_are_checked_before_anything_is_sent():
    assert check_tags(["v1", "latest", "v1"]) == ("v1", "latest")
    for bad in ["-x", "a:b", "x" * 129, ""]:
        with pytest.raises(ConfigError, match="not a valid image tag"):
            check_tags([bad])
    assert check_repository("team/hello-world") == "team/hello-world"
    for bad in ["Hello", "a//b", "/a", "a/"]:
        with pytest.raises(ConfigError):
            check_repository(bad)


def test_split_source():
    assert split_source("127.0.0.1:5000/ferry/python") == ("127.0.0.1:5000", "ferry/python")
    assert split_source(None) is None and split_source("noslash") is None


# --- artifacts ---------------------------------------------------------------------------------

def test_artifact_manifest_has_subject_artifact_type_and_the_empty_config():
    sbom = Blob.from_bytes(b'{"spdxVersion":"SPDX-2.3"}', "application/spdx+json")
    m = json.loads(artifact_manifest({"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 712},
                                     "application/spdx+json", sbom))
    assert m["mediaType"] == OCI_MANIFEST and m["artifactType"] == "application/spdx+json"
    assert m["subject"] == {"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 712}
    assert m["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "data": "e30=",
                           "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}
    assert m["layers"] == [sbom.descriptor()]
    assert EMPTY_CONFIG.data == b"{}"


def test_fallback_tags_follow_the_oci_scheme_and_cosigns_suffix():
    assert referrers_tag(SUBJECT) == "sha256-" + "ab" * 32
    assert artifact_tag(SUBJECT, "application/spdx+json") == "sha256-" + "ab" * 32 + ".sbom"
    assert artifact_tag(SUBJECT, "application/vnd.cyclonedx+json").endswith(".sbom")
    assert artifact_tag(SUBJECT, "application/vnd.in-toto+json").endswith(".att")
    assert len(artifact_tag(SUBJECT, "application/spdx+json")) <= 128


def test_add_referrer_appends_once():
    d1 = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 5, "artifactType": "a"}
    d2 = {**d1, "digest": "sha256:" + "2" * 64}
    first = add_referrer(None, d1)
    assert first == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d1]}
    assert add_referrer(first, d1) is None
    assert add_referrer(first, d2)["manifests"] == [d1, d2]


# --- docker-archive / OCI layout documents ----------------------------------------------------

def test_docker_manifest_json_names_blob_files():
    i = img()
    [m] = json.loads(docker_manifest_json(i, ["hello:v1"]))
    assert m["Config"] == "blobs/sha256/" + i.config.digest[7:]
    assert m["Layers"] == ["blobs/sha256/" + b.digest[7:] for b in i.layers]
    assert m["RepoTags"] == ["hello:v1"]


def test_layout_entries_replace_a_tag_and_keep_others():
    a, b = img(layers=(b"a",)), img(layers=(b"b",))
    entries = layout_entries(a, ["v1", "latest"])
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in entries] == ["v1", "latest"]
    entries = layout_entries(b, ["latest"], entries)
    by_tag = {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in entries}
    assert by_tag == {"v1": a.digest, "latest": b.digest}
    untagged = layout_entries(a, [], [])
    assert untagged == [{"mediaType": OCI_MANIFEST, "digest": a.digest, "size": a.size,
                         "platform": {"architecture": "amd64", "os": "linux"}}]
    assert layout_entries(a, [], untagged) == untagged


def test_docker_archive_is_reproducible_and_holds_both_layouts():
    i = img()

    @contextmanager
    def local(blob):
        yield blob.chunks()

    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        write_docker_archive(buf, i, ["hello:v1"], local)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    with tarfile.open(fileobj=io.BytesIO(outs[0])) as t:
        names = t.getnames()
        assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
        assert all(m.mtime == 0 and m.uid == 0 for m in t.getmembers())
        assert t.extractfile("blobs/sha256/" + i.digest[7:]).read() == i.manifest_bytes
        index = json.loads(t.extractfile("index.json").read())
        assert index["manifests"][0]["digest"] == i.digest


def test_index_needs_a_platform_choice_for_docker_formats():
    index = ImageIndex((img("amd64"), img("arm64", layers=(b"x",))))
    buf = io.BytesIO()

    @contextmanager
    def local(blob):
        yield blob.chunks()

    chosen, _ = write_docker_archive(buf, index, [], local, platform="linux/arm64")
    assert chosen.platform.architecture == "arm64"
    with pytest.raises(ConfigError, match="has no linux/s390x"):
        write_docker_archive(io.BytesIO(), index, [], local, platform="linux/s390x")


# --- the per-blob decision ----------------------------------------------------------------------

class RecordingClient:
    """Stands in for RegistryClient: records what the publisher asked for."""

    def __init__(self, registry="reg:5000", present=(), mountable=()):
        self.registry = registry
        self.present, self.mountable = set(present), set(mountable)
        self.calls: list[tuple] = []
        from ferry.progress import NULL
        self.progress = NULL

    def blob_exists(self, repo, digest):
        self.calls.append(("head", repo, digest))
        return digest in self.present

    def mount_blob(self, repo, digest, from_repo):
        self.calls.append(("mount", repo, digest, from_repo))
        return digest in self.mountable

    def upload_blob(self, repo, blob, chunk_size=None):
        self.calls.append(("upload", repo, blob.digest))
        return blob.size

    def upload_stream(self, repo, digest, size, open_chunks, chunk_size=None):
        self.calls.append(("stream", repo, digest))
        return size


def test_present_blob_is_skipped_after_one_head():
    b = Blob.from_bytes(b"x", OCI_LAYER_GZIP)
    c = RecordingClient(present={b.digest})
    assert RegistryPublisher(c, "app", source_clients=lambda r: None).push_blob(b).status == "exists"
    assert c.calls == [("head", "app", b.digest)]


def test_base_layer_on_the_same_registry_is_mounted_not_uploaded():
    b = Blob(digest="sha256:" + "c" * 64, size=9, media_type=OCI_LAYER_GZIP, source="reg:5000/ferry/python")
    c = RecordingClient(mountable={b.digest})
    o = RegistryPublisher(c, "app", source_clients=lambda r: None).push_blob(b)
    assert (o.status, o.mounted, o.sent, o.source) == ("mounted", True, 0, "ferry/python")
    assert c.calls[-1] == ("mount", "app", b.digest, "ferry/python")


def test_base_layer_elsewhere_is_streamed_and_local_content_uploaded():
    remote = Blob(digest="sha256:" + "d" * 64, size=9, media_type=OCI_LAYER_GZIP, source="ecr.example/python")
    c = RecordingClient()
    p = RegistryPublisher(c, "app", source_clients=lambda r: None)
    assert p.push_blob(remote).status == "uploaded"
    assert [x[0] for x in c.calls] == ["head", "stream"]  # no mount across registries
    local = Blob.from_bytes(b"src", OCI_LAYER_GZIP)
    assert p.push_blob(local).sent == 3 and c.calls[-1] == ("upload", "app", local.digest)


def test_a_blob_with_neither_content_nor_source_is_a_build_error():
    from ferry.images.publish import open_blob

    with pytest.raises(BuildError, match="no local content and no source"):
        open_blob(Blob(digest="sha256:" + "e" * 64, size=1, media_type="x"), lambda r: None)
