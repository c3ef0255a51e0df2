"""The source layer's key reads only files whose stat changed (git's index rule), never trusting a
file changed within the racy window, and always gives the key a full read would give."""

from __future__ import annotations

import os
import time

from ferry.images import layers
from ferry.images.layers import StatCache, content_key, tree_entries


def old(path, seconds=60):
    t = time.time() - seconds
    os.utime(path, (t, t))


def app(tmp_path):
    src = tmp_path / "app"
    (src / "pkg").mkdir(parents=True)
    for name, text in {"manage.py": "print('hi')\n", "pkg/views.py": "X = 1\n", "pkg/models.py": "Y = 2\n"}.items():
        (src / name).write_text(text)
        old(src / name)
    return src


def key(src, cache_path):
    c = StatCache(cache_path)
    k = content_key(tree_entries(src, "app"), c)
    c.save()
    return k, c.hashed


def test_unchanged_files_are_not_read_again_and_the_key_is_the_full_reads_key(tmp_path, monkeypatch):
    src, cache_path = app(tmp_path), tmp_path / "stat.json"
    full = content_key(tree_entries(src, "app"))
    assert key(src, cache_path) == (full, 3)
    reads = []
    real = layers.file_digest
    monkeypatch.setattr(layers, "file_digest", lambda e: reads.append(e.path) or real(e))
    assert key(src, cache_path) == (full, 0) and reads == []


def test_an_edit_is_seen_even_with_the_same_size_and_a_restored_mtime(tmp_path):
    src, cache_path = app(tmp_path), tmp_path / "stat.json"
    before, _ = key(src, cache_path)
    f = src / "pkg" / "views.py"
    st = f.stat()
    f.write_text("X = 2\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: ctime still moved
    after, hashed = key(src, cache_path)
    assert hashed == 1 and after != before and after == content_key(tree_entries(src, "app"))


def test_a_file_changed_just_now_is_hashed_every_time(tmp_path):
    src, cache_path = app(tmp_path), tmp_path / "stat.json"
    (src / "pkg" / "views.py").write_text("X = 3\n")  # racily clean: mtime is now
    assert key(src, cache_path)[1] == 3
    assert key(src, cache_path)[1] == 1  # the two old files are trusted, the fresh one is read again


def test_a_broken_or_missing_cache_file_only_costs_reads(tmp_path):
    src, cache_path = app(tmp_path), tmp_path / "stat.json"
    cache_path.write_text("{not json")
    assert key(src, cache_path) == (content_key(tree_entries(src, "app")), 3)
    assert key(src, None)[1] == 3
