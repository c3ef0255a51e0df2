"""The exact host commands of an accessory (Kamal-style: whole argv lists, no host)."""

from __future__ import annotations

from ferry.accessories import argv as A
from ferry.accessories.spec import accessory

DOCKER = ("docker", "-H", "unix:///var/lib/ferry-local/docker.sock")
PINNED = "127.0.0.1:5000/ferry/postgres@sha256:" + "a" * 64


def test_postgres_run_argv_is_loopback_non_root_read_only_with_the_volume_and_password_file(cfg):
    db = accessory(cfg, "db")
    assert A.run_argv(DOCKER, db, PINNED) == [
        *DOCKER, "run", "--detach", "--name", "shop-db", "--network", "host", "--restart", "unless-stopped",
        "--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
        "--stop-timeout", "60",
        "--label", "dev.ferry.accessory=db", "--label", "dev.ferry.accessory.app=shop",
        "--label", "dev.ferry.accessory.kind=postgres", "--label", "dev.ferry.accessory.digest=sha256:" + "a" * 64,
        "--label", f"dev.ferry.accessory.spec={A.spec_hash(db, PINNED)}",
        "--stop-signal", "SIGINT",
        "--read-only", "--tmpfs", "/tmp:rw,size=64m", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--user", "65530:65530",
        "--volume", "/opt/ferry/shop/volumes/db:/data",
        "--volume", "/opt/ferry/shop/accessories/db.password:/run/secrets/password:ro",
        "--env", "PGDATABASE=shop", "--env", "PGHOST=/tmp", "--env", "PGPORT=37432", "--env", "PGUSER=shop",
        PINNED]


def test_run_argv_never_carries_the_deploys_app_label(cfg):
    """The deploy lists its colours by dev.ferry.app: an accessory must not be one of them."""
    for name in ("db", "cache"):
        argv = A.run_argv(DOCKER, accessory(cfg, name), PINNED)
        assert not any(a.startswith("dev.ferry.app=") for a in argv)


def test_redis_run_argv(cfg):
    c = accessory(cfg, "cache")
    argv = A.run_argv(DOCKER, c, PINNED)
    assert argv[argv.index("--user") + 1] == "65531:65531"
    assert "/opt/ferry/shop/volumes/cache:/data" in argv
    assert argv[-3:] == ["--env", "REDIS_PORT=37379", PINNED]


def test_spec_hash_changes_with_the_image_digest_only_when_it_changes(cfg):
    db = accessory(cfg, "db")
    other = PINNED.replace("a" * 64, "b" * 64)
    assert A.spec_hash(db, PINNED) == A.spec_hash(db, PINNED)
    assert A.spec_hash(db, PINNED) != A.spec_hash(db, other)


def test_health_checks_use_pg_isready_and_an_authenticated_ping_without_the_password_in_argv(cfg):
    assert A.health_argv(DOCKER, accessory(cfg, "db")) == (
        [*DOCKER, "exec", "shop-db", "pg_isready", "--quiet", "--host", "127.0.0.1", "--port", "37432",
         "--username", "shop", "--dbname", "shop"], "")
    argv, expect = A.health_argv(DOCKER, accessory(cfg, "cache"))
    assert expect == "PONG"
    assert argv == [*DOCKER, "exec", "shop-cache", "sh", "-c",
                    'p=; read -r p < /run/secrets/password || true; export REDISCLI_AUTH="$p"; exec "$@"', "sh",
                    "redis-cli", "-h", "127.0.0.1", "-p", "37379", "ping"]


def test_exec_defaults_to_the_client(cfg):
    assert A.exec_argv(DOCKER, accessory(cfg, "db"), []) == [*DOCKER, "exec", "shop-db", "psql"]
    assert A.exec_argv(DOCKER, accessory(cfg, "db"), ["psql", "-c", "select 1"], interactive=True) == [
        *DOCKER, "exec", "--interactive", "shop-db", "psql", "-c", "select 1"]
    assert A.exec_argv(DOCKER, accessory(cfg, "cache"), ["redis-cli", "get", "k"])[-7:] == [
        "redis-cli", "-h", "127.0.0.1", "-p", "37379", "get", "k"]


