"""The --json documents of deploy, rollback and status per host: their keys are a contract."""

from __future__ import annotations

import json

from ferry.deploy.results import (DeployResult, HostStatus, ReleaseCommandRun, RollbackResult, VolumeStatus,
                                  WorkerStatus)


def test_deploy_result_json():
    r = DeployResult("root@h", "deployed", "r2", "green", "sha256:b", "2.0", previous="r1", duration=4.2,
                     repaired=("fixed",), release_command=ReleaseCommandRun(0, 1.5, True),
                     workers=("shop-worker-1-green",))
    assert r.to_json() == {"host": "root@h", "action": "deployed", "release": "r2", "colour": "green",
                           "digest": "sha256:b", "version": "2.0", "previous": "r1", "duration": 4.2,
                           "repaired": ["fixed"], "release_command": {"exit_code": 0, "duration": 1.5, "ok": True},
                           "workers": ["shop-worker-1-green"]}
    json.dumps(r.to_json())
    none = DeployResult("root@h", "none", "r1", "blue", "sha256:a", "1.0").to_json()
    assert none["release_command"] is None and none["workers"] == [] and none["previous"] is None


def test_rollback_result_json():
    r = RollbackResult("root@h", "rolled-back", "r1", "blue", "sha256:a", "1.0", warm=True, entry="r3",
                       previous="r2", swap_seconds=0.3, duration=0.9, workers=("shop-worker-1-blue",))
    assert r.to_json() == {"host": "root@h", "action": "rolled-back", "release": "r1", "colour": "blue",
                           "digest": "sha256:a", "version": "1.0", "warm": True, "entry": "r3", "previous": "r2",
                           "swap_seconds": 0.3, "duration": 0.9, "repaired": [], "workers": ["shop-worker-1-blue"]}


def test_status_json_lists_volumes_with_size_and_workers_per_release():
    w = WorkerStatus("shop-worker-1-green", "worker", 1, "r2", "green", True, "Up 3 minutes")
    s = HostStatus("root@h", {"colour": "green", "release": "r2", "digest": "sha256:b", "version": "2.0",
                              "running": True}, {"status": 200, "ok": True}, (), None, (), (), (),
                   volumes=(VolumeStatus("data", "/data", "/opt/ferry/shop/volumes/data", 4096),
                            VolumeStatus("media", "/app/media", "/opt/ferry/shop/volumes/media", None)),
                   workers={"r2": (w,)})
    doc = s.to_json()
    assert sorted(doc) == ["health", "host", "live", "lock", "pending", "releases", "repaired", "volumes", "warm",
                           "workers"]
    assert doc["volumes"] == [{"name": "data", "path": "/data", "host_path": "/opt/ferry/shop/volumes/data", "size": 4096},
                              {"name": "media", "path": "/app/media", "host_path": "/opt/ferry/shop/volumes/media",
                               "size": None}]
    assert doc["workers"] == {"r2": [{"name": "shop-worker-1-green", "process": "worker", "replica": 1,
                                      "release": "r2", "colour": "green", "running": True, "state": "Up 3 minutes"}]}
    json.dumps(doc)
