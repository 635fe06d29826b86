"""Every PromQL expression the chart ships parses, and queries only metrics that exist.

Expressions come from the committed dashboards (panel targets and the selectors inside
`label_values(...)` variables) and the rendered PrometheusRule. promtool parses them, as
recording rules of a generated rules file; promql-parser walks each one for its metric names,
which must be exposed by the operator (`OperatorMetrics`) or the pods (`TrainerMetrics`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import promql_parser
import pytest
import yaml
from chart_render import CHART, manifests, only, render_templates
from prometheus_client import CollectorRegistry

from kubetune_operator.observability.metrics import OperatorMetrics
from kubetune_trainer.progress import TrainerMetrics

# Grafana's variables, replaced by something PromQL accepts in their place.
GRAFANA_INTERVALS = {"__rate_interval": "5m", "__range": "1h", "__interval": "1m"}
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
# Labels Prometheus adds to every scraped series: the ServiceMonitor's on the operator's (with
# honorLabels, so the resource's own `namespace` wins), the PodMonitor's (plus its relabelings,
# read from the chart) on the pods'.
SERVICE_MONITOR_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
POD_MONITOR_LABELS = {"job", "instance", "namespace", "pod", "endpoint", "container"}


def concrete(expr: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA_INTERVALS.get(m.group(1), "value"), expr)


def dashboard_expressions() -> dict[str, str]:
    found = {}
    for path in sorted((CHART / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found[f'{path.name} panel "{panel["title"]}" {target["refId"]}'] = target["expr"]
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                match = LABEL_VALUES.match(variable["query"])
                assert match, f"{path.name} variable {variable['name']}: unexpected query {variable['query']}"
                found[f"{path.name} variable {variable['name']}"] = match["selector"]
    return found


def variable_labels() -> dict[str, tuple[str, str]]:
    """`label_values(selector, label)` variables: where -> (selector, label)."""
    found = {}
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for variable in json.loads(path.read_text(encoding="utf-8"))["templating"]["list"]:
            if variable["type"] == "query":
                match = LABEL_VALUES.match(variable["query"])
                found[f"{path.name} variable {variable['name']}"] = (concrete(match["selector"]), match["label"])
    return found


def alert_expressions(chart) -> dict[str, str]:
    rule = only(manifests(render_templates(chart, {"metrics": {"prometheusRule": {"enabled": True}}})),
                "PrometheusRule")
    return {f"alert {r['alert']}": r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}


def exposed_names(*metrics) -> set[str]:
    registry = CollectorRegistry()
    for source in metrics:
        source(registry)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def exposed_metric_names() -> set[str]:
    return exposed_names(OperatorMetrics, TrainerMetrics)


def series_labels(chart) -> dict[str, set[str]]:
    """Every exposed series name -> the labels a query can filter or group it by once scraped."""
    pod_monitor = only(manifests(render_templates(chart, {"metrics": {"podMonitor": {"enabled": True}}})),
                       "PodMonitor")
    relabelled = {r["targetLabel"] for e in pod_monitor["spec"]["podMetricsEndpoints"] for r in e["relabelings"]}
    labels = {}
    for metrics, added in ((OperatorMetrics, SERVICE_MONITOR_LABELS), (TrainerMetrics, POD_MONITOR_LABELS | relabelled)):
        registry = CollectorRegistry()
        metrics(registry)
        for name, collector in registry._names_to_collectors.items():
            labels[name] = set(collector._labelnames) | added | ({"le"} if name.endswith("_bucket") else set())
    return labels


def misused_labels(expr: str, labels: dict[str, set[str]]) -> list[str]:
    """Label matchers and `by` labels that no series under them carries."""
    problems = []

    def selectors(node) -> list:
        found = []
        promql_parser.walk(node, lambda n: found.append(n) if isinstance(n, promql_parser.VectorSelector) else None)
        return found

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            problems.extend(f"{node.name}{{{m.name}}}" for m in node.matchers.matchers
                            if m.name not in labels.get(node.name, set()))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            carried = set().union(*(labels.get(s.name, set()) for s in selectors(node.expr)))
            problems.extend(f"{node.op} by ({label})" for label in node.modifier.labels if label not in carried)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return problems


def metric_names(expr: str) -> list[str | None]:
    names: list[str | None] = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.append(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.fixture(scope="module")
def expressions(chart) -> dict[str, str]:
    found = dashboard_expressions() | alert_expressions(chart)
    assert sum(where.startswith("alert") for where in found) == 4
    assert sum(".json" in where for where in found) > 30
    return {where: concrete(expr) for where, expr in found.items()}


def test_promtool_parses_every_expression(expressions, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (make system-deps)")
    rules = [{"record": f"kubetune:check_{index}", "expr": expr} for index, expr in enumerate(expressions.values())]
    path = tmp_path / "expressions.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "chart-expressions", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    where = dict(enumerate(expressions))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n(rule N is {where})"


def test_every_expression_queries_only_exposed_metrics(expressions):
    exposed = exposed_metric_names()
    for where, expr in expressions.items():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        unknown = [name for name in names if name not in exposed]
        assert not unknown, f"{where}: {unknown} is exposed by neither the operator nor the pods ({expr})"


def test_every_expression_filters_and_groups_by_labels_its_series_carry(chart, expressions):
    labels = series_labels(chart)
    for where, expr in expressions.items():
        assert not misused_labels(expr, labels), f"{where}: {misused_labels(expr, labels)} in {expr}"
    for where, (selector, label) in variable_labels().items():
        name = metric_names(selector)[0]
        assert label in labels[name], f"{where}: {name} has no label {label!r}"


def test_the_label_check_catches_a_label_of_the_other_source(chart):
    labels = series_labels(chart)
    assert misused_labels('kubetune_resources{resource="x"}', labels) == ["kubetune_resources{resource}"]
    assert misused_labels('sum by (name) (kubetune_trainer_loss{kind="finetunejob"})', labels) == [
        "sum by (name)"]
    assert misused_labels('sum by (kind, le) (rate(kubetune_operator_reconcile_duration_seconds_bucket[5m]))',
                          labels) == []


def test_pod_series_on_a_resource_dashboard_belong_to_its_kind():
    """Resources of different kinds may share a name; a job's panels must not show an EvalRun's pods.
    (The operator's per-resource series are of one kind each, by their name.)"""
    pod_series = exposed_names(TrainerMetrics)
    for path, kind in (("kubetune-training.json", "finetunejob"), ("kubetune-eval.json", "evalrun")):
        for panel in json.loads((CHART / "dashboards" / path).read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                for name, matchers in re.findall(r"(\w+)\{([^}]*)\}", target["expr"]):
                    if name in pod_series and "resource=" in matchers:
                        assert f'kind="{kind}"' in matchers, f'{path} panel "{panel["title"]}": {target["expr"]}'


def test_the_name_check_catches_a_misspelt_metric():
    assert metric_names('sum(rate(kubetune_operator_reconciles_totl{kind="x"}[5m])) / kubetune_resources') == [
        "kubetune_operator_reconciles_totl",
        "kubetune_resources",
    ]
    assert "kubetune_operator_reconciles_totl" not in exposed_metric_names()
    assert {"kubetune_eval_prompts_total", "kubetune_operator_reconcile_duration_seconds_bucket",
            "kubetune_trainer_gpu_memory_bytes"} <= exposed_metric_names()


def dashboard_target(dashboard: str, title: str) -> str:
    panels = json.loads((CHART / "dashboards" / dashboard).read_text(encoding="utf-8"))["panels"]
    return next(panel for panel in panels if panel["title"] == title)["targets"][0]["expr"]


@pytest.mark.parametrize(("title", "eval_time", "expected"), [
    ("Failed in range", "90m", [{"labels": "{}", "value": 1}]),
    ("Failures by reason", "52m", [{"labels": '{kind="evalrun", reason="BadConfig"}', "value": 0},
                                   {"labels": '{kind="finetunejob", reason="OutOfMemory"}', "value": 1}]),
])
def test_the_first_failure_of_a_kind_and_reason_is_counted(tmp_path, title, eval_time, expected):
    """A failure counter's series is born at 1 with its first failure; the overview still counts it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (make system-deps)")
    test = {
        "interval": "1m",
        "input_series": [
            {"series": 'kubetune_resource_failures_total{kind="finetunejob",reason="OutOfMemory"}',
             "values": "_x50 1x50"},
            {"series": 'kubetune_resource_failures_total{kind="evalrun",reason="BadConfig"}', "values": "3x100"},
        ],
        "promql_expr_test": [{"expr": concrete(dashboard_target("kubetune-overview.json", title)),
                              "eval_time": eval_time, "exp_samples": expected}],
    }
    path = tmp_path / "failures.test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": [test]}), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
