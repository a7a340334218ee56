"""The shipped Prometheus config, alert rules and Grafana dashboards are valid, current, and
use only metrics that are exported (by /api/v1/prometheus/metrics/ here; runtime metrics are
proven against the real llama.cpp container in test_prometheus_e2e.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from deployments.runtimes.llamacpp import METRICS as LLAMACPP_METRICS
from monitoring.alerts import RULES, render_rules
from tests.monitoring.prometheus import promql
from tests.monitoring.prometheus.promserver import (
    DASHBOARDS,
    REPO,
    SHIPPED_CONFIG,
    SHIPPED_RULES,
    binary,
)

PROMETHEUS_BUILTIN = {"up"}  # synthesized by Prometheus for every target


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_shipped_rules() -> None:
    result = promtool("check", "rules", str(SHIPPED_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


def test_promtool_accepts_the_shipped_config(tmp_path: Path) -> None:
    # promtool reads the credentials file and the rule files: give it the compose layout
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    token = tmp_path / "prometheus_token"
    token.write_text("a-scrape-token\n")
    text = SHIPPED_CONFIG.read_text().replace("/run/secrets/prometheus_token", str(token))
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "fleet.yml").write_bytes(SHIPPED_RULES.read_bytes())
    (tmp_path / "prometheus.yml").write_text(text)
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["slm-fleet"]["metrics_path"] == "/metrics"
    assert jobs["slm-fleet-replicas"]["http_sd_configs"][0]["url"].endswith(
        "/api/v1/prometheus/targets/"
    )


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with a PromQL syntax error is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: fleet_nodes{state=\n"
    )
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0


def test_the_shipped_rules_file_is_generated_from_monitoring_alerts() -> None:
    assert SHIPPED_RULES.read_text() == render_rules(), (
        "docker/prometheus/rules/fleet.yml differs from monitoring/alerts.py; regenerate it "
        "with the command in the file's first lines"
    )


def test_the_issue_names_every_rule_it_asks_for() -> None:
    names = {rule.name for rule in RULES}
    assert {
        "FleetNodeUnreachable",
        "FleetReplicaCrashLooping",
        "FleetRolloutFailed",
        "FleetRolloutPaused",
        "FleetQueueDepthHigh",
        "FleetNodeDiskNearlyFull",
        "FleetGpuMemoryNearlyFull",
    } <= names
    queue = next(rule for rule in RULES if rule.name == "FleetQueueDepthHigh")
    assert queue.hold.total_seconds() == 300


def test_dashboards_are_provisioned_and_valid() -> None:
    boards = {p.name: json.loads(p.read_text()) for p in DASHBOARDS.glob("*.json")}
    assert set(boards) == {"fleet-overview.json", "deployment-detail.json"}
    uids = {board["uid"] for board in boards.values()}
    assert len(uids) == 2
    for board in boards.values():
        assert board["panels"], board["title"]
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "slm-fleet-prometheus"
    datasource = yaml.safe_load(
        (REPO / "docker/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["uid"] == "slm-fleet-prometheus"
    provider = yaml.safe_load(
        (REPO / "docker/grafana/provisioning/dashboards/slm-fleet.yml").read_text()
    )
    compose = yaml.safe_load((REPO / "docker/compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(
        m.endswith(":" + provider["providers"][0]["options"]["path"] + ":ro") for m in mounts
    )
    assert {"prometheus", "grafana"} <= set(compose["services"])


def test_promql_name_extraction() -> None:
    """The name extraction the export checks rest on finds names and only names."""
    assert promql.metric_names(
        'histogram_quantile(0.95, sum by (le, loop) (rate(fleet_x_bucket{a="b"}[5m])))'
    ) == {"fleet_x_bucket"}
    assert promql.metric_names('100 * a_free / a_total < on() group_left() max(t{name="d"})') == {
        "a_free",
        "a_total",
        "t",
    }
    assert promql.metric_names(
        'rate(llamacpp:tokens_predicted_total{deployment="$deployment"}[1m])'
    ) == {"llamacpp:tokens_predicted_total"}


def used_metrics() -> dict[str, set[str]]:
    """Every metric name a rule or a dashboard uses -> where."""
    used: dict[str, set[str]] = {}
    for expr in promql.rule_expressions(SHIPPED_RULES):
        for name in promql.metric_names(expr):
            used.setdefault(name, set()).add("rules/fleet.yml")
    for board, exprs in promql.dashboard_expressions(DASHBOARDS).items():
        for expr in exprs:
            for name in promql.metric_names(expr):
                used.setdefault(name, set()).add(board)
    return used


@pytest.mark.django_db
def test_every_fleet_metric_used_by_a_rule_or_dashboard_is_exported(
    api_client_for, personas
) -> None:
    from tests.monitoring.prometheus.test_exposition import populate

    populate(personas["admin"])
    response = api_client_for("viewer").get("/api/v1/prometheus/metrics/")
    assert response.status_code == 200
    exported = promql.exported(response.content.decode())
    used = used_metrics()
    ours = {n: where for n, where in used.items() if not n.startswith("llamacpp:")}
    missing = {
        name: sorted(where)
        for name, where in ours.items()
        if name not in exported and name not in PROMETHEUS_BUILTIN
    }
    assert not missing, f"used but not exported by /api/v1/prometheus/metrics/: {missing}"
    runtime = {n for n in used if n.startswith("llamacpp:")}
    assert runtime, "the deployment dashboard charts the runtime's own metrics"
    # declared by the adapter; test_prometheus_e2e proves them against the real server
    assert runtime <= set(LLAMACPP_METRICS), runtime - set(LLAMACPP_METRICS)
    assert {n for n in used if n.startswith("fleet_")} >= {
        "fleet_nodes",
        "fleet_replicas",
        "fleet_jobs",
        "fleet_reconcile_duration_seconds_bucket",
        "fleet_task_duration_seconds_bucket",
        "fleet_node_heartbeat_age_seconds",
        "fleet_queue_depth",
    }
