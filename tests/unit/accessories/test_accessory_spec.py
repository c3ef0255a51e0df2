"""Names, paths, URLs and the {db.*} placeholders of deploy.env (pure)."""

from __future__ import annotations

import pytest

from ferry.accessories import spec as S
from ferry.accessories.runner import backup_metrics
from ferry.deploy import docker as D
from ferry.errors import ConfigError

from .conftest import make_cfg


def test_defaults_follow_the_app(cfg):
    db = S.accessory(cfg, "db")
    assert (db.container, db.user, db.database, db.port) == ("shop-db", "shop", "shop", 37432)
    assert db.volume_dir == "/opt/ferry/shop/volumes/db"
    assert db.password_file == "/opt/ferry/shop/accessories/db.password"
    assert db.backups_dir == "/opt/ferry/shop/backups/db"
    assert db.image == "127.0.0.1:5000/ferry/postgres:15"
    assert S.accessory(cfg, "cache").image == "127.0.0.1:5000/ferry/redis:7"


def test_a_pinned_image_in_the_config_wins():
    ref = "reg.example.com/pg@sha256:" + "c" * 64
    c = make_cfg({"db": {"kind": "postgres", "image": ref}})
    assert S.accessory(c, "db").image == ref
    assert S.accessory(c, "db").port == 5432


def test_unknown_and_rds_accessories_are_refused_with_a_fix(cfg):
    with pytest.raises(ConfigError, match="no such accessory"):
        S.accessory(cfg, "nope")
    with pytest.raises(ConfigError, match="does not run on a host"):
        S.accessory(make_cfg({"db": {"kind": "rds", "url_env": "DATABASE_URL"}}, hosts=[], stack="dev"), "db")


def test_urls(cfg):
    assert S.url(S.accessory(cfg, "db"), "p4ss") == "postgresql://shop:p4ss@127.0.0.1:37432/shop"
    assert S.url(S.accessory(cfg, "cache"), "p/ss") == "redis://:p%2Fss@127.0.0.1:37379/0"


def test_env_for_gives_url_env_and_substitutes_placeholders():
    c = make_cfg(env={"DB_HOST": "{db.host}", "DB_DSN": "host={db.host} port={db.port} user={db.user} "
                      "password={db.password} dbname={db.name}", "PLAIN": "{not.an.accessory}"})
    env = S.env_for(c, {"db": "pw1", "cache": "pw2"})
    assert env == {"DATABASE_URL": "postgresql://shop:pw1@127.0.0.1:37432/shop",
                   "REDIS_URL": "redis://:pw2@127.0.0.1:37379/0",
                   "DB_HOST": "127.0.0.1",
                   "DB_DSN": "host=127.0.0.1 port=37432 user=shop password=pw1 dbname=shop"}


def test_substitute_names_an_unknown_field():
    with pytest.raises(ConfigError, match=r"\{db.pass\} is not a field"):
        S.substitute("{db.pass}", {"db": {"host": "h"}})
    assert S.substitute("x{other.host}y", {"db": {"host": "h"}}) == "x{other.host}y"


def test_templated_values_never_reach_the_docker_command_line():
    c = make_cfg(env={"DB_PASSWORD": "{db.password}", "MODE": "prod"})
    assert S.templated_keys(c) == {"DB_PASSWORD"}
    argv = D.run_argv(c, "blue", "r@sha256:" + "a" * 64, "r1", "1", "sha256:" + "a" * 64)
    assert "MODE=prod" in argv
    assert not any(a.startswith("DB_PASSWORD=") for a in argv)


def test_needed_lists_accessories_the_app_env_uses():
    assert S.needed(make_cfg()) == ["cache", "db"]
    assert S.needed(make_cfg({"db": {"kind": "postgres"}})) == []
    assert S.needed(make_cfg({"db": {"kind": "postgres"}}, env={"X": "{db.password}"})) == ["db"]
    # an RDS accessory's URL comes from the stack (ferry/aws): its name is no placeholder here
    image = {"kind": "image", "image": "r@sha256:" + "a" * 64}
    assert S.templated_keys(make_cfg({"db": image}, env={"X": "{db.password}"})) == set()


def test_runs_on_the_first_host_unless_named():
    hosts = ("root@10.0.0.1", "root@10.0.0.2:2222")
    assert S.runs_on(None, hosts, "root@10.0.0.1")
    assert not S.runs_on(None, hosts, "root@10.0.0.2:2222")
    assert S.runs_on("root@10.0.0.2:2222", hosts, "root@10.0.0.2:2222")
    assert S.runs_on(None, (), "ubuntu@54.1.2.3")


def test_a_volume_with_the_accessorys_name_is_refused():
    c = make_cfg(volumes={"db": "/app/db"})
    with pytest.raises(ConfigError, match="same directory"):
        S.accessory(c, "db")


def test_repository_names_are_under_the_prefix():
    assert S.repository_names("hello-dev") == ("hello-dev/postgres", "hello-dev/redis", "hello-dev/postgres-exporter")


def test_backup_metrics_text(cfg):
    assert backup_metrics(S.accessory(cfg, "db"), 1700000000.0, 42).splitlines()[2:] == [
        'ferry_accessory_backup_last_success_timestamp_seconds{app="shop",accessory="db"} 1700000000.000',
        "# HELP ferry_accessory_backup_size_bytes Size of the accessory's last backup.",
        "# TYPE ferry_accessory_backup_size_bytes gauge",
        'ferry_accessory_backup_size_bytes{app="shop",accessory="db"} 42']


def test_with_hosts_from_a_stack_the_images_live_in_its_ecr_and_must_be_pinned(tmp_path):
    import json

    from ferry.accessories.runner import image_home

    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"region": "eu-west-1", "sshUser": "ubuntu", "registryUrl": f"{ecr}/hello-dev",
                                   "monitoringPrefix": "hello-dev",
                                   "hosts": [{"instanceId": "i-0abc", "publicIp": "203.0.113.7"}]}))
    c = make_cfg(hosts=[], stack_outputs=str(outputs))
    assert image_home(c) == (ecr, "hello-dev")
    with pytest.raises(ConfigError, match="immutable"):
        S.accessory(c, "db", *image_home(c))
    pinned = f"{ecr}/hello-dev/postgres@sha256:" + "e" * 64
    c2 = make_cfg({"db": {"kind": "postgres", "image": pinned}}, hosts=[], stack_outputs=str(outputs))
    assert S.accessory(c2, "db", *image_home(c2)).image == pinned
    assert image_home(make_cfg()) == (None, "ferry")


def test_the_exporter_listens_on_port_plus_one_unless_that_is_taken():
    import dataclasses

    def monitored(c, on=True):
        return dataclasses.replace(c, monitoring=dataclasses.replace(c.monitoring, enabled=on))

    c = monitored(make_cfg({"db": {"kind": "postgres", "port": 37432}, "other": {"kind": "postgres", "port": 37433}}))
    assert S.exporter(c, S.accessory(c, "other")).port == 37434
    with pytest.raises(ConfigError, match="port \\+ 1 = 37433, which is accessories.other.port"):
        S.exporter(c, S.accessory(c, "db"))
    off = monitored(make_cfg(), on=False)
    assert S.exporter(off, S.accessory(off, "db")) is None
