"""Every docker / shell argv a release runs, asserted exactly (Kamal's test/commands style)."""

from __future__ import annotations

from ferry.deploy import docker as D

from .fixtures import plain, shop

IMAGE = "127.0.0.1:5000/shop@sha256:" + "b" * 64
DIGEST = "sha256:" + "b" * 64
DOCKER = ["docker", "-H", "unix:///var/lib/ferry-local/docker.sock"]
LOGS = ["--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3"]
VOLUMES = ["--volume", "/opt/ferry/shop/volumes/data:/data", "--volume", "/opt/ferry/shop/volumes/media:/app/media"]


def test_web_container_mounts_every_volume():
    assert D.run_argv(shop(), "green", IMAGE, "r2", "2.0", DIGEST) == [
        *DOCKER, "run", "--detach", "--name", "shop-green", "--network", "host", "--restart", "unless-stopped",
        "--env-file", "/opt/ferry/shop/env", *LOGS, "--stop-timeout", "30",
        "--env", "DJANGO_SETTINGS_MODULE=shop.settings", "--env", "FERRY_APP=shop", "--env", "FERRY_COLOUR=green",
        "--env", f"FERRY_DIGEST={DIGEST}", "--env", "FERRY_RELEASE=r2", "--env", "FERRY_VERSION=2.0",
        "--env", "PORT=34082",
        "--label", "dev.ferry.app=shop", "--label", "dev.ferry.colour=green", "--label", f"dev.ferry.digest={DIGEST}",
        "--label", "dev.ferry.port=34082", "--label", "dev.ferry.release=r2", "--label", "dev.ferry.role=web",
        "--label", "dev.ferry.version=2.0",
        *VOLUMES, "--memory", "256m", IMAGE]


def test_web_container_without_volumes_or_docker_host():
    argv = D.run_argv(plain(), "blue", IMAGE, "r1", "1.0", DIGEST)
    assert argv[:2] == ["docker", "run"] and "--volume" not in argv and "--memory" not in argv
    assert argv[-1] == IMAGE


def test_worker_replica_runs_the_process_command_with_env_labels_and_volumes():
    c = shop()
    assert D.worker_run_argv(c, "worker", c.processes["worker"], 2, "green", IMAGE, "r2", "2.0", DIGEST) == [
        *DOCKER, "run", "--detach", "--name", "shop-worker-2-green", "--network", "host", "--restart",
        "unless-stopped", "--env-file", "/opt/ferry/shop/env", *LOGS, "--stop-timeout", "20",
        "--env", "DJANGO_SETTINGS_MODULE=shop.settings", "--env", "FERRY_APP=shop", "--env", "FERRY_COLOUR=green",
        "--env", f"FERRY_DIGEST={DIGEST}", "--env", "FERRY_PROCESS=worker", "--env", "FERRY_RELEASE=r2",
        "--env", "FERRY_REPLICA=2", "--env", "FERRY_VERSION=2.0",
        "--label", "dev.ferry.app=shop", "--label", "dev.ferry.colour=green", "--label", f"dev.ferry.digest={DIGEST}",
        "--label", "dev.ferry.process=worker", "--label", "dev.ferry.release=r2", "--label", "dev.ferry.replica=2",
        "--label", "dev.ferry.role=worker", "--label", "dev.ferry.version=2.0",
        *VOLUMES, "--memory", "256m", "--entrypoint", "celery", IMAGE, "-A", "shop", "worker"]


def test_release_command_is_a_one_off_attached_container_removed_when_it_ends():
    assert D.release_command_argv(shop(), IMAGE, "r2", "2.0", DIGEST) == [
        *DOCKER, "run", "--rm", "--name", "shop-release-r2", "--network", "host",
        "--env-file", "/opt/ferry/shop/env",
        "--env", "DJANGO_SETTINGS_MODULE=shop.settings", "--env", "FERRY_APP=shop", "--env", f"FERRY_DIGEST={DIGEST}",
        "--env", "FERRY_PROCESS=release", "--env", "FERRY_RELEASE=r2", "--env", "FERRY_VERSION=2.0",
        "--label", "dev.ferry.app=shop", "--label", f"dev.ferry.digest={DIGEST}", "--label", "dev.ferry.release=r2",
        "--label", "dev.ferry.role=release", "--label", "dev.ferry.version=2.0",
        *VOLUMES, "--memory", "256m", "--entrypoint", "python3", IMAGE, "manage.py", "migrate", "--noinput"]


