"""The accessories' image recipes and assembly (pure: no apt, no registry), and the entrypoint
scripts run by the machine's dash with stand-ins for initdb, postgres and redis-server."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest

from ferry.accessories import images as I
from ferry.errors import ConfigError
from ferry.images import debian, rootfs


def test_each_postgres_major_comes_from_the_suite_that_ships_it():
    for major, suite in (("15", "bookworm"), ("17", "trixie"), ("18", "forky")):
        r = I.postgres_recipe(major)
        assert r.suite == suite and f"postgresql-{major}" in r.install
        assert dict(r.env)["PATH"].startswith(f"/usr/lib/postgresql/{major}/bin:")
    with pytest.raises(ConfigError, match="16"):
        I.postgres_recipe("16")
    assert I.postgres_recipe("15").hash != I.postgres_recipe("17").hash
    assert I.postgres_recipe("15").hash == I.postgres_recipe("15").hash


def fake_unpacked():
    E = rootfs.Entry
    pg = [E.dir("usr"), E.dir("usr/lib"), E.file("usr/lib/postgresql/15/bin/postgres", b"\x7fELF", 0o755),
          E.file("usr/lib/postgresql/15/lib/llvmjit.so", b"jit", 0o644),
          E.file("usr/share/doc/postgresql-15/changelog.gz", b"x"), E.file("usr/share/doc/postgresql-15/copyright", b"c"),
          E.file("usr/share/zoneinfo/Etc/UTC", b"TZif")]
    return [("postgresql-15", pg, "Package: postgresql-15\nVersion: 15.20-0+deb12u1\n"),
            ("dash", [E.file("usr/bin/dash", b"\x7fELF", 0o755)], "Package: dash\nVersion: 0.5.12-2\n")]


def test_assembly_runs_as_its_own_uid_with_an_owned_data_dir_and_no_jit():
    r = I.postgres_recipe("15")
    tree = I.assemble(r, fake_unpacked())
    assert "postgres:x:65530:65530:" in tree["etc/passwd"].data.decode()
    assert (tree["data"].uid, tree["data"].mode) == (65530, 0o700)
    assert tree["usr/local/bin/ferry-postgres"].mode == 0o755
    assert "usr/lib/postgresql/15/lib/llvmjit.so" not in tree
    assert "usr/share/doc/postgresql-15/changelog.gz" not in tree
    assert "usr/share/doc/postgresql-15/copyright" in tree
    assert tree["bin"].target == "usr/bin" and tree["etc/localtime"].target == "/usr/share/zoneinfo/Etc/UTC"
    assert tree["var/lib/dpkg/status.d/postgresql-15"].data.startswith(b"Package: postgresql-15\nStatus: install ok")
    # reproducible: the same packages give the same bytes
    assert rootfs.tar_bytes(tree) == rootfs.tar_bytes(I.assemble(r, list(reversed(fake_unpacked()))))


def test_image_config_runs_the_entrypoint_as_the_server_user():
    r = I.redis_recipe()
    pkgs = [debian.Package("redis-server", "5:7.0.15-1~deb12u1", "amd64")]
    cfg = I.image_config(r, "7.0.15", "sha256:" + "0" * 64, pkgs)
    assert cfg["config"]["User"] == "65531:65531"
    assert cfg["config"]["Entrypoint"] == ["/usr/local/bin/ferry-redis"]
    assert cfg["config"]["Labels"]["dev.ferry.debian.package"] == "redis-server=5:7.0.15-1~deb12u1"
    assert cfg["created"] == "1970-01-01T00:00:00Z"


def test_tags_move_only_where_the_registry_allows_it():
    image = SimpleNamespace(digest="sha256:" + "ab" * 32)
    b = I.Built(I.postgres_recipe("15"), image, "15.20")
    assert b.tags("127.0.0.1:5000") == ["15", "15-abababababab"]
    assert b.tags("123456789012.dkr.ecr.eu-west-1.amazonaws.com") == ["15-abababababab"]


def stub(bin_dir, name, body):
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)


def run_entrypoint(tmp_path, script: str, env: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "entrypoint"
    path.write_text(script)
    return subprocess.run(["/bin/sh", str(path), "--extra"], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", **env})


def test_postgres_entrypoint_initdb_once_with_the_password_file_then_execs_the_server(tmp_path):
    bins = tmp_path / "bin"
    bins.mkdir()
    log = tmp_path / "log"
    stub(bins, "initdb", f'echo "initdb $*" >> {log}; mkdir -p "$PGDATA"; echo 15 > "$PGDATA/PG_VERSION"\n')
    stub(bins, "postgres", f'if [ "$1" = --single ]; then echo "single $* <$(cat)>" >> {log}; '
                           f'else echo "server $*" >> {log}; fi\n')
    pw = tmp_path / "pw"
    pw.write_text("s3cret")
    env = {"PGDATA": str(tmp_path / "data/pgdata"), "PGPORT": "37432", "PGUSER": "shop", "PGDATABASE": "shop",
           "FERRY_PASSWORD_FILE": str(pw)}
    r = run_entrypoint(tmp_path, I.POSTGRES_ENTRYPOINT, env)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == (f"initdb --pgdata={env['PGDATA']} --username=shop --pwfile={pw} --auth-local=trust "
                        "--auth-host=scram-sha-256 --encoding=UTF8 --no-locale")
    assert lines[1] == f'single --single -D {env["PGDATA"]} postgres <CREATE DATABASE "shop" OWNER "shop";>'
    assert lines[2] == (f"server -D {env['PGDATA']} -c listen_addresses=127.0.0.1 -c port=37432 "
                        "-c unix_socket_directories=/tmp -c jit=off --extra")
    assert "s3cret" not in log.read_text()
    # the second start finds the cluster: no initdb
    log.write_text("")
    assert run_entrypoint(tmp_path, I.POSTGRES_ENTRYPOINT, env).returncode == 0
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["server"]
    # no password file: refuses before touching the data
    env2 = {**env, "PGDATA": str(tmp_path / "other"), "FERRY_PASSWORD_FILE": str(tmp_path / "missing")}
    r = run_entrypoint(tmp_path, I.POSTGRES_ENTRYPOINT, env2)
    assert r.returncode == 1 and "missing or empty" in r.stderr and not (tmp_path / "other").exists()


def test_redis_entrypoint_puts_the_password_in_a_private_config_not_the_command_line(tmp_path):
    bins = tmp_path / "bin"
    bins.mkdir()
    log = tmp_path / "log"
    conf = tmp_path / "redis.conf"
    script = I.REDIS_ENTRYPOINT.replace("/tmp/redis.conf", str(conf))
    stub(bins, "redis-server", f'echo "redis-server $*" >> {log}\n')
    pw = tmp_path / "pw"
    pw.write_text("s3cret")  # no final newline
    r = run_entrypoint(tmp_path, script, {"REDIS_PORT": "37379", "FERRY_PASSWORD_FILE": str(pw)})
    assert r.returncode == 0, r.stderr
    assert log.read_text() == f"redis-server {conf} --extra\n"
    assert conf.read_text() == ("bind 127.0.0.1\nport 37379\nprotected-mode yes\ndaemonize no\n"
                                "dir /data\nappendonly yes\nappendfsync everysec\nrequirepass s3cret\n")
    assert oct(os.stat(conf).st_mode & 0o777) == "0o600"
