"""The source layer: which files go in (excludes, .ferryignore) and where."""

from __future__ import annotations

import pytest

from ferry.errors import BuildError
from ferry.images.source import Excludes, Selection, collect


def tree(root, files):
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    return root


def test_name_patterns_match_anywhere_and_path_patterns_from_the_root():
    ex = Excludes.parse(["__pycache__", "*.pyc", "docs/*", "/local.env", "# comment", ""])
    assert ex("pkg/__pycache__", True) and ex("a/b/c.pyc") and ex("docs/index.md") and ex("local.env")
    assert not ex("pkg/mod.py") and not ex("sub/local.env") and not ex("pkg/docs/x.md")


def test_collect_places_files_under_the_workdir_and_leaves_out_excludes(tmp_path):
    src = tree(tmp_path / "src", ["hello/__init__.py", "hello/__pycache__/x.pyc", "tests/test_a.py", ".git/HEAD",
                                  "gunicorn.conf.py", "notes/secret.txt", ".ferryignore"])
    (src / ".ferryignore").write_text("# local only\nnotes/\n")
    layer = collect(src, "/app", ("__pycache__", "*.pyc", ".git", "tests"))
    assert layer.files == ["app/gunicorn.conf.py", "app/hello/__init__.py"]
    assert [e.path for e in layer.entries if e.kind == "dir"] == ["app", "app/hello"]


def test_the_key_follows_content_not_location(tmp_path):
    a = collect(tree(tmp_path / "a", ["m.py"]), "/app", ())
    b = collect(tree(tmp_path / "deeper" / "b", ["m.py"]), "/app", ())
    assert a.key == b.key
    (tmp_path / "a" / "m.py").write_text("changed")
    assert collect(tmp_path / "a", "/app", ()).key != a.key
    assert collect(tmp_path / "deeper" / "b", "/srv", ()).key != b.key


def test_an_empty_or_missing_source_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BuildError, match="does not exist") as e:
        collect(tmp_path / "nope", "/app", ())
    assert "image.source" in e.value.hint
    tree(tmp_path / "only-tests", ["tests/t.py"])
    with pytest.raises(BuildError, match="has no files to put in the image"):
        collect(tmp_path / "only-tests", "/app", ("tests",))


def test_a_source_file_that_vanishes_while_read_is_a_clear_error(tmp_path, monkeypatch):
    from ferry.images import layers

    src = tree(tmp_path / "src", ["a.py", "b.py"])
    real = layers.Entry.open

    def vanish(self):
        if self.path.endswith("b.py"):
            raise FileNotFoundError(2, "No such file or directory", str(self.source))
        return real(self)

    monkeypatch.setattr(layers.Entry, "open", vanish)
    with pytest.raises(BuildError, match="cannot read the source folder") as e:
        collect(src, "/app", ())
    assert "image.exclude" in e.value.hint


DJANGO = ["manage.py", "mysite/settings.py", "mysite/urls.py", "guestbook/views.py", "guestbook/static/gb/site.css",
          "guestbook/templates/gb/index.html", "assets/logo.svg"]


def test_build_inputs_name_folders_anywhere_or_paths_from_the_source_folder():
    pick = Selection.parse(["static", "mysite/settings.py", "/assets"])
    assert pick("guestbook/static/gb/site.css") and pick("static/x.js") and pick("mysite/settings.py")
    assert pick("assets/logo.svg")
    assert not pick("guestbook/views.py") and not pick("mysite/urls.py") and not pick("other/mysite/settings.py")
    assert Selection.parse(["*.css"])("guestbook/static/gb/site.css")
    assert Selection.parse(["static", "nothing/here.py", "*.scss"]).unmatched(DJANGO) == ["*.scss", "nothing/here.py"]


def test_the_inputs_key_follows_only_the_files_the_build_inputs_name(tmp_path):
    src = tree(tmp_path / "src", DJANGO)
    inputs = ("static", "mysite/settings.py")
    first = collect(src, "/app", (), build_inputs=inputs)
    assert first.inputs_key is not None and collect(src, "/app", ()).inputs_key is None
    (src / "guestbook" / "views.py").write_text("def index(request): ...")  # a one-line change elsewhere
    after_view = collect(src, "/app", (), build_inputs=inputs)
    assert after_view.key != first.key and after_view.inputs_key == first.inputs_key
    (src / "guestbook" / "static" / "gb" / "site.css").write_text("body { color: red }")
    assert collect(src, "/app", (), build_inputs=inputs).inputs_key != first.inputs_key
    (src / "guestbook" / "static" / "gb" / "new.js").write_text("1")  # a new static file
    after_new = collect(src, "/app", (), build_inputs=inputs)
    (src / "mysite" / "settings.py").write_text("STATIC_URL = 'assets/'")
    assert collect(src, "/app", (), build_inputs=inputs).inputs_key != after_new.inputs_key


def test_an_input_pattern_no_source_file_falls_under_is_an_error(tmp_path):
    src = tree(tmp_path / "src", DJANGO)
    with pytest.raises(BuildError, match=r"no source file falls under 'mysite/setings.py'"):
        collect(src, "/app", (), build_inputs=("static", "mysite/setings.py"))
    with pytest.raises(BuildError, match="'static'"):  # excluded files are not inputs
        collect(src, "/app", ("static",), build_inputs=("static",))
