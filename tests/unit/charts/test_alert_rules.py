"""The chart's PrometheusRule, as rendered: `promtool check rules` and `promtool test rules`.

The unit tests replay series through Prometheus' own rule engine and check which alerts fire,
with their labels and rendered annotations, at chosen times.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from chart_render import manifests, only, render_templates

STALL_MINUTES = 30
FAILURE_WINDOW = "15m"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (make system-deps)")
    return path


@pytest.fixture(scope="module")
def rules_file(chart, tmp_path_factory):
    values = {"metrics": {"prometheusRule": {"enabled": True, "stallMinutes": STALL_MINUTES,
                                             "failureWindow": FAILURE_WINDOW}}}
    rule = only(manifests(render_templates(chart, values)), "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "kubetune-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    return path


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules(promtool, rules_file):
    result = run_promtool(promtool, "check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def alert(labels: dict, summary: str, description: str) -> dict:
    return {"exp_labels": labels, "exp_annotations": {"summary": summary, "description": description}}


def failed(kind: str, reason: str) -> dict:
    return alert(
        {"severity": "warning", "kind": kind, "reason": reason},
        f"A {kind} failed ({reason})",
        f"A {kind} reached the Failed phase with reason {reason}. kubectl get {kind} -A shows which; "
        "its status and Events say why.",
    )


def stalled(namespace: str, name: str, silent_for: str) -> dict:
    return alert(
        {"severity": "warning", "namespace": namespace, "resource": name},
        f"{namespace}/{name} has made no progress for {STALL_MINUTES} minutes",
        f"No progress event from {namespace}/{name} for {silent_for}. Check its pods (kubectl -n {namespace} "
        f"get pods -l kubetune.dev/resource={name}) for a hang, a crash loop or a stuck download.",
    )


UNIT_TESTS = {
    "interval": "1m",
    "input_series": [
        # Progress timestamps: one job last reported at t=0, one reports every minute.
        {"series": 'kubetune_training_last_progress_timestamp_seconds{namespace="team-a",resource="stuck"}',
         "values": "0x40"},
        {"series": 'kubetune_training_last_progress_timestamp_seconds{namespace="team-a",resource="busy"}',
         "values": "0+60x40"},
        # A failure series that appears with its first failure at 5m...
        {"series": 'kubetune_resource_failures_total{kind="finetunejob",reason="OutOfMemory"}',
         "values": "_x5 1x35"},
        # ...one that already existed and increases at 20m, and one that stays at zero.
        {"series": 'kubetune_resource_failures_total{kind="evalrun",reason="BadConfig"}', "values": "0x19 1x20"},
        {"series": 'kubetune_resource_failures_total{kind="preferencedataset",reason="BadData"}', "values": "0x40"},
        # An EvalRun's results are exported for ten minutes after it ended, then their series end.
        {"series": 'kubetune_eval_gates_failed{namespace="team-a",resource="gated"}', "values": "2x10 _x30"},
        {"series": 'kubetune_eval_gates_failed{namespace="team-a",resource="passed"}', "values": "0x10 _x30"},
        {"series": 'kubetune_operator_reconciles_total{kind="finetunejob",result="error"}', "values": "0+1x40"},
        {"series": 'kubetune_operator_reconciles_total{kind="evalrun",result="error"}', "values": "3x40"},
        {"series": 'kubetune_operator_reconciles_total{kind="evalrun",result="success"}', "values": "0+5x40"},
    ],
    "alert_rule_test": [
        {"eval_time": "29m", "alertname": "KubetuneJobStalled", "exp_alerts": []},
        {"eval_time": "31m", "alertname": "KubetuneJobStalled", "exp_alerts": [stalled("team-a", "stuck", "31m 0s")]},
        {"eval_time": "10m", "alertname": "KubetuneResourceFailed",
         "exp_alerts": [failed("finetunejob", "OutOfMemory")]},
        {"eval_time": "25m", "alertname": "KubetuneResourceFailed", "exp_alerts": [failed("evalrun", "BadConfig")]},
        {"eval_time": "38m", "alertname": "KubetuneResourceFailed", "exp_alerts": []},
        {"eval_time": "25m", "alertname": "KubetuneEvalGateFailed", "exp_alerts": []},
        {"eval_time": "5m", "alertname": "KubetuneEvalGateFailed", "exp_alerts": [alert(
            {"severity": "info", "namespace": "team-a", "resource": "gated"},
            "EvalRun team-a/gated failed 2 gate(s)",
            "The candidate of EvalRun team-a/gated did not pass its gates and is not promoted; "
            "status.gates and the report say which.",
        )]},
        {"eval_time": "10m", "alertname": "KubetuneOperatorReconcileErrors", "exp_alerts": []},
        {"eval_time": "20m", "alertname": "KubetuneOperatorReconcileErrors", "exp_alerts": [alert(
            {"severity": "warning", "kind": "finetunejob"},
            "The kubetune operator keeps failing to reconcile finetunejob resources",
            "Reconciles of finetunejob have raised errors for 15m. The operator's log names the resource and the error.",
        )]},
    ],
}


def test_alerts_fire_when_and_only_when_they_should(promtool, rules_file):
    tests_file = rules_file.with_name("kubetune-rules.test.yaml")
    tests_file.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": [UNIT_TESTS]}),
        encoding="utf-8",
    )
    result = run_promtool(promtool, "test", "rules", str(tests_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_catch_an_alert_that_never_fires(promtool, rules_file, tmp_path):
    broken = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
    for rule in broken["groups"][0]["rules"]:
        if rule["alert"] == "KubetuneJobStalled":
            rule["expr"] = rule["expr"].replace(f"> {STALL_MINUTES * 60}", "> 1e9")
    (tmp_path / rules_file.name).write_text(yaml.safe_dump(broken), encoding="utf-8")
    tests_file = tmp_path / "kubetune-rules.test.yaml"
    tests_file.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": [UNIT_TESTS]}),
        encoding="utf-8",
    )
    result = run_promtool(promtool, "test", "rules", str(tests_file))
    assert result.returncode != 0
    assert "KubetuneJobStalled" in result.stdout + result.stderr
