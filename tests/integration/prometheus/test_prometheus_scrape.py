"""A real Prometheus (Debian's binary, on 127.0.0.1) scrapes the operator's metrics and runs the chart's alerts.

The operator's own `/metrics` endpoint (`runtime.operator.metrics_app`, what `kubetune operator`
serves on :9090) runs in a subprocess, after values are set through the `OperatorMetrics` API the
handlers use. Prometheus scrapes it the
way the chart's ServiceMonitor does (honor_labels, with the operator's namespace as a target
label), loads the rendered PrometheusRule, and the test reads series and alerts back through
the query API, polling with a deadline rather than sleeping a fixed time.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import helm_python as helm
import pytest
import yaml

CHART = Path(__file__).resolve().parents[3] / "charts" / "kubetune"
OPERATOR_NAMESPACE = "kubetune-system"
DEADLINE_SECONDS = 30

OPERATOR_METRICS = textwrap.dedent(
    """
    import asyncio
    import sys
    from aiohttp import web
    from kubetune_operator.observability.metrics import operator_metrics
    from kubetune_operator.runtime.operator import metrics_app

    m = operator_metrics()
    with m.time_reconcile("finetunejob"):
        m.set_phase_counts("finetunejob", {"Running": 2, "Failed": 1})
    m.failures.labels("finetunejob", "OutOfMemory").inc()
    m.record_progress("team-a", "dpo", received_at=1_700_000_000.0)
    m.record_progress("team-a", "sft")
    m.record_eval("team-a", "gate", {"dpo": {"exact_match": {"value": 0.7}}}, gates_failed=1)


    async def serve():
        runner = web.AppRunner(metrics_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, namespace, name = line.split()
            getattr(m, command)(namespace, name)
            print("done", flush=True)
        await runner.cleanup()

    asyncio.run(serve())
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(what: str, attempt: Callable[[], object], process: subprocess.Popen) -> object:
    """Retry `attempt` until it returns something truthy; fail at the deadline or if `process` dies."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prometheus exited with {process.returncode} while waiting for {what}"
        try:
            result = attempt()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"no {what} within {DEADLINE_SECONDS}s")


@pytest.fixture(scope="module")
def operator_endpoint():
    operator = subprocess.Popen(
        [sys.executable, "-c", OPERATOR_METRICS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        port = operator.stdout.readline()
        assert port, "the metrics endpoint exited before serving: its traceback is in the captured stderr"
        yield f"127.0.0.1:{int(port)}", operator
    finally:
        operator.stdin.close()
        operator.wait(timeout=10)


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory) -> Path:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({"metrics": {"prometheusRule": {"enabled": True}}}, name="kubetune",
                                namespace=OPERATOR_NAMESPACE)
    rule = yaml.safe_load(rendered["kubetune/templates/prometheusrule.yaml"])
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, operator_endpoint, rules_file):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: install Debian's prometheus package (make system-deps)")
    target, _ = operator_endpoint
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [{
            "job_name": "kubetune-operator",
            "honor_labels": True,
            "static_configs": [{"targets": [target], "labels": {"namespace": OPERATOR_NAMESPACE}}],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    address = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address={address}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for("ready Prometheus", lambda: urllib.request.urlopen(f"http://{address}/-/ready", timeout=2).status == 200,
                 process)
        yield f"http://{address}", process
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def query(base_url: str, promql: str) -> list[dict]:
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def series(result: list[dict]) -> dict[tuple, float]:
    return {
        tuple(sorted((k, v) for k, v in item["metric"].items() if k not in {"instance", "job"})): float(item["value"][1])
        for item in result
    }


def firing_alerts(base_url: str) -> dict[str, dict]:
    return {a["metric"]["alertname"]: a["metric"] for a in query(base_url, 'ALERTS{alertstate="firing"}')}


@pytest.mark.slow
def test_prometheus_scrapes_the_operator_and_the_alerts_fire(prometheus, operator_endpoint):
    base_url, process = prometheus
    stamp = wait_for("progress timestamp series", lambda: query(
        base_url, 'kubetune_training_last_progress_timestamp_seconds{namespace="team-a", resource="dpo"}'), process)
    assert series(stamp) == {(("__name__", "kubetune_training_last_progress_timestamp_seconds"), ("namespace", "team-a"),
                              ("resource", "dpo")): 1_700_000_000.0}

    assert series(query(base_url, 'kubetune_resources{kind="finetunejob"}')) == {
        (("__name__", "kubetune_resources"), ("kind", "finetunejob"), ("namespace", OPERATOR_NAMESPACE),
         ("phase", "Failed")): 1.0,
        (("__name__", "kubetune_resources"), ("kind", "finetunejob"), ("namespace", OPERATOR_NAMESPACE),
         ("phase", "Running")): 2.0,
    }
    assert series(query(base_url, "kubetune_operator_reconcile_duration_seconds_count")) == {
        (("__name__", "kubetune_operator_reconcile_duration_seconds_count"), ("kind", "finetunejob"),
         ("namespace", OPERATOR_NAMESPACE)): 1.0,
    }
    assert series(query(base_url, 'kubetune_eval_metric{candidate="dpo"}')) == {
        (("__name__", "kubetune_eval_metric"), ("candidate", "dpo"), ("metric", "exact_match"), ("namespace", "team-a"),
         ("resource", "gate")): 0.7,
    }

    expected = {"KubetuneEvalGateFailed", "KubetuneResourceFailed"}
    firing = wait_for("firing alerts", lambda: expected <= firing_alerts(base_url).keys() and firing_alerts(base_url),
                      process)
    assert firing["KubetuneEvalGateFailed"]["resource"] == "gate"
    assert firing["KubetuneResourceFailed"]["reason"] == "OutOfMemory"
    # dpo's last progress is from 2023: its stall alert fires; sft reported just now.
    assert firing["KubetuneJobStalled"]["resource"] == "dpo"


@pytest.mark.slow
def test_a_forgotten_resource_disappears_from_prometheus(prometheus, operator_endpoint):
    base_url, process = prometheus
    _, operator = operator_endpoint
    stamp = "kubetune_training_last_progress_timestamp_seconds"
    selector = '{namespace="team-a", resource="sft"}'
    wait_for("training series", lambda: query(base_url, f"{stamp}{selector}"), process)
    operator.stdin.write("forget team-a sft\n")
    operator.stdin.flush()
    assert operator.stdout.readline().strip() == "done"
    wait_for("the series to go stale", lambda: query(base_url, f"{stamp}{selector}") == [], process)
    assert query(base_url, "{__name__=~'kubetune_.*', namespace='team-a', resource='sft'}") == []
    assert query(base_url, f"{stamp}{{resource='dpo'}}")
    assert query(base_url, 'kubetune_eval_gates_failed{resource="gate"}')
    # An EvalRun's results end a while after the run: its series go stale, and its alert resolves.
    operator.stdin.write("forget_eval team-a gate\n")
    operator.stdin.flush()
    assert operator.stdout.readline().strip() == "done"
    wait_for("the eval series to go stale", lambda: query(base_url, 'kubetune_eval_gates_failed{resource="gate"}') == [],
             process)
    wait_for("the gate alert to resolve", lambda: "KubetuneEvalGateFailed" not in firing_alerts(base_url), process)