def test_volumes_are_created_idempotently_owned_by_the_image_user():
    assert D.volumes_create_argv(shop(), 65532, 65532) == [
        "install", "-d", "-m", "0755", "-o", "65532", "-g", "65532",
        "/opt/ferry/shop/volumes/data", "/opt/ferry/shop/volumes/media"]
    assert D.image_user_argv(shop(), IMAGE) == [*DOCKER, "image", "inspect", "--format", "{{.Config.User}}", IMAGE]
    assert D.volumes_size_argv(shop()) == ["du", "-sb", "/opt/ferry/shop/volumes/data", "/opt/ferry/shop/volumes/media"]


def test_worker_gate_and_stop_commands():
    c = shop()
    assert D.workers_state_argv(c, ["shop-worker-1-green", "shop-beat-1-green"]) == [
        *DOCKER, "inspect", "--format", "{{.Name}}|{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}",
        "shop-worker-1-green", "shop-beat-1-green"]
    assert D.exec_argv(c, "shop-beat-1-green", ("celery", "inspect", "ping")) == [
        *DOCKER, "exec", "shop-beat-1-green", "celery", "inspect", "ping"]
    assert D.stop_many_argv(c, ["shop-worker-1-blue", "shop-worker-2-blue"], 20) == [
        *DOCKER, "stop", "--time", "20", "shop-worker-1-blue", "shop-worker-2-blue"]
    assert D.rm_many_argv(c, ["shop-green", "shop-worker-1-green"]) == [
        *DOCKER, "rm", "--force", "shop-green", "shop-worker-1-green"]


def test_no_command_removes_a_volume():
    # rm/rmi/stop take container or image names only; nothing names the volumes directory
    # except creating it, measuring it and mounting it
    c = shop()
    removers = [D.rm_argv(c, "shop-green"), D.rm_many_argv(c, ["shop-worker-1-blue"]), D.rmi_argv(c, IMAGE),
                D.stop_argv(c, "shop-blue"), D.stop_many_argv(c, ["shop-worker-1-blue"], 20)]
    assert not any(D.volumes_dir(c) in " ".join(argv) for argv in removers)


def test_streamed_output_reaches_progress_a_whole_line_at_a_time():
    from ferry.deploy.host import LineSink

    lines: list[str] = []
    sink = LineSink(lines.append)
    for chunk in ("Operations to perform:\r\n  Apply all mig", "rations: blog\n\n", "Running migra", "tions: OK"):
        sink.write(chunk)
    assert lines == ["Operations to perform:", "  Apply all migrations: blog"]
    sink.close()
    assert lines[-1] == "Running migrations: OK"


def test_probes_through_the_host_and_through_nginx():
    c = shop()
    assert D.probe_argv(34082, "/healthz") == ["curl", "-sS", "-m", "3.0", "-w", "\n%{http_code}",
                                               "http://127.0.0.1:34082/healthz"]
    assert D.gate_poll_argv(c, "shop-green", 34082, "/healthz") == ["sh", "-c", (
        "docker -H unix:///var/lib/ferry-local/docker.sock inspect --format "
        "'{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|{{index .Config.Labels \"dev.ferry.release\"}}' "
        "shop-green 2>/dev/null; echo --ferry-probe--; curl -sS -m 3.0 -w '\n%{http_code}' "
        "http://127.0.0.1:34082/healthz")]
    assert D.verify_argv(c, tls=False) == ("http://127.0.0.1:34080/healthz", [
        "curl", "-sS", "-o", "/dev/null", "-D", "-", "-m", "5", "-H", "X-Ferry-Verify: 1",
        "-H", "Connection: close", "-H", "Host: 127.0.0.1", "http://127.0.0.1:34080/healthz"])
    assert D.verify_argv(c, tls=True)[1][-4:] == ["-k", "--resolve", "127.0.0.1:34443:127.0.0.1",
                                                  "https://127.0.0.1:34443/healthz"]
    assert D.DRAINING == "nginx: worker process is shutting down"


def test_one_command_for_what_observe_reads_besides_files():
    c = shop()
    # the probes run in the background while docker ps does, and are printed after it
    assert D.observe_argv(c) == ["sh", "-c", (
        "p=$(mktemp) || exit 1; { echo --ferry-observe--; curl -sS -m 3.0 -w '\n%{http_code}' "
        "http://127.0.0.1:34081/healthz; echo --ferry-observe--; curl -sS -m 3.0 -w '\n%{http_code}' "
        "http://127.0.0.1:34082/healthz; } >\"$p\" 2>/dev/null & "
        "docker -H unix:///var/lib/ferry-local/docker.sock ps --all --no-trunc --filter label=dev.ferry.app=shop "
        "--format '{{json .}}' 2>&1; echo --ferry-observe-- $?; wait; cat \"$p\"; rm -f \"$p\"")]