def test_prepare_owns_the_volume_by_the_servers_uid(cfg):
    assert A.prepare_argv(accessory(cfg, "db")) == [
        "sh", "-c", "set -e; mkdir -p /opt/ferry/shop/volumes/db /opt/ferry/shop/backups/db; "
                    "mkdir -p -m 0700 /opt/ferry/shop/accessories; "
                    "chown 65530:65530 /opt/ferry/shop/volumes/db; chmod 0700 /opt/ferry/shop/volumes/db"]


def test_stop_and_rm(cfg):
    db = accessory(cfg, "db")
    assert A.stop_argv(DOCKER, db) == [*DOCKER, "stop", "--time", "60", "shop-db"]
    assert A.rm_argv(DOCKER, db) == [*DOCKER, "rm", "--force", "shop-db"]
    assert A.start_argv(DOCKER, db) == [*DOCKER, "start", "shop-db"]
    assert A.logs_argv(DOCKER, db, 5) == [*DOCKER, "logs", "--tail", "5", "shop-db"]


def test_backup_writes_a_partial_file_then_renames_it(cfg):
    argv = A.backup_argv(DOCKER, accessory(cfg, "db"), "db-20260101T000000000Z.dump")
    d = "/opt/ferry/shop/backups/db"
    assert argv == ["sh", "-c",
                    f"set -e; umask 077; trap 'rm -f {d}/.db-20260101T000000000Z.dump.partial' EXIT; "
                    "docker -H unix:///var/lib/ferry-local/docker.sock exec shop-db pg_dump --format=custom "
                    f"--dbname shop > {d}/.db-20260101T000000000Z.dump.partial; "
                    f"mv {d}/.db-20260101T000000000Z.dump.partial {d}/db-20260101T000000000Z.dump; "
                    f"stat -c %s {d}/db-20260101T000000000Z.dump"]


def test_restore_is_one_transaction_with_clean_if_exists(cfg):
    assert A.restore_argv(DOCKER, accessory(cfg, "db"), "/x/db-1.dump") == [
        "sh", "-c", "docker -H unix:///var/lib/ferry-local/docker.sock exec --interactive shop-db pg_restore "
                    "--clean --if-exists --no-owner --single-transaction --exit-on-error --dbname shop < /x/db-1.dump"]


def test_inspect_and_data_version(cfg):
    db = accessory(cfg, "db")
    assert A.inspect_argv(DOCKER, db) == [
        *DOCKER, "inspect", "--format",
        '{{.State.Status}}|{{.State.Running}}|{{.State.StartedAt}}|{{index .Config.Labels "dev.ferry.accessory.digest"}}|'
        '{{index .Config.Labels "dev.ferry.accessory.spec"}}|{{.RestartCount}}', "shop-db"]
    assert A.data_version_argv(db) == ["sh", "-c", "cat /opt/ferry/shop/volumes/db/pgdata/PG_VERSION 2>/dev/null || true"]


def test_an_image_accessory_runs_its_own_user_command_env_and_volume():
    from .conftest import make_cfg

    ref = "reg.example.com/meili@sha256:" + "d" * 64
    c = make_cfg({"search": {"kind": "image", "image": ref, "volume": "/meili_data", "port": 37700,
                             "env": {"MEILI_ENV": "production"}, "command": ["meilisearch", "--http-addr", "127.0.0.1:37700"]}})
    s = accessory(c, "search")
    argv = A.run_argv(DOCKER, s, ref)
    assert "--user" not in argv and "--read-only" not in argv
    assert argv[-8:] == ["--volume", "/opt/ferry/shop/volumes/search:/meili_data", "--env", "MEILI_ENV=production",
                         ref, "meilisearch", "--http-addr", "127.0.0.1:37700"]
    assert A.health_argv(DOCKER, s) == ([*DOCKER, "inspect", "--format", "{{.State.Running}}", "shop-search"], "true")
    assert A.prepare_argv(s) == ["sh", "-c", "set -e; mkdir -p /opt/ferry/shop/volumes/search /opt/ferry/shop/backups/search"]
