"""Reading the stack outputs for real: through an executable `pulumi` on PATH (the CLI is not
installable here, so a small stand-in script answers `stack output --json` exactly as the CLI
prints it) and from an exported file."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.aws.stack import read_outputs
from ferry.progress import Progress

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "aws"))
from test_aws_stack import OUTPUTS, make_config  # noqa: E402

FAKE_PULUMI = """#!/bin/sh
# stand-in for the Pulumi CLI: records its arguments and working directory, answers one stack
printf '%s\\n' "$PWD $*" >> "$(dirname "$0")/calls.log"
if [ "$1 $2 $3" = "stack output --json" ] && [ "$5 $6" = "--stack dev" ]; then
  cat "$(dirname "$0")/outputs.json"
  exit 0
fi
echo "error: no stack named '$6' found" >&2
exit 255
"""


@pytest.fixture
def pulumi_on_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "pulumi"
    exe.write_text(FAKE_PULUMI)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "outputs.json").write_text(json.dumps(OUTPUTS, indent=2))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_outputs_come_from_the_cli_on_path_run_in_the_projects_folder(tmp_path, pulumi_on_path):
    project = tmp_path / "project"
    project.mkdir()
    cfg = make_config(project, stack="dev")
    log = io.StringIO()
    out = read_outputs(cfg, progress=Progress(log))
    assert out.source == "pulumi stack output --stack dev"
    assert out.ssh_targets() == ("root@198.51.100.1", "root@198.51.100.2")
    assert (pulumi_on_path / "calls.log").read_text() == \
        f"{project} stack output --json --non-interactive --stack dev\n"
    assert "hosts from the Pulumi stack 'dev'" in log.getvalue()


def test_outputs_come_from_an_exported_file_when_there_is_no_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    export = tmp_path / "stack-outputs.json"
    export.write_text(json.dumps(OUTPUTS))
    cfg = make_config(tmp_path, stack="dev", stack_outputs="stack-outputs.json")
    log = io.StringIO()
    out = read_outputs(cfg, progress=Progress(log))
    assert out.source == f"file {export}"
    assert [h.target_group_arn for h in out.hosts] == [OUTPUTS["targetGroupArns"][0]] * 2
    assert f"hosts from the exported stack outputs {export} (the pulumi CLI is not on PATH)" in log.getvalue()


def test_a_wrong_stack_name_falls_back_to_the_file_and_says_why(tmp_path, pulumi_on_path):
    (tmp_path / "out.json").write_text(json.dumps(OUTPUTS))
    cfg = make_config(tmp_path, stack="prod", stack_outputs="out.json")
    log = io.StringIO()
    out = read_outputs(cfg, progress=Progress(log))
    assert out.source.startswith("file ")
    assert "warning:" in log.getvalue() and "no stack named 'prod' found" in log.getvalue()


def test_neither_source_is_one_clear_line_from_the_cli(tmp_path, monkeypatch):
    """Through a real ferry process: the error names both sources and how to get one."""
    monkeypatch.setenv("PATH", "/nonexistent")
    cfg = make_config(tmp_path, stack="dev")
    code = ("import sys; from ferry.config import load; from ferry.aws.stack import read_outputs\n"
            "from ferry.errors import FerryError\n"
            "try: read_outputs(load(sys.argv[1]))\n"
            "except FerryError as e: print(e, file=sys.stderr); sys.exit(e.exit_code)\n")
    (tmp_path / "ferry.toml").write_text(
        '[app]\nname = "hello"\n[image]\nrepository = "127.0.0.1:5000/hello"\nbase = "b"\nsource = "src"\n'
        'entrypoint = ["python3"]\n[deploy]\nstack = "dev"\n')
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ferry.toml")], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PATH": "/nonexistent"})
    assert r.returncode == 1
    assert "the pulumi CLI is not on PATH and deploy.stack_outputs is not set" in r.stderr
    assert cfg.deploy.stack == "dev"
