"""scripts/prepare-host, run for real on the local target over SSH (Fabric), the way ferry
would run it on a host. Every write is redirected with --root into a temp folder on the target,
so the machine itself is untouched (and nothing is started: --root implies --no-start)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from ferry.deploy.host import Host, HostSpec

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "prepare-host"
ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
# What the real machine has at these paths must not change when the script runs under --root.
# (Files by content and time; /opt/ferry by mode and owner only: other tests deploy into it.)
REAL_PATHS = ["/etc/nginx/conf.d/ferry.conf", "/etc/nginx/modules-enabled/90-ferry-main.conf", "/etc/docker/daemon.json", "/etc/default/prometheus-node-exporter",
              "/etc/ssh/sshd_config.d/10-ferry.conf", "/etc/apt/apt.conf.d/20auto-upgrades",
              "/etc/systemd/journald.conf.d/ferry.conf", "/root/.docker/config.json",
              "/etc/ferry/imds-guard.rules", "/etc/systemd/system/ferry-imds-guard.service"]


@pytest.fixture
def target(local_target):
    with Host(HostSpec.parse(local_target["ssh"]), key_filename=local_target["ssh_key"]) as host:
        work = host.check(["mktemp", "-d", "/tmp/ferry-prepare-host.XXXXXX"], "make a work dir").stdout.strip()
        host.write(f"{work}/prepare-host", SCRIPT.read_text(), mode="0755")
        host.work = work
        host.root = f"{work}/root"
        yield host
        host.run(["rm", "-rf", work])


def run_script(host: Host, *args: str, env: str = "") -> tuple[int, str]:
    cmd = f"{env} {shlex.quote(host.work + '/prepare-host')} {' '.join(shlex.quote(a) for a in args)} 2>&1"
    r = host.run(["sh", "-c", cmd], timeout=300)
    return r.exit_code, r.stdout


def snapshot(host: Host, root: str) -> dict[str, str]:
    """path -> 'mode owner:group mtime sha256' of everything under root."""
    r = host.check(["sh", "-c", f"cd {shlex.quote(root)} && find . -printf '%p %m %u:%g %T@\\n' | sort"], "list files")
    out = {}
    for line in r.stdout.splitlines():
        path, rest = line.split(" ", 1)
        out[path] = rest
    sums = host.check(["sh", "-c", f"cd {shlex.quote(root)} && find . -type f -exec sha256sum {{}} + | sort"], "hash")
    for line in sums.stdout.splitlines():
        digest, path = line.split(maxsplit=1)
        out[path] += " " + digest
    return out


def real_state(host: Host) -> dict[str, str]:
    checks = [f"if [ -e {p} ]; then echo \"{p} $(stat -c '%Y %a' {p}) $(sha256sum < {p})\"; else echo '{p} absent'; fi"
              for p in REAL_PATHS]
    checks.append("stat -c '%n %a %U:%G' /opt/ferry 2>/dev/null || echo '/opt/ferry absent'")
    # this machine's own firewall: --root must never load a rule (read only, as text)
    checks.append("echo \"iptables $( (iptables -w -S 2>&1 || true) | sha256sum)\"")
    r = host.run(["sh", "-c", " ; ".join(checks)])
    return dict(line.split(" ", 1) for line in r.stdout.splitlines())


def test_prepares_the_layout_and_a_second_run_changes_nothing(target):
    before_real = real_state(target)

    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    assert "packages: docker.io nginx curl python3-acme unattended-upgrades logrotate\n" in out  # all there: no apt
    for path in ("/opt/ferry/", "/etc/nginx/conf.d/ferry.conf", "/etc/nginx/modules-enabled/90-ferry-main.conf",
                 "/etc/docker/daemon.json",
                 "/etc/apt/apt.conf.d/20auto-upgrades", "/etc/ferry/imds-guard.rules",
                 "/etc/systemd/system/ferry-imds-guard.service"):
        assert f"  changed    {path}\n" in out, out
    assert "skipped    services" in out
    first = snapshot(target, target.root)

    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    assert "prepare-host: nothing changed" in out and "(host already prepared)" in out
    assert "changed " not in out.replace("nothing changed", "")
    assert snapshot(target, target.root) == first  # not even a timestamp moved

    assert real_state(target) == before_real  # the machine itself was not touched


def test_the_host_layout_is_what_ferry_and_nginx_expect(target):
    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    r = target.root
    assert target.check(["stat", "-c", "%a %U:%G", f"{r}/opt/ferry"], "stat").stdout.strip() == "750 root:www-data"
    conf = target.read(f"{r}/etc/nginx/conf.d/ferry.conf")
    assert "include /opt/ferry/*/nginx/site.conf;" in conf
    assert "listen 80 default_server;" in conf and "return 444;" in conf
    assert "ssl_reject_handshake on;" in conf
    assert "listen 127.0.0.1:9180;" in conf and "stub_status;" in conf
    # ... the address the monitoring stack's nginx exporter reads on a real host by default
    from ferry.config import HOST_STUB_STATUS_URL

    assert HOST_STUB_STATUS_URL == "http://127.0.0.1:9180/stub_status"
    daemon = json.loads(target.read(f"{r}/etc/docker/daemon.json"))
    assert daemon == {"live-restore": True, "log-driver": "json-file", "log-opts": {"max-file": "5", "max-size": "10m"}}
    assert 'APT::Periodic::Unattended-Upgrade "1";' in target.read(f"{r}/etc/apt/apt.conf.d/20auto-upgrades")
    assert "PasswordAuthentication no" in target.read(f"{r}/etc/ssh/sshd_config.d/10-ferry.conf")


EXPORTERS = ("prometheus-node-exporter", "prometheus-nginx-exporter")


def enabled_units(host: Host, root: str) -> list[str]:
    r = host.run(["sh", "-c", f"find {shlex.quote(root)}/etc/systemd/system -path '*.wants/*' 2>/dev/null | sort"])
    return [line.rsplit("/", 1)[1] for line in r.stdout.split()]


def test_the_monitoring_stack_owns_the_exporters_prepare_host_installs_and_enables_none(target):
    """ferry-node-exporter/ferry-nginx-exporter bind 127.0.0.1:9100/9113: Debian's services on the
    same ports would make them crash-loop behind a URL that answers."""
    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    for svc in EXPORTERS:
        assert svc not in out.split("  ok         packages:")[1].splitlines()[0], out  # not installed
        assert f"  ok         service {svc} (not enabled)\n" in out, out
    (services,) = [line for line in out.splitlines() if line.startswith("  skipped    services:")]
    assert services.endswith("a host enables: ferry-imds-guard docker nginx unattended-upgrades"), services
    assert enabled_units(target, target.root) == []
    for svc in EXPORTERS:  # no config for them either
        assert target.run(["test", "-e", f"{target.root}/etc/default/{svc}"]).exit_code != 0


def test_exporters_an_earlier_preparation_enabled_are_disabled_once(target):
    wants = f"{target.root}/etc/systemd/system/multi-user.target.wants"
    target.check(["mkdir", "-p", wants], "mkdir")
    for unit in (*EXPORTERS, "docker"):
        target.check(["ln", "-s", f"/lib/systemd/system/{unit}.service", f"{wants}/{unit}.service"], "enable")
    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    for svc in EXPORTERS:
        assert f"  changed    service {svc} (disabled: the monitoring stack's container owns its port)\n" in out, out
    assert enabled_units(target, target.root) == ["docker.service"]  # only the exporters go
    code, out = run_script(target, "--root", target.root)
    assert "prepare-host: nothing changed" in out, out


# --- the instance metadata guard -----------------------------------------------------------------

IMDS = "169.254.169.254"


def imds_uids_of_ferrys_containers() -> set[int]:
    """The uids ferry's containers run as, from ferry's own defaults."""
    from ferry.config import ImageConfig
    from ferry.monitoring import images, stack

    users = {ImageConfig.__dataclass_fields__["user"].default, images.NOBODY, stack.NOBODY, stack.GRAFANA_USER}
    return {int(u.split(":")[0]) for u in users}


def test_imds_guard_is_written_for_the_container_users_and_not_applied_under_root(target):
    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    r = target.root
    for path in ("/etc/ferry/imds-guard.rules", "/etc/systemd/system/ferry-imds-guard.service"):
        assert target.check(["stat", "-c", "%a %U:%G", f"{r}{path}"], "stat").stdout.strip() == "644 root:root"
    rules = target.read(f"{r}/etc/ferry/imds-guard.rules")
    body = [line for line in rules.splitlines() if line and not line.startswith("#")]
    assert body[:2] == ["*filter", ":FERRY-IMDS - [0:0]"] and body[-1] == "COMMIT"
    uids = set()
    for line in body[2:-1]:
        assert line.startswith(f"-A FERRY-IMDS -d {IMDS}/32 -m owner --uid-owner "), line
        assert line.endswith(" -j REJECT --reject-with icmp-admin-prohibited"), line
        uids.add(int(line.split("--uid-owner ")[1].split()[0]))
    assert uids == imds_uids_of_ferrys_containers() == {65532, 65534, 472}
    assert 0 not in uids  # root (the host's own services, cloud-init, the SSM agent) keeps IMDS
    unit = target.read(f"{r}/etc/systemd/system/ferry-imds-guard.service")
    assert "ExecStart=/usr/sbin/iptables-restore --noflush /etc/ferry/imds-guard.rules\n" in unit
    assert "Before=network-pre.target docker.service" in unit  # before any container restarts at boot
    assert "WantedBy=multi-user.target" in unit and "RemainAfterExit=yes" in unit
    assert "changed config for: nginx docker ferry-imds-guard" in out  # noted, but nothing started


def _netns_check(target, script: str):
    """Run ``script`` with sh in a private network namespace of its own (loopback only): rules
    loaded there vanish with it, this machine's firewall is never touched."""
    r = target.run(["unshare", "--net", "true"])
    # private network namespaces work on these machines and in their CI (ENVIRONMENT.md): if
    # not, the IMDS rules are untested, which must show as a failure, not a skip
    assert r.exit_code == 0, f"unshare --net failed, so the IMDS rules cannot be tested: {r.stderr}"
    target.write(f"{target.work}/netns.sh", script)
    return target.run(["unshare", "--net", "sh", f"{target.work}/netns.sh"], timeout=60)