def test_nginx_test_and_reload_are_one_command_the_reload_only_after_the_test():
    c = shop()
    assert D.nginx_argv(c, "-s", "reload") == ["nginx", "-c", "/etc/nginx/nginx.conf", "-s", "reload"]
    assert D.test_reload_argv(c) == ["sh", "-c", (
        "nginx -c /etc/nginx/nginx.conf -t -q || { echo --ferry-nginx-test-failed--; exit 1; }; "
        "exec nginx -c /etc/nginx/nginx.conf -s reload")]


def test_verify_and_drain_poll_on_the_host_with_a_deadline():
    c = shop()
    url, argv = D.verify_loop_argv(c, False, "r7", 34082, 10.0)
    assert url == "http://127.0.0.1:34080/healthz"
    assert argv == ["sh", "-c", (
        "end=$(( $(date +%s) + 10 )); while :; do out=$(curl -sS -o /dev/null -D - -m 5 -H 'X-Ferry-Verify: 1' "
        "-H 'Connection: close' -H 'Host: 127.0.0.1' http://127.0.0.1:34080/healthz 2>&1 | tr -d '\\r'); "
        "if printf '%s\\n' \"$out\" | grep -qE '^HTTP/[0-9.]+ (200|204|301|302|308)( |$)' "
        "&& printf '%s\\n' \"$out\" | grep -qixF 'x-ferry-release: r7' "
        "&& printf '%s\\n' \"$out\" | grep -qixF 'x-ferry-upstream: 127.0.0.1:34082'; "
        "then printf '%s\\n' \"$out\"; exit 0; fi; "
        "if [ \"$(date +%s)\" -ge \"$end\" ]; then printf '%s\\n' \"$out\"; exit 1; fi; sleep 0.01; done")]
    assert D.drain_wait_argv(30.0) == ["sh", "-c", (
        "end=$(( $(date +%s) + 30 )); while pgrep -f '[n]ginx: worker process is shutting down' >/dev/null; "
        "do if [ \"$(date +%s)\" -ge \"$end\" ]; then exit 1; fi; sleep 0.02; done")]
    assert D.drain_wait_argv(0.5)[2].startswith("end=$(( $(date +%s) + 1 ));")  # at least one second
    # the drain, then the old colour's stop (or its warm timer) whatever the drain did: one command
    assert D.drain_then_argv(30.0, D.stop_argv(c, "shop-blue")) == ["sh", "-c", (
        "sh -c 'end=$(( $(date +%s) + 30 )); while pgrep -f '\"'\"'[n]ginx: worker process is shutting down'\"'\"' "
        ">/dev/null; do if [ \"$(date +%s)\" -ge \"$end\" ]; then exit 1; fi; sleep 0.02; done' "
        "|| echo --ferry-still-draining--; exec docker -H unix:///var/lib/ferry-local/docker.sock stop --time 30 shop-blue")]


def test_files_and_the_warm_colours_timer():
    c = shop()
    assert D.app_dirs("/opt/ferry/shop") == ["/opt/ferry/shop/nginx", "/opt/ferry/shop/acme"]
    assert D.clean_temp_argv("/opt/ferry/shop") == [
        "sh", "-c", "rm -f /opt/ferry/shop/*.ferry-tmp /opt/ferry/shop/nginx/*.ferry-tmp"]
    assert D.schedule_stop_argv(c, "shop-blue", "r1", 34081, "/opt/ferry/shop/nginx/upstream.conf", 900) == [
        "sh", "-c", "setsid sh -c 'sleep 900; grep -q '\"'\"'server 127.0.0.1:34081 '\"'\"' "
        "/opt/ferry/shop/nginx/upstream.conf && exit 0; [ \"$(docker -H unix:///var/lib/ferry-local/docker.sock "
        "inspect --format '\"'\"'{{index .Config.Labels \"dev.ferry.release\"}}'\"'\"' shop-blue 2>/dev/null)\" = r1 ] "
        "|| exit 0; docker -H unix:///var/lib/ferry-local/docker.sock stop --time 30 shop-blue' "
        "</dev/null >/dev/null 2>&1 &"]
