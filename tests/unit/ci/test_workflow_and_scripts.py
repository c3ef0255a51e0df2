"""The CI workflow and the entry scripts: checked here since GitHub Actions cannot run here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def check_jsonschema() -> str:
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema is part of the test extra: run `make setup`"
    return str(exe)


def test_workflow_matches_githubs_schema():
    r = subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_broken_workflow_is_caught_by_the_same_check(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    r = subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode != 0


def test_workflow_releases_only_from_main_after_tests_and_names_its_secrets():
    wf = yaml.safe_load(WORKFLOW.read_text())
    release = wf["jobs"]["release"]
    assert release["needs"] == "test"
    assert "refs/heads/main" in release["if"]
    steps = {s.get("name"): s for s in release["steps"]}
    assert steps["release"]["run"].startswith("scripts/release")
    text = WORKFLOW.read_text()
    for secret in ("AWS_DEPLOY_ROLE_ARN", "FERRY_SSH_KEY"):
        assert f"secrets.{secret}" in text
    assert wf["concurrency"]["cancel-in-progress"] is False


def test_the_release_job_uses_a_production_config_that_reads_the_key_ci_writes():
    import re

    from ferry.config import load

    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = {s.get("name"): s for s in wf["jobs"]["release"]["steps"]}
    default = re.search(r"\|\|\s*'([^']+)'", steps["release"]["env"]["FERRY_CONFIG"]).group(1)
    cfg = load(ROOT / default)
    assert cfg.deploy.stack and not cfg.deploy.hosts, "CI must not deploy to the local target's hosts"
    key_step = next(s for name, s in steps.items() if name and "SSH key" in name)
    written = re.search(r"> (\S+) &&", key_step["run"]).group(1)
    assert written == cfg.deploy.ssh_key == "~/.ssh/ferry"
    install = next(s for name, s in steps.items() if name and name.startswith("install ferry"))
    assert "get.pulumi.com" in install["run"]  # deploy.stack runs `pulumi stack output`


@pytest.mark.parametrize("script", ["release", "rollback"])
def test_scripts_pass_arguments_through_and_never_read_stdin(script, tmp_path):
    fake = tmp_path / "ferry"
    fake.write_text("#!/bin/sh\necho \"$@\"\nread x && echo \"read stdin: $x\"\nexit 7\n")
    fake.chmod(0o755)
    r = subprocess.run([str(ROOT / "scripts" / script), "--json", "--to", "x"], input="should not be read\n",
                       capture_output=True, text=True, env={**os.environ, "FERRY_BIN": str(fake)})
    assert r.stdout.splitlines()[0] == f"{script} --json --to x"
    assert "read stdin" not in r.stdout
    assert r.returncode == 7  # the exit code is ferry's own


def test_scripts_are_executable_and_documented():
    for script in ("release", "rollback"):
        path = ROOT / "scripts" / script
        assert os.access(path, os.X_OK)
        text = path.read_text()
        assert "Exit codes" in text and "--json" in text
    assert shutil.which("bash")
