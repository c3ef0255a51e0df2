"""Who may import whom: the fleet layer sits under deploy, certs and monitoring; the deploy
library never imports monitoring (its events go through a callback), and nobody reaches into
deploy/release.py for hosts, connections or credentials any more."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3] / "ferry"


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (top level or lazily inside a function), absolute."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_the_deploy_library_never_imports_monitoring_or_certs():
    for path in (ROOT / "deploy").glob("*.py"):
        if path.name == "commands.py":  # the command line is where the areas are wired together
            continue
        bad = {m for m in imports(path) if m.startswith(("ferry.monitoring", "ferry.certs"))}
        assert not bad, f"{path.name} imports {bad}"


def test_the_fleet_layer_imports_no_area_above_it():
    for path in (ROOT / "fleet").glob("*.py"):
        bad = {m for m in imports(path)
               if m.startswith(("ferry.monitoring", "ferry.certs", "ferry.deploy.release", "ferry.deploy.runner"))}
        assert not bad, f"fleet/{path.name} imports {bad}"


def test_certs_and_monitoring_get_hosts_from_the_fleet_not_from_deploy_release():
    for area in ("certs", "monitoring"):
        for path in (ROOT / area).glob("*.py"):
            bad = {m for m in imports(path) if m.startswith("ferry.deploy.release")}
            assert not bad, f"{area}/{path.name} imports {bad}"
