"""uv workspaces: the root found by walking up, the member picked, the key, the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.errors import BuildError
from ferry.images import deps, workspace
from ferry.images.deps import read_requirements

ROOT = '[dependency-groups]\ndev = ["typer>=0.12"]\n\n[tool.uv.workspace]\nmembers = ["backend", "libs/*"]\n'
LOCK = '''version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = { editable = "backend" }
dependencies = [{ name = "fastapi" }, { name = "shared" }]

[[package]]
name = "shared"
version = "0.1.0"
source = { editable = "libs/shared" }

[[package]]
name = "other"
version = "0.1.0"
source = { editable = "libs/other" }

[[package]]
name = "fastapi"
version = "0.115.0"
'''


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def project(name: str, deps=()) -> str:
    return f'[project]\nname = "{name}"\nversion = "0.1.0"\ndependencies = {list(deps)!r}\n'.replace("'", '"')


@pytest.fixture
def ws(tmp_path) -> Path:
    write(tmp_path / "pyproject.toml", ROOT)
    write(tmp_path / "uv.lock", LOCK)
    write(tmp_path / "backend" / "pyproject.toml", project("app", ["fastapi", "shared"]))
    write(tmp_path / "libs" / "shared" / "pyproject.toml", project("shared"))
    write(tmp_path / "libs" / "other" / "pyproject.toml", project("other"))
    write(tmp_path / "frontend" / "package.json", "{}")
    return tmp_path


def test_the_member_pyproject_finds_the_workspace_root_and_its_lock(ws):
    r = read_requirements(ws / "backend" / "pyproject.toml")
    assert (r.kind, r.package, r.lock, r.project, r.hashed) == ("uv.lock", "app", ws / "uv.lock",
                                                                  ws / "backend" / "pyproject.toml", True)
    assert r.members == (ws / "backend" / "pyproject.toml", ws / "libs" / "shared" / "pyproject.toml")
    assert r.inputs == (ws / "uv.lock",)
    assert deps.app_projects(r, ws / "backend") == r.members


def test_the_root_pyproject_with_image_package_picks_the_member(ws):
    by_root = read_requirements(ws / "pyproject.toml", "app")
    by_member = read_requirements(ws / "backend" / "pyproject.toml")
    assert by_root.package == "app" and by_root.digest == by_member.digest
    assert read_requirements(ws / "pyproject.toml", "App").package == "app"  # names are normalised


def test_a_virtual_root_with_several_members_needs_image_package(ws):
    with pytest.raises(BuildError, match=r"is a uv workspace with 3 members \(app \(backend\), other \(libs/other\), "
                                         r"shared \(libs/shared\)\); ferry cannot tell which is the app") as e:
        read_requirements(ws / "pyproject.toml")
    assert "image.package" in e.value.hint


def test_a_virtual_root_with_one_member_needs_no_choice(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.uv.workspace]\nmembers = ["backend"]\n')
    write(tmp_path / "uv.lock", LOCK)
    write(tmp_path / "backend" / "pyproject.toml", project("app"))
    assert read_requirements(tmp_path / "pyproject.toml").package == "app"


def test_a_member_that_does_not_exist_is_named_with_the_members(ws):
    with pytest.raises(BuildError) as e:
        read_requirements(ws / "pyproject.toml", "api")
    assert str(e.value).startswith(f"image.package: 'api' is not a member of the uv workspace at {ws} (members: "
                                   "app (backend), other (libs/other), shared (libs/shared))")
    assert "[tool.uv.workspace] members" in e.value.hint


def test_a_workspace_without_uv_lock_is_refused_with_the_fix(ws):
    (ws / "uv.lock").unlink()
    with pytest.raises(BuildError) as e:
        read_requirements(ws / "backend" / "pyproject.toml")
    assert str(e.value).startswith(f"the uv workspace at {ws} has no uv.lock")
    assert e.value.hint == f"run `uv lock` in {ws} and commit uv.lock"


def test_the_key_covers_the_lock_the_root_and_the_members_the_app_needs(ws):
    key = read_requirements(ws / "backend" / "pyproject.toml").digest
    (ws / "libs" / "other" / "pyproject.toml").write_text(project("other", ["six"]))
    assert read_requirements(ws / "backend" / "pyproject.toml").digest == key  # not a dependency of the app
    for f in ("uv.lock", "pyproject.toml", "backend/pyproject.toml", "libs/shared/pyproject.toml"):
        before = (ws / f).read_text()
        (ws / f).write_text(before + "\n# changed\n")
        assert read_requirements(ws / "backend" / "pyproject.toml").digest != key, f
        (ws / f).write_text(before)
    assert read_requirements(ws / "backend" / "pyproject.toml").digest == key
    # one lock, two apps: two keys
    assert read_requirements(ws / "pyproject.toml", "shared").digest != key


def test_a_project_inside_a_workspace_folder_but_not_a_member_stands_alone(ws):
    write(ws / "tools" / "pyproject.toml", project("tools"))
    r = read_requirements(ws / "tools" / "pyproject.toml")
    assert r.kind == "pyproject" and r.package == "tools"


def test_image_package_outside_a_workspace_is_refused(tmp_path):
    py = write(tmp_path / "pyproject.toml", project("svc"))
    with pytest.raises(BuildError, match=r"image.package is 'app', but .* is not a uv workspace"):
        read_requirements(py, "app")
    req = write(tmp_path / "requirements.txt", "flask==3.0.3\n")
    with pytest.raises(BuildError, match="image.package is 'app', but image.requirements is requirements.txt"):
        read_requirements(req, "app")


def test_members_needed_follows_workspace_dependencies_through_the_lock(ws):
    p = workspace.discover(ws / "backend" / "pyproject.toml")
    doc = workspace.load_toml(ws / "uv.lock")
    assert [m.name for m in workspace.members_needed(p, doc)] == ["app", "shared"]
    assert workspace.find_root(ws / "libs" / "shared") == ws
    assert workspace.find_root(ws / "frontend") is None


def test_export_command_is_for_the_member_without_dev_or_workspace_packages():
    assert deps.uv_export_command("uv", Path("/ws"), Path("/w/pylock.export.toml"), "app") == [
        "uv", "export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-header", "--format", "pylock.toml",
        "--project", "/ws", "--package", "app", "-o", "/w/pylock.export.toml"]
