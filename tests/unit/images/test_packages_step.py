"""The system packages step without apt or a registry: its key, what the solver is told is
installed, unknown names, the layer's files, the labels a fresh machine reads back."""

from __future__ import annotations

import pytest

from ferry.errors import BuildError
from ferry.images import debian, rootfs
from ferry.images.basefacts import BaseFacts
from ferry.images.cache import Cache
from ferry.images.oci import OCI_LAYER_GZIP, Blob, Platform
from ferry.images.packages import PackagesStep, status_records, suggest, tree_of, unknown_error
from ferry.images.steps import StepContext

NAMES = ["libpq5", "libpq-dev", "libpqxx-6.4", "sqlite3", "libsqlite3-0", "python3", "ffmpeg"]


def step(names=("sqlite3", "libpq5"), facts=BaseFacts(suite="bookworm", debian=True), **kw) -> PackagesStep:
    args = dict(architecture="amd64", suite="bookworm", base_chain="sha256:base", mtime=1)
    args.update(kw)
    return PackagesStep(names, facts=lambda: facts, **args)


def test_the_key_is_suite_packages_architecture_and_base():
    a = step()
    assert a.key() == step(names=("libpq5", "sqlite3", "sqlite3")).key()  # a set: order and repeats do not matter
    for other in (step(names=("sqlite3",)), step(architecture="arm64"), step(suite="trixie"),
                  step(base_chain="sha256:other"), step(mtime=2)):
        assert other.key() != a.key()


def test_an_unknown_name_suggests_close_matches():
    assert suggest("libpq", NAMES)[:2] == ["libpq5", "libpq-dev"]
    e = unknown_error(["libpq", "sqlite"], NAMES, "bookworm", "amd64")
    assert e.message.startswith("image.packages: 'libpq' (did you mean libpq5, libpq-dev")
    assert "'sqlite' (did you mean sqlite3" in e.message and "are not Debian bookworm packages for amd64" in e.message
    assert unknown_error(["nothere"], NAMES, "bookworm", "amd64").message == \
        "image.packages: 'nothere' is not a Debian bookworm package for amd64"


def test_the_solver_is_told_what_the_base_has_plus_what_no_image_needs():
    shown = []

    def show(names):
        shown.append(names)
        return [{"Package": n, "Version": "9", "Architecture": "amd64", "Multi-Arch": "same"} for n in names]
    # ferry's base: names and versions only (its annotation)
    ferry = BaseFacts(installed=({"Package": "libc6", "Version": "2.36-9"},), ferry=True)
    records = status_records(ferry, show, "amd64", ["sqlite3"])
    assert [(r["Package"], r["Version"], r["Architecture"]) for r in records] == [
        ("debconf", "9", "amd64"), ("dpkg", "9", "amd64"), ("libc6", "2.36-9", "amd64")]
    assert records[2]["Multi-Arch"] == "same" and shown == [["debconf", "dpkg", "libc6"]]
    # a foreign base's dpkg status is complete: nothing to ask apt, and dpkg asked for is not assumed
    shown.clear()
    full = BaseFacts(installed=({"Package": "libc6", "Version": "2.36-9", "Architecture": "amd64"},
                                {"Package": "debconf", "Version": "1.5", "Architecture": "all"}))
    records = status_records(full, show, "amd64", ["dpkg"])
    assert [r["Package"] for r in records] == ["debconf", "libc6"] and shown == []


def test_the_layer_has_the_packages_files_trimmed_and_a_status_d_record_each():
    pkg = debian.Package("sqlite3", "3.40.1-2", "amd64")
    entries = [rootfs.Entry.file("usr/bin/sqlite3", b"\x7fELF", 0o755),
               rootfs.Entry.file("usr/share/doc/sqlite3/copyright", b"(c)"),
               rootfs.Entry.file("usr/share/doc/sqlite3/changelog.gz", b"..."),
               rootfs.Entry.file("usr/share/man/man1/sqlite3.1.gz", b"...")]
    tree = tree_of([(pkg, entries, "Package: sqlite3\nVersion: 3.40.1-2\n")])
    assert {p for p, e in tree.items() if e.kind == "file"} == {
        "usr/bin/sqlite3", "usr/share/doc/sqlite3/copyright", "var/lib/dpkg/status.d/sqlite3"}
    assert tree["var/lib/dpkg/status.d/sqlite3"].data == b"Package: sqlite3\nStatus: install ok installed\nVersion: 3.40.1-2\n"
    assert tree["usr/bin/sqlite3"].mode == 0o755


def test_labels_carry_the_resolution_back_to_a_fresh_machine():
    s = step()
    meta = {"suite": "bookworm", "packages": [{"name": "sqlite3", "version": "3.40.1-2"}, {"name": "libpq5", "version": "15.20"}]}
    labels = s.labels("k", "sha256:l", meta)
    assert labels == {"dev.ferry.packages.key": "k", "dev.ferry.packages.layer": "sha256:l",
                      "dev.ferry.packages.inventory": "libpq5=15.20,sqlite3=3.40.1-2"}
    back = s.meta_from_labels(labels)
    assert [(p["name"], p["version"]) for p in back["packages"]] == [("libpq5", "15.20"), ("sqlite3", "3.40.1-2")]
    assert s.meta_from_labels({}) is None and s.meta_from_labels({"dev.ferry.packages.inventory": "broken"}) is None
    layer = s.layer("k", Blob("sha256:l", 1, OCI_LAYER_GZIP), "sha256:d", "registry", back)
    assert (layer.kind, layer.created_by, layer.files) == ("packages", "ferry: Debian packages (libpq5, sqlite3)", frozenset())


@pytest.mark.parametrize("facts, message", [
    (BaseFacts(debian=False), "is not Debian-based, so Debian packages cannot be added to it"),
    (BaseFacts(debian=True), "cannot tell which Debian release"),
])
def test_a_base_that_is_not_debian_or_of_no_known_release_is_refused_before_apt(tmp_path, facts, message):
    s = step(facts=facts, suite=None, base_ref="example/alpine")
    ctx = StepContext(Platform(), Cache(tmp_path / "c"), "r")
    with pytest.raises(BuildError, match=message):
        s.make(ctx, s.key(), (), tmp_path)
    assert not (tmp_path / "c" / "apt").exists()  # apt never ran
