"""`ferry logs` / `ferry exec` decisions as data: which containers, what the live one runs."""

from __future__ import annotations

import pytest

from ferry.errors import DeployError
from ferry.deploy.host import LineSink
from ferry.fleet.operate import LogLine, live_container, log_containers

ROWS = [
    {"Names": "hello-blue", "State": "running", "Labels": "dev.ferry.app=hello,dev.ferry.colour=blue"},
    {"Names": "hello-green", "State": "exited", "Labels": "dev.ferry.app=hello,dev.ferry.colour=green"},
    {"Names": "hello-worker-1", "State": "running", "Labels": "dev.ferry.app=hello"},
    {"Names": "hello-worker-2", "State": "running", "Labels": "dev.ferry.app=hello"},
    {"Names": "hello-worker-old", "State": "running", "Labels": "dev.ferry.app=hello,dev.ferry.process=worker"},
    {"Names": "hello-worker-3", "State": "exited", "Labels": "dev.ferry.app=hello,dev.ferry.process=worker"},
    {"Names": "hello-worker-2-1", "State": "running", "Labels": "dev.ferry.app=hello,dev.ferry.process=worker-2"},
    {"Names": "hello-worker-4-green", "State": "running", "Labels": "dev.ferry.app=hello"},
    {"Names": "hello-beat-1-blue", "State": "running", "Labels": "dev.ferry.app=hello,dev.ferry.process=beat"},
]


def test_web_is_the_live_colour_only():
    assert log_containers(ROWS, "hello", "blue") == ["hello-blue"]
    assert log_containers(ROWS, "hello", None) == []  # nothing live: nothing to read
    assert log_containers(ROWS[2:], "hello", "blue") == []


def test_a_process_is_its_running_containers_by_label_or_name_never_a_look_alike():
    assert log_containers(ROWS, "hello", "blue", "worker") == [
        "hello-worker-1", "hello-worker-2", "hello-worker-4-green", "hello-worker-old"]
    assert log_containers(ROWS, "hello", "blue", "worker-2") == ["hello-worker-2-1"]
    assert log_containers(ROWS, "hello", "blue", "beat") == ["hello-beat-1-blue"]
    assert log_containers(ROWS, "hello", "blue", "cron") == []


def test_a_log_line_as_text_and_json():
    line = LogLine("root@web-1", "hello-blue", "stderr", "GET / 200")
    assert line.text() == "root@web-1 hello-blue | GET / 200"
    assert line.to_json() == {"host": "root@web-1", "container": "hello-blue", "stream": "stderr", "line": "GET / 200"}


def test_output_chunks_become_whole_lines():
    got: list[str] = []
    w = LineSink(got.append, verbatim=True)
    for chunk in ["one\ntw", "o\r\n", "", "thr", "ee"]:
        w.write(chunk)
    assert got == ["one", "two"]
    w.close()
    assert got == ["one", "two", "three"]


def test_the_live_container_runs_a_pinned_image_of_a_release():
    digest = "sha256:" + "a" * 64
    rel = live_container(None, f"127.0.0.1:5000/hello@{digest}|r1|v1|{digest}\n", "hello-blue")
    assert rel == {"image": f"127.0.0.1:5000/hello@{digest}", "release": "r1", "version": "v1", "digest": digest}
    with pytest.raises(DeployError, match="not an image pinned by digest"):
        live_container(None, "hello:latest|||", "hello-blue")
