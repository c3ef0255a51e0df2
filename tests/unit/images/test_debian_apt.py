"""The Debian side of the base image: apt's output, sources, synthetic status, .deb reading."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import debian
from ferry.images.debian import Package, SourceEntry

SIMULATION = """\
Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  libc6 python3
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [arm64])
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64]) []
Inst libcrypt1 (1:4.4.33-2 Debian:12.15/oldstable [arm64])
Inst libkrb5-3 (1.20.1-2+deb12u5 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [arm64])
Inst tzdata (2025b-0+deb12u1 Debian-Security:12/oldstable-security [all])
Inst zlib1g:arm64 [1:1.2.12-1] (1:1.2.13.dfsg-1 Debian:12.15/oldstable [arm64])
Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64])
"""


def test_simulation_lists_each_unpacked_package_once_sorted_with_version_and_arch():
    pkgs = debian.parse_simulation(SIMULATION)
    assert [(p.name, p.version, p.architecture) for p in pkgs] == [
        ("gcc-12-base", "12.2.0-14+deb12u1", "arm64"),
        ("libc6", "2.36-9+deb12u14", "arm64"),
        ("libcrypt1", "1:4.4.33-2", "arm64"),
        ("libkrb5-3", "1.20.1-2+deb12u5", "arm64"),
        ("tzdata", "2025b-0+deb12u1", "all"),
        ("zlib1g", "1:1.2.13.dfsg-1", "arm64"),
    ]


def test_print_uris_gives_file_size_and_sha256_per_package():
    out = ("'http://mirror.invalid/debian/pool/main/libx/libxcrypt/libcrypt1_4.4.33-2_arm64.deb' "
           "libcrypt1_1%3a4.4.33-2_arm64.deb 90044 SHA256:EEA0AD76\n"
           "'http://mirror.invalid/debian/pool/main/t/tzdata/tzdata_2025b_all.deb' "
           "tzdata_2025b-0+deb12u1_all.deb 307832 SHA256:3254eb87\n")
    got = debian.parse_print_uris(out)
    assert got["libcrypt1"][1:] == ("libcrypt1_1%3a4.4.33-2_arm64.deb", 90044, "eea0ad76")
    assert got["tzdata"][1:] == ("tzdata_2025b-0+deb12u1_all.deb", 307832, "3254eb87")


def test_print_uris_refuses_a_weaker_hash_than_sha256():
    with pytest.raises(BuildError, match="MD5Sum"):
        debian.parse_print_uris("'http://m.invalid/a.deb' a_1_all.deb 10 MD5Sum:abcd\n")


DEB822 = """\
Types: deb
# a comment inside the stanza
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://mirror.invalid/debian
Suites: bookworm
Components: main
"""


def test_deb822_sources_keep_deb_entries_and_skip_source_ones():
    entries = debian.parse_deb822_sources(DEB822)
    assert entries == [
        SourceEntry("http://mirror.invalid/debian", ("bookworm", "bookworm-updates"), ("main",),
                    "/usr/share/keyrings/debian-archive-keyring.gpg"),
        SourceEntry("http://mirror.invalid/debian-security", ("bookworm-security",), ("main",),
                    "/usr/share/keyrings/debian-archive-keyring.gpg"),
    ]


def test_one_line_sources_read_options_and_ignore_comments():
    text = ("# deb http://old.invalid/debian buster main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian/ trixie main contrib\n"
            "deb-src http://mirror.invalid/debian trixie main\n")
    assert debian.parse_one_line_sources(text) == [
        SourceEntry("http://mirror.invalid/debian", ("trixie",), ("main", "contrib"), "/k.gpg")]


def test_private_sources_use_the_host_mirror_for_the_image_release():
    text = debian.debian_sources(debian.parse_deb822_sources(DEB822), "bookworm")
    assert text == (
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def test_a_host_on_another_release_still_builds_the_recipe_release():
    host = [SourceEntry("http://mirror.invalid/debian", ("trixie",), ("main",)),
            SourceEntry("http://mirror.invalid/debian-security", ("trixie-security",), ("main",))]
    text = debian.debian_sources(host, "bookworm")
    assert "Suites: bookworm bookworm-updates\n" in text
    assert "Suites: bookworm-security\n" in text
    assert "trixie" not in text


@pytest.mark.parametrize("suite", ["trixie", "forky"])
def test_a_bookworm_machine_builds_the_trixie_and_forky_bases_from_its_own_mirror(suite):
    text = debian.debian_sources(debian.parse_deb822_sources(DEB822), suite)
    assert text == (
        f"Types: deb\nURIs: http://mirror.invalid/debian\nSuites: {suite} {suite}-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        f"Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: {suite}-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def test_third_party_repositories_never_feed_the_image():
    host = [SourceEntry("https://download.docker.invalid/linux/debian", ("bookworm",), ("stable",)),
            SourceEntry("http://mirror.invalid/debian", ("bookworm",), ("main",))]
    text = debian.debian_sources(host, "bookworm")
    assert "docker" not in text and "http://mirror.invalid/debian" in text


def test_no_debian_source_is_a_clear_error():
    with pytest.raises(BuildError, match="no Debian archive") as e:
        debian.debian_sources([SourceEntry("http://x.invalid/repo", ("stable",), ("main",))],
                              "bookworm")
    assert "sources.list" in str(e.value)


def test_host_sources_are_read_from_both_formats(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://a.invalid/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text("deb http://b.invalid/x y main\n")
    entries = debian.read_host_sources((tmp_path / "sources.list", tmp_path / "sources.list.d"))
    assert [e.uri for e in entries] == ["http://a.invalid/debian", "http://mirror.invalid/debian",
                                        "http://mirror.invalid/debian-security"]


def test_synthetic_status_claims_packages_without_their_dependencies():
    records = [
        {"Package": "mawk", "Version": "1.3.4-3", "Architecture": "arm64", "Multi-Arch": "foreign",
         "Provides": "awk", "Depends": "libc6 (>= 2.34)"},
        {"Package": "debconf", "Version": "1.5.82", "Architecture": "all",
         "Provides": "debconf-2.0"},
    ]
    status = debian.synthetic_status(records)
    paragraphs = debian.parse_control(status)
    assert [p["Package"] for p in paragraphs] == ["debconf", "mawk"]
    assert paragraphs[1]["Status"] == "install ok installed"
    assert paragraphs[1]["Provides"] == "awk"
    assert all("Depends" not in p for p in paragraphs)


def test_apt_options_keep_all_state_private_to_the_architecture(tmp_path: Path):
    opts = debian.Apt(tmp_path / "arm64", "arm64", "bookworm").options()
    pairs = dict(o.split("=", 1) for o in opts[1::2])
    assert opts[0::2] == ["-o"] * len(pairs)
    assert pairs["APT::Architecture"] == "arm64"
    assert pairs["APT::Architectures"] == "arm64"
    assert pairs["APT::Install-Recommends"] == "false"
    for key in ("Dir::State", "Dir::State::status", "Dir::Cache", "Dir::Etc::SourceList",
                "Dir::Etc::SourceParts", "Dir::Etc::Preferences", "Dir::Etc::PreferencesParts"):
        assert pairs[key].startswith(str(tmp_path / "arm64")), key


@pytest.mark.parametrize("version,upstream", [
    ("3.11.2-6+deb12u9", "3.11.2"),
    ("1:1.2.13.dfsg-1", "1.2.13.dfsg"),
    ("1.21.23", "1.21.23"),
    ("2:1.0-2-3", "1.0-2"),
])
def test_upstream_version_drops_epoch_and_debian_revision(version, upstream):
    assert debian.upstream_version(version) == upstream


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def test_a_deb_is_read_in_python_control_and_data(tmp_path: Path):
    deb = tmp_path / "hello_1.0-1_all.deb"
    deb.write_bytes(_ar([
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", _tar({"./control": b"Package: hello\nVersion: 1.0-1\n"
                                 b"Description: hi\n there\n"})),
        ("data.tar.gz", _tar({"./usr/bin/hello": b"#!/bin/sh\n"})),
    ]))
    d = debian.Deb.open(deb)
    assert d.control["Package"] == "hello"
    assert d.control["Description"] == "hi\nthere"
    assert [m.name for m in d.data.getmembers()] == ["./usr/bin/hello"]


def test_a_file_that_is_not_a_deb_says_to_delete_it(tmp_path: Path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"<html>proxy error</html>")
    with pytest.raises(BuildError, match="delete"):
        debian.Deb.open(bad)


def test_the_lock_names_no_mirror_host():
    pkgs = [Package("libc6", "2.36-9", "arm64", "libc6_2.36-9_arm64.deb", 10, "ab" * 32)]
    text = debian.lock_json("arm64", pkgs)
    assert "http" not in text
    assert '"sha256": "' + "ab" * 32 in text


def test_a_machine_without_apt_gets_a_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get on it
    apt = debian.Apt(tmp_path / "amd64", "amd64", "bookworm")
    with pytest.raises(BuildError, match="apt-get is not installed") as e:
        apt._run("apt-get", "update")
    assert "image.base" in str(e.value)
