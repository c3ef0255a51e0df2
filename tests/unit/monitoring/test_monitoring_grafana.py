"""Grafana is not packaged for these machines, so its files are checked here against Grafana's
documented schema (grafana.com/docs/grafana/latest/administration/provisioning/ and the
provisioning types in Grafana's source, pkg/services/provisioning/{datasources,dashboards}),
and the dashboards against the data source they are provisioned with."""

from __future__ import annotations

import json
import re

import yaml

from ferry.monitoring import dashboards
from ferry.monitoring.settings import settings
from ferry.monitoring.stack import grafana_env, specs

from .helpers import ROOT, config

PROVISIONING = ROOT / "ferry" / "assets" / "monitoring" / "grafana" / "provisioning"
# apiVersion 1 keys, as Grafana's provisioning reads them (upsertDataSourceFromConfigV1 etc.)
DATASOURCE_FILE_KEYS = {"apiVersion", "datasources", "deleteDatasources", "prune"}
DATASOURCE_KEYS = {"orgId", "orgName", "version", "name", "type", "access", "url", "user", "database", "basicAuth",
                   "basicAuthUser", "withCredentials", "isDefault", "correlations", "jsonData", "secureJsonData",
                   "editable", "uid"}
PROVIDER_FILE_KEYS = {"apiVersion", "providers"}
PROVIDER_KEYS = {"name", "orgId", "folder", "folderUid", "type", "disableDeletion", "editable",
                 "updateIntervalSeconds", "allowUiUpdates", "options"}
PROVIDER_OPTION_KEYS = {"path", "foldersFromFilesStructure"}
ENV_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def load(kind: str) -> list[dict]:
    files = sorted((PROVISIONING / kind).glob("*.yml"))
    assert files, f"no {kind} provisioning file"
    return [yaml.safe_load(p.read_text()) for p in files]


def env_refs(doc) -> set[str]:
    refs = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            assert "$" not in str(k), "Grafana expands variables in values only, never in keys"
            refs |= env_refs(v)
    elif isinstance(doc, list):
        for v in doc:
            refs |= env_refs(v)
    elif isinstance(doc, str):
        refs |= set(ENV_REF.findall(doc))
    return refs


def test_datasources_file_follows_grafanas_provisioning_schema():
    uids = set()
    for doc in load("datasources"):
        assert set(doc) <= DATASOURCE_FILE_KEYS and doc["apiVersion"] == 1
        defaults = 0
        for ds in doc["datasources"]:
            assert set(ds) <= DATASOURCE_KEYS, set(ds) - DATASOURCE_KEYS
            assert ds["name"] and ds["type"] in ("prometheus", "alertmanager")
            assert ds["access"] == "proxy"  # the browser never talks to Prometheus directly
            assert ds["editable"] is False
            assert ds["uid"] not in uids and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", ds["uid"])
            uids.add(ds["uid"])
            defaults += bool(ds.get("isDefault"))
        assert defaults == 1
    assert {"prometheus", "alertmanager"} <= uids


def test_dashboard_provider_follows_grafanas_provisioning_schema_and_points_at_the_mounted_json():
    s = settings(config())
    grafana = specs(s, {"prometheus": "p", "alertmanager": "a", "node_exporter": "n", "nginx_exporter": "x",
                        "blackbox_exporter": "b", "grafana": "g"})[-1]
    env = dict(grafana.env)
    mounts = {m.target: m.source for m in grafana.mounts}
    for doc in load("dashboards"):
        assert set(doc) <= PROVIDER_FILE_KEYS and doc["apiVersion"] == 1
        for p in doc["providers"]:
            assert set(p) <= PROVIDER_KEYS, set(p) - PROVIDER_KEYS
            assert set(p["options"]) <= PROVIDER_OPTION_KEYS
            assert p["type"] == "file" and p["allowUiUpdates"] is False
            path = ENV_REF.sub(lambda m: env[m.group(1)], p["options"]["path"])
            assert path in mounts and mounts[path].endswith("/etc/grafana/dashboards")


def test_every_variable_the_provisioning_files_use_is_set_in_grafanas_environment():
    env = grafana_env(settings(config()))
    for kind in ("datasources", "dashboards"):
        for doc in load(kind):
            assert env_refs(doc) <= set(env), env_refs(doc) - set(env)
    assert env["FERRY_PROMETHEUS_URL"] == "http://127.0.0.1:9090"