# Connect to 169.254.169.254:80 (a listener inside the namespace) as each uid.
PROBE = f"""
import json, socket, subprocess, sys
srv = socket.socket()
srv.bind(("{IMDS}", 80))
srv.listen(64)
code = "import socket; socket.create_connection(('{IMDS}', 80), timeout=5).close()"
out = {{}}
for uid in sys.argv[1:]:
    r = subprocess.run(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=30)
    out[uid] = "reached" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1]
print(json.dumps(out))
"""


def test_imds_guard_refuses_exactly_the_container_users_and_loads_idempotently(target):
    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    r = target.root
    unit = target.read(f"{r}/etc/systemd/system/ferry-imds-guard.service")
    starts = [line[len("ExecStart="):].replace("/etc/ferry/", f"{r}/etc/ferry/")
              for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(starts) == 2
    target.write(f"{target.work}/probe.py", PROBE)
    start = "\n".join(f"{s} || exit 10" for s in starts)
    script = (f"set -e\n{start}\n{start}\n"  # the unit started twice (a reboot, a restart): no duplicate
              f"iptables -w -S\n"
              f"ip link set lo up\nip addr add {IMDS}/32 dev lo\n"
              f"python3 {target.work}/probe.py 0 1000 65532 65534 472\n")
    res = _netns_check(target, script)
    assert res.exit_code == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines.count("-A OUTPUT -j FERRY-IMDS") == 1, res.stdout
    assert sum("--uid-owner" in line for line in lines) == 3, res.stdout
    reached = json.loads(lines[-1])
    assert reached["0"] == "reached" and reached["1000"] == "reached", reached  # not covered: other uids
    for uid in ("65532", "65534", "472"):
        assert reached[uid] != "reached", reached
        # REJECT --reject-with icmp-admin-prohibited: connect() fails at once with EHOSTUNREACH
        assert "[Errno 113] No route to host" in reached[uid], reached


def test_imds_rules_pass_iptables_restore_test_and_a_broken_file_does_not(target):
    """The check prepare-host runs before loading them on a host (`iptables-restore --test`)."""
    run_script(target, "--root", target.root)
    rules = f"{target.root}/etc/ferry/imds-guard.rules"
    broken = f"{target.work}/broken.rules"
    target.check(["sh", "-c", f"sed 's/--uid-owner/--uid-ownr/' {rules} > {broken}"], "break a copy")
    res = _netns_check(target, f"iptables-restore --test --noflush {rules} && echo good\n"
                               f"iptables-restore --test --noflush {broken} || echo broken-rejected\n"
                               f"iptables -w -S | grep -c FERRY || true\n")
    assert res.stdout.split() == ["good", "broken-rejected", "0"], res.stdout + res.stderr  # --test loads nothing


def test_written_nginx_config_is_accepted_by_nginx(target):
    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    main = f"{target.work}/nginx.conf"
    # as Debian's nginx.conf includes them: modules-enabled at main level, conf.d inside http
    target.write(main, f"pid {target.work}/nginx.pid;\n"
                       f"include {target.root}/etc/nginx/modules-enabled/*.conf;\nevents {{}}\nhttp {{\n"
                       f"    include {target.root}/etc/nginx/conf.d/ferry.conf;\n}}\n")
    r = target.run(["nginx", "-t", "-c", main, "-e", f"{target.work}/error.log"])
    assert r.ok, r.stderr


def test_old_workers_close_long_lived_connections_after_the_chosen_timeout(target):
    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    main = target.read(f"{target.root}/etc/nginx/modules-enabled/90-ferry-main.conf")
    assert "worker_shutdown_timeout 30s;" in main  # deploy.drain_timeout's default
    code, out = run_script(target, "--root", target.root, "--worker-shutdown-timeout", "120")
    assert code == 0, out
    assert "  changed    /etc/nginx/modules-enabled/90-ferry-main.conf\n" in out
    assert "worker_shutdown_timeout 120s;" in target.read(f"{target.root}/etc/nginx/modules-enabled/90-ferry-main.conf")


def test_drift_is_repaired_and_only_the_drift_is_reported(target):
    run_script(target, "--root", target.root)
    r = target.root
    target.check(["sh", "-c", f"rm {r}/etc/docker/daemon.json && chmod 0755 {r}/opt/ferry && "
                              f"echo '[Journal]' > {r}/etc/systemd/journald.conf.d/ferry.conf"], "make drift")
    code, out = run_script(target, "--root", target.root)
    assert code == 0, out
    changed = sorted(line.split()[1] for line in out.splitlines() if line.startswith("  changed "))
    assert changed == ["/etc/docker/daemon.json", "/etc/systemd/journald.conf.d/ferry.conf", "/opt/ferry/"]
    assert "prepare-host: 3 changed" in out
    assert "changed config for: docker systemd-journald" in out
    assert target.check(["stat", "-c", "%a", f"{r}/opt/ferry"], "stat").stdout.strip() == "750"


def test_ecr_login_through_the_instance_role_keeps_other_registries(target):
    cfg = f"{target.root}/root/.docker/config.json"
    target.check(["mkdir", "-p", f"{target.root}/root/.docker"], "mkdir")
    target.write(cfg, json.dumps({"auths": {"registry.example.com": {"auth": "eDp5"}}}))
    code, out = run_script(target, "--root", target.root, "--ecr-registry", ECR)
    assert code == 0, out
    assert "amazon-ecr-credential-helper" in out
    assert json.loads(target.read(cfg)) == {"auths": {"registry.example.com": {"auth": "eDp5"}},
                                            "credHelpers": {ECR: "ecr-login"}}
    code, out = run_script(target, "--root", target.root, "--ecr-registry", ECR)
    assert "prepare-host: nothing changed" in out, out


def test_missing_packages_are_never_installed_under_root(target):
    fake = f"{target.work}/fakebin"
    target.check(["mkdir", "-p", fake], "mkdir")
    # dpkg-query that claims logrotate is not installed; every other package answers truthfully
    target.write(f"{fake}/dpkg-query", '#!/bin/sh\nfor a; do last="$a"; done\n'
                                       'if [ "$last" = logrotate ]; then printf "unknown ok not-installed"; exit 1; fi\n'
                                       'exec /usr/bin/dpkg-query "$@"\n', mode="0755")
    code, out = run_script(target, "--root", target.root, env=f"PATH={fake}:$PATH")
    assert code == 3, out
    assert "packages missing: logrotate; --root never installs" in out
    assert target.run(["test", "-e", f"{target.root}/opt/ferry"]).exit_code != 0  # stopped before writing


@pytest.mark.parametrize("args, message", [
    (["--root", "relative/dir"], "--root must be an absolute path"),
    (["--bogus"], "unknown argument '--bogus'"),
    (["--ecr-registry", "registry.example.com"], "is not an ECR registry host"),
    (["--worker-shutdown-timeout", "30s"], "is not a whole number of seconds"),
])
def test_bad_arguments_exit_2_with_the_fix(target, args, message):
    code, out = run_script(target, *args)
    assert code == 2 and message in out, out
