"""An sdist-only dependency: built once into a pure wheel, cached by its hash, or refused by name."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import sdist
from ferry.images.pylock import Pick

WHERE = "linux/arm64 (CPython 3.11, manylinux_2_28_aarch64 wheels)"


class FakeBuild:
    """Stands in for `uv build --wheel`: writes a wheel named ``produces`` into --out-dir."""

    def __init__(self, produces: str | None, rc: int = 0, stderr: str = ""):
        self.produces, self.rc, self.stderr = produces, rc, stderr
        self.calls = []

    def __call__(self, cmd, **kw):
        self.calls.append((cmd, kw))
        if self.produces:
            out = Path(cmd[cmd.index("--out-dir") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / self.produces).write_bytes(b"PK wheel")
        return subprocess.CompletedProcess(cmd, self.rc, "", self.stderr)


@pytest.fixture
def pick(tmp_path) -> Pick:
    f = tmp_path / "lockdir" / "dkimpy-1.1.8.tar.gz"
    f.parent.mkdir()
    f.write_bytes(b"an sdist")
    return Pick("dkimpy", "1.1.8", "sdist", f.name, path=f.name, hashes={"sha256": hashlib.sha256(b"an sdist").hexdigest()})


def build(pick, tmp_path, runner, mtime=1700000000):
    return sdist.wheel_for(pick, uv="/bin/uv", cache_dir=tmp_path / "wheels", work=tmp_path / "work", env={"X": "1"},
                           mtime=mtime, where=WHERE, source="uv.lock", lock_dir=tmp_path / "lockdir", runner=runner)


def test_a_pure_sdist_is_built_once_and_cached_by_its_hash(pick, tmp_path):
    run = FakeBuild("dkimpy-1.1.8-py3-none-any.whl")
    whl = build(pick, tmp_path, run)
    sha = pick.hashes["sha256"]
    assert whl == tmp_path / "wheels" / sha / "dkimpy-1.1.8-py3-none-any.whl" and whl.read_bytes() == b"PK wheel"
    (cmd, kw), = run.calls
    assert cmd == ["/bin/uv", "build", "--wheel", "--no-progress", "--out-dir", str(tmp_path / "work" / f"built-{sha[:12]}"),
                   str(tmp_path / "lockdir" / "dkimpy-1.1.8.tar.gz")]
    assert kw["env"] == {"X": "1", "SOURCE_DATE_EPOCH": "1700000000"}
    again = FakeBuild(None)
    assert build(pick, tmp_path, again) == whl and again.calls == []


def test_an_sdist_that_compiles_code_is_refused_by_name(pick, tmp_path):
    run = FakeBuild("dkimpy-1.1.8-cp311-cp311-linux_x86_64.whl")
    with pytest.raises(BuildError) as e:
        build(pick, tmp_path, run)
    assert str(e.value).startswith("uv.lock: dkimpy 1.1.8 is published only as an sdist that compiles code: its wheel is "
                                   f"cp311-cp311-linux_x86_64, built for this machine, not for {WHERE}")
    assert "manylinux wheel" in e.value.hint
    assert not (tmp_path / "wheels").exists()  # nothing cached


def test_an_sdist_that_fails_to_build_is_named_with_the_builders_words(pick, tmp_path):
    run = FakeBuild(None, rc=1, stderr="error: command 'gcc' failed: No such file or directory\n"
                                       "  hint: https://pypi.example.test/simple has it\n")
    with pytest.raises(BuildError) as e:
        build(pick, tmp_path, run)
    msg = str(e.value)
    assert msg.startswith("uv.lock: dkimpy 1.1.8 is published only as an sdist, and it could not be built into a wheel "
                          "(it compiles code): error: command 'gcc' failed")
    assert "pypi.example.test" not in msg


def test_an_sdist_that_does_not_match_the_lock_is_never_built(pick, tmp_path):
    bad = Pick(pick.name, pick.version, "sdist", pick.filename, path=pick.path, hashes={"sha256": "0" * 64})
    run = FakeBuild("dkimpy-1.1.8-py3-none-any.whl")
    with pytest.raises(BuildError, match="uv.lock: the sdist dkimpy-1.1.8.tar.gz does not match its sha256 hash"):
        build(bad, tmp_path, run)
    assert run.calls == []
