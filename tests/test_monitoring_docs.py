"""The alert rules and the Grafana dashboard in docs/: they parse, they name only metrics
the code exports, every rule has a unit test, and promtool (Debian's `prometheus`
package) checks and runs those tests where it is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

import ingress.metrics  # noqa: F401  (the ingress's and the processors' metrics on
import processors.metrics  # noqa: F401  the default registry)
from outbox.db import make_engine, make_sessionmaker
from processors.backlog import BacklogCollector

DOCS = Path(__file__).resolve().parents[1] / "docs"
RULES = DOCS / "prometheus" / "outbox-alerts.yml"
RULE_TESTS = DOCS / "prometheus" / "outbox-alerts.test.yml"
DASHBOARD = DOCS / "grafana" / "outbox-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)
METRIC = re.compile(r"\boutbox_[a-z_]+\b")


@pytest.fixture(scope="module")
def exported(sqlite_template) -> set[str]:
    """Every sample name the ingress, the processors and the sweeper's gauges export."""
    engine = make_engine(f"sqlite:///{sqlite_template}")
    backlog = CollectorRegistry()
    backlog.register(BacklogCollector(make_sessionmaker(engine)))
    try:
        return {
            name
            for registry in (REGISTRY, backlog)
            for family in registry.collect()
            for name in _sample_names(family.name, family.type)
        }
    finally:
        engine.dispose()


#: The samples each type of metric family exposes (a labelled family shows none until a
#: child exists, so they are derived from its type).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def _sample_names(name: str, kind: str) -> list[str]:
    return [name + suffix for suffix in _SUFFIXES.get(kind, ("",))]


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_every_alert_rule_is_complete_and_names_exported_metrics(exported):
    found = rules()
    assert {rule["alert"] for rule in found} >= {
        "OutboxBacklogAging",
        "OutboxDeadEvents",
        "OutboxDoorbellFailing",
        "OutboxIngress5xx",
        "OutboxUsageUnreported",
    }
    for rule in found:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        unknown = set(METRIC.findall(rule["expr"])) - exported
        assert not unknown, f"{rule['alert']} names metrics nobody exports: {unknown}"


def test_every_alert_rule_has_a_test_that_fires_it_and_one_that_does_not():
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]  # fmt: skip
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"nothing fires {rule['alert']}"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} never silent"


def test_the_dashboard_parses_and_queries_only_exported_metrics(exported):
    document = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    queries = dashboard_queries()
    assert queries
    for query in queries:
        unknown = set(METRIC.findall(query)) - exported
        assert not unknown, f"{query!r} names metrics nobody exports: {unknown}"


@needs_promtool
def test_promtool_checks_the_rules_and_passes_their_tests():
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    # Grafana's $__rate_interval is not PromQL: a recording rule of each query with a
    # plain range lets promtool's parser check it.
    records = [
        {"record": f"dashboard:query{n}", "expr": query.replace("$__rate_interval", "5m")}
        for n, query in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
