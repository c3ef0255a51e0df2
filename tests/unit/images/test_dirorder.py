"""Build steps' Python lists directories sorted (dirorder.py), whatever order the filesystem
keeps: the sitecustomize is run here by a real interpreter over a real folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ferry.images import dirorder
from ferry.images.buildstep import scaffold

# created in this order; ext4 lists them by hash, tmpfs by creation: neither is sorted
NAMES = ["zeta.css", "alpha.js", "Mid.txt", "beta", "omega.svg", "delta.css", "10.txt", "2.txt", "_x.py", "kappa"]
PROBE = """
import glob, json, os, pathlib, shutil, sys
d = sys.argv[1]
with os.scandir(d) as it:
    scanned = [e.name for e in it if e.is_file() or e.is_dir()]
walked = [(os.path.relpath(top, d), dirs, files) for top, dirs, files in os.walk(d)]
shutil.copytree(d, d + "-copy")
print(json.dumps({"listdir": os.listdir(d), "scandir": scanned, "walk": walked,
                  "pathlib": [p.name for p in pathlib.Path(d).iterdir()],
                  "glob": [os.path.basename(p) for p in glob.glob(os.path.join(d, "*"))],
                  "copy": os.listdir(d + "-copy"),
                  "image": getattr(sys.modules.get("sitecustomize"), "IMAGE", None)}))
"""


def listing(tmp_path: Path, pythonpath: str) -> dict:
    d = tmp_path / "static"
    d.mkdir()
    for n in NAMES:
        (d / n).mkdir() if "." not in n else (d / n).write_text(n)
    (d / "beta" / "y").write_text("")
    (d / "beta" / "b").write_text("")
    r = subprocess.run([sys.executable, "-c", PROBE, str(d)], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_python_in_a_step_lists_directories_sorted(tmp_path):
    root = scaffold(tmp_path / "scaffold")
    got = listing(tmp_path, str(root / dirorder.DIR))
    want = sorted(NAMES)
    assert got["listdir"] == got["scandir"] == got["pathlib"] == got["glob"] == got["copy"] == want
    assert got["walk"][0] == [".", [n for n in want if "." not in n], [n for n in want if "." in n]]
    assert got["walk"][1] == ["beta", [], ["b", "y"]]


def test_the_images_own_sitecustomize_still_runs(tmp_path):
    root = scaffold(tmp_path / "scaffold")
    image_site = tmp_path / "image-site"
    image_site.mkdir()
    (image_site / "sitecustomize.py").write_text("IMAGE = 'the image sitecustomize ran'\n")
    got = listing(tmp_path, f"{root / dirorder.DIR}:{image_site}")
    assert got["image"] == "the image sitecustomize ran"
    assert got["listdir"] == sorted(NAMES)


def test_the_step_env_puts_the_sorting_folder_first_on_pythonpath():
    assert dirorder.step_env({"PYTHONPATH": "/app:/app/deps", "X": "1"}) == {
        "PYTHONPATH": "/.ferry-build:/app:/app/deps", "X": "1"}
    assert dirorder.step_env({}) == {"PYTHONPATH": "/.ferry-build"}


def test_what_python_leaves_in_the_sorting_folder_is_not_the_apps():
    assert dirorder.is_own(".ferry-build") and dirorder.is_own(".ferry-build/__pycache__/sitecustomize.cpython-311.pyc")
    assert not dirorder.is_own("app/.ferry-build-notes") and not dirorder.is_own("app/staticfiles/staticfiles.json")
