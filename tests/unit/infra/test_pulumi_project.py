"""Pulumi.yaml and the Pulumi.<stack>.yaml files are what the Pulumi CLI reads before the program
runs: they must parse, match Pulumi's project schema, and name only keys the program reads.

The mock runs (test_infra_program.py) start at the program and never see these files, which is
how an unquoted `: ` in Pulumi.yaml's description once went unnoticed."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from pulumi.automation import ProjectSettings

from infra.config import KEYS

REPO = Path(__file__).resolve().parents[3]
SCHEMA = Path(__file__).resolve().parent / "schemas" / "pulumi-project.schema.json"
STACK_FILES = sorted(REPO.glob("Pulumi.*.yaml"))
# Pulumi's Python language host reads these runtime options (pulumi.com/docs/iac/languages-sdks/python)
PYTHON_OPTIONS = {"toolchain": ("pip", "poetry", "uv"), "virtualenv": None, "typechecker": ("mypy", "pyright")}
# keys of other namespaces the stack may set: the AWS provider's own
PROVIDER_KEYS = {"aws:region", "aws:profile"}


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in _validator().iter_errors(doc)]


def _project() -> dict:
    return yaml.safe_load((REPO / "Pulumi.yaml").read_text())


def test_pulumi_yaml_is_yaml():
    # the defect this file guards against: "mapping values are not allowed here"
    doc = _project()
    assert isinstance(doc, dict) and doc["name"] == "ferry"
    assert "RDS" in doc["description"] and ": " in doc["description"]  # the colon survived, quoted


def test_pulumi_yaml_passes_pulumis_project_schema():
    assert _errors(_project()) == []


@pytest.mark.parametrize("doc, where", [
    ({"runtime": "python"}, "name"),
    ({"name": "ferry"}, "runtime"),
    ({"name": "ferry", "runtime": {"name": "python", "option": {}}}, "runtime"),
    ({"name": "ferry", "runtime": "python", "main": ["infra/"]}, "main"),
    ({"name": "ferry", "runtime": "python", "options": {"refresh": "sometimes"}}, "options"),
])
def test_the_schema_check_rejects_a_broken_project(doc, where):
    errors = _errors(doc)
    assert errors and any(where in e for e in errors), errors


def test_pulumis_own_project_model_reads_it():
    settings = ProjectSettings.from_dict(_project())
    assert (settings.name, settings.runtime.name, settings.main) == ("ferry", "python", "infra/")


def test_runtime_options_are_ones_the_python_host_knows_and_main_is_the_program():
    runtime = _project()["runtime"]
    for key, value in runtime["options"].items():
        assert key in PYTHON_OPTIONS, f"runtime.options.{key} is not a Python runtime option"
        if PYTHON_OPTIONS[key]:
            assert value in PYTHON_OPTIONS[key]
    assert (REPO / _project()["main"] / "__main__.py").is_file()


def test_there_is_a_stack_file():
    assert [p.name for p in STACK_FILES] == ["Pulumi.dev.yaml"]


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_stack_key_is_one_the_program_reads(path):
    config = yaml.safe_load(path.read_text())["config"]
    unknown = [k for k in config if not (k in PROVIDER_KEYS or (k.startswith("ferry:") and k[6:] in KEYS))]
    assert unknown == [], f"{path.name}: keys infra/config.py does not read: {unknown}"


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_key_the_program_reads_is_documented_in_the_stack_file(path):
    # set, or shown commented out (`# ferry:keyName: ...`): the file is the reference
    text = path.read_text()
    missing = [k for k in KEYS if f"ferry:{k}:" not in text]
    assert missing == [], f"{path.name} does not document {missing}"
