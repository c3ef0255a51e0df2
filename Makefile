# ferry: two commands on a fresh Debian 12 machine (as root):
#   make demo   set everything up, bring the local target up, release the sample service
#   make test   set everything up, run the whole test suite
# Both are idempotent: the second run installs nothing and starts nothing new.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
FERRY := $(VENV)/bin/ferry
# Debian packages the local target, the tests and the benchmarks run for real
DEBS := python3-venv docker.io python3-acme unattended-upgrades logrotate amazon-ecr-credential-helper docker-registry nginx openssh-server openssl pebble prometheus \
        prometheus-node-exporter prometheus-nginx-exporter prometheus-alertmanager \
        prometheus-blackbox-exporter hey wrk skopeo umoci apache2-utils cloud-init curl iproute2 file \
        bubblewrap util-linux mount postgresql qemu-user-static
STAMP := .venv/.ferry-installed

.PHONY: setup demo demo-tls test test-unit bench clean-local help

help:
	@echo "make demo    # set up, start the local target, release the sample service"
	@echo "make demo-tls # the sample over HTTPS with a pebble certificate"
	@echo "make test    # set up, run the whole test suite"
	@echo "make bench   # run the benchmarks (writes BENCHMARKS.md figures)"

# ferry's own bytecode, as a wheel install writes it (an editable install does not, and with
# PYTHONDONTWRITEBYTECODE set every command would compile ferry again: ~0.07 s per run).
setup: $(STAMP)
	@$(PY) -m compileall -q ferry

# Re-run when pyproject.toml changes; otherwise the whole setup is one stat() call.
$(STAMP): pyproject.toml Makefile scripts/install-debs
	scripts/install-debs $(DEBS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[infra,certs,test]'
	touch $(STAMP)

demo: setup
	$(FERRY) local up
	scripts/release

# the sample over HTTPS with a certificate from pebble (Let's Encrypt's test CA) on this machine
demo-tls: setup
	$(FERRY) local up --acme
	$(FERRY) -c examples/ferry-tls.toml release
	@# --force: pebble makes a new root every time it starts, so a certificate from an earlier
	@# pebble (kept: 5 years left) would no longer verify
	$(FERRY) -c examples/ferry-tls.toml certs issue --force
	@# verified against pebble's issuing root (it changes every time pebble starts), not -k
	@$(PY) -c 'import sys; from ferry.local import pebble; sys.stdout.write(pebble.root_pem("/var/lib/ferry-local"))' \
	    > .venv/pebble-root.pem
	@curl -fsS -o /dev/null -w 'https://hello.ferry.test:8443/ answered %{http_code} over HTTP/%{http_version}, chain verified\n' \
	    --resolve hello.ferry.test:8443:127.0.0.1 --cacert .venv/pebble-root.pem https://hello.ferry.test:8443/healthz

# the tests' and benchmarks' loopback ports (colours, nginx, registries, moto) sit partly in the
# kernel's range for outgoing connections (32768-60999): reserved, so no outgoing connection
# (nginx's own, to a colour) takes a port the next colour is about to bind
RESERVE_PORTS := sysctl -qw net.ipv4.ip_local_reserved_ports=32768-39999 2>/dev/null || \
	echo "warning: could not reserve ports 32768-39999 (not root?): a test may find a colour's port taken"

test: setup
	@$(RESERVE_PORTS)
	$(FERRY) local up
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

# all of BENCHMARKS.md (tables, CSV and plots under benchmarks/results/), in under 15 minutes
bench: setup
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	@$(RESERVE_PORTS)
	$(FERRY) local up
	$(PY) benchmarks/build.py --write BENCHMARKS.md
	$(PY) benchmarks/release.py --write
	$(PY) benchmarks/hosts.py --write

clean-local:
	-$(FERRY) local down
