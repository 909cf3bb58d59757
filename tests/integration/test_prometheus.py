"""The shipped alert rules and dashboard, against Debian's Prometheus and a real statebus.

`promtool` checks docker/prometheus/alerts.yml and runs its unit tests (every alert
fires on its cases, none on a healthy process); a real `prometheus` scrapes a running
server, evaluates the rules, and finds the metrics the rules and the dashboard use.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from statebus.testing.server import RunningServer, free_port
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docker" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "docker" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "statebus.json"


def binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (apt-get install prometheus; .ci/run does)"
    return found


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules_and_every_alert_fires_in_its_tests() -> None:
    promtool = binary("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in cases
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in cases
        for case in test["alert_rule_test"]
        if not case.get("exp_alerts")
    }
    assert fired == set(alert_names()), "every alert needs a case that fires it"
    assert quiet == set(alert_names()), "every alert needs a case where it stays quiet"


async def test_prometheus_scrapes_statebus_and_evaluates_the_rules(
    server: RunningServer, tmp_path: Path
) -> None:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "statebus", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = await asyncio.create_subprocess_exec(
        binary("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:

            async def query(expr: str) -> list[dict[str, object]]:
                try:
                    answer = (await api.get("/api/v1/query", params={"query": expr})).json()
                except httpx.TransportError:
                    return []
                result: list[dict[str, object]] = answer["data"]["result"]
                return result

            async def scraped() -> bool:
                return [r["value"][1] for r in await query('up{job="statebus"}')] == ["1"]  # type: ignore[index]

            await wait_for(scraped, timeout=60, what="Prometheus scraping statebus")
            (build,) = await query("statebus_build_info")
            labels = build["metric"]
            assert isinstance(labels, dict) and labels["version"] and labels["commit"]
            for name in (
                "statebus_ready",
                "statebus_notify_queue_usage",
                "statebus_oldest_pending_notification_seconds",
                "statebus_envelope_readers_connected",
                "statebus_pool_waiting",
                'process_resident_memory_bytes{job="statebus"}',
                'process_open_fds{job="statebus"}',
                'process_cpu_seconds_total{job="statebus"}',
            ):
                await wait_for(lambda n=name: _has(query, n), timeout=10, what=name)  # type: ignore[misc]
            assert (await query("statebus_ready"))[0]["value"][1] == "1"  # type: ignore[index]

            async def rules_healthy() -> bool:
                groups = (await api.get("/api/v1/rules")).json()["data"]["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                return len(rules) == len(alert_names()) and all(
                    rule["health"] == "ok" for rule in rules
                )

            await wait_for(rules_healthy, timeout=30, what="every rule evaluated without error")
            firing = (await api.get("/api/v1/alerts")).json()["data"]["alerts"]
            assert [a for a in firing if a["state"] == "firing"] == []
    finally:
        prometheus.terminate()
        await prometheus.wait()


async def _has(query: object, expr: str) -> bool:
    assert callable(query)
    return bool(await query(expr))


def test_the_dashboard_and_the_rules_use_only_metrics_statebus_exports() -> None:
    from statebus import metrics

    names = {"up"}
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in ("_total", "_bucket", "_sum", "_count"))
        names.update(sample.name for sample in family.samples)
    exprs = [
        rule["expr"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {m for expr in exprs for m in re.findall(r"\b(?:statebus_\w+|process_\w+|up)\b", expr)}
    assert used - names == set()
    for wanted in (
        "statebus_commit_to_socket_seconds_bucket",
        "statebus_notify_queue_usage",
        "statebus_stripe_inbox_events",
        "statebus_pool_waiting",
        "process_resident_memory_bytes",
    ):
        assert wanted in used, f"the dashboard or the rules should show {wanted}"