def all_dashboards() -> dict[str, dict]:
    s = settings(config('probe_url = "https://hello.example.com/"'))
    return {name: json.loads(text) for name, text in dashboards.generate(s).items()}


def test_dashboards_are_valid_grafana_json_on_the_provisioned_datasource():
    docs = all_dashboards()
    assert set(docs) == {"hello-service.json", "host.json", "nginx.json"}
    uids = set()
    for name, doc in docs.items():
        assert doc["title"] and doc["schemaVersion"] >= 36
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", doc["uid"]) and doc["uid"] not in uids
        uids.add(doc["uid"])
        ids = []
        for p in dashboards._walk(doc["panels"]):
            ids.append(p["id"])
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (name, p["title"])
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "prometheus"}, (name, p["title"])
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(set(refs)) == len(refs), (name, p["title"])
            for t in p["targets"]:
                assert t["expr"].strip(), (name, p["title"])
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        names = [a["name"] for a in doc["annotations"]["list"]]
        assert names == ["Annotations & Alerts", "Deploys"]


def test_releases_are_marked_on_every_dashboard_at_the_time_they_happened():
    for name, doc in all_dashboards().items():
        deploys = doc["annotations"]["list"][1]
        assert deploys["useValueForTime"] is True
        assert deploys["expr"].startswith("ferry_deploy_last_event_timestamp_seconds")
        assert deploys["expr"].endswith("* 1000")  # Grafana wants milliseconds
    svc = all_dashboards()["hello-service.json"]["annotations"]["list"][1]
    assert svc["expr"] == 'ferry_deploy_last_event_timestamp_seconds{app="hello"} * 1000'


def test_service_dashboard_shows_red_by_colour_and_release():
    doc = all_dashboards()["hello-service.json"]
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboards._walk(doc["panels"]) if p.get("targets")}
    assert "sum by (colour, release) (rate(hello_requests_total" in exprs["Requests per second"][0]
    assert 'status=~"5.."' in exprs["5xx ratio"][0]
    latency = exprs["Latency p50 / p95 / p99 by colour and release"]
    assert [e.split(",")[0] for e in latency] == [
        "histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99"]
    # each quantile per colour and release: the buckets are summed by le, colour and release only
    # (summing across colours would blend a slow new release into the old one)
    for e in latency:
        groupings = re.findall(r"sum by \(([^)]*)\)", e)
        assert len(groupings) == 1, e
        assert {x.strip() for x in groupings[0].split(",")} == {"le", "colour", "release"}, e
        assert "hello_request_duration_seconds_bucket" in e
    legends = [t["legendFormat"] for p in dashboards._walk(doc["panels"])
               if p.get("title") == "Latency p50 / p95 / p99 by colour and release" for t in p["targets"]]
    assert legends == ["p50 {{colour}} {{release}}", "p95 {{colour}} {{release}}", "p99 {{colour}} {{release}}"]
    # no latency panel anywhere on the dashboard sums its buckets across colours
    for title, es in exprs.items():
        for e in es:
            if "histogram_quantile" in e:
                assert "colour" in e and "release" in e, (title, e)
    assert "Certificate days left" in exprs  # the probe URL is https here


def test_the_certificate_panel_appears_only_for_an_https_url():
    doc = json.loads(dashboards.generate(settings(config()))["hello-service.json"])
    assert "Certificate days left" not in [p["title"] for p in dashboards._walk(doc["panels"])]


def test_queries_lists_every_panel_target_and_annotation_and_fills_grafanas_variables():
    doc = all_dashboards()["nginx.json"]
    qs = dashboards.queries(doc)
    n_targets = sum(len(p.get("targets") or []) for p in dashboards._walk(doc["panels"]))
    assert len(qs) == n_targets + 1
    q = dashboards.interpolate("rate(x[$__rate_interval]) + increase(y[$__range])", "20s", "10m")
    assert q == "rate(x[20s]) + increase(y[10m])"


def test_checked_in_dashboards_are_what_the_generator_makes_for_the_repository():
    from ferry.config import load

    s = settings(load(ROOT / "ferry.toml"))
    for name, text in dashboards.generate(s).items():
        assert (ROOT / "monitoring" / "dashboards" / name).read_text() == text, \
            f"monitoring/dashboards/{name} is stale: run `ferry monitoring render`"
