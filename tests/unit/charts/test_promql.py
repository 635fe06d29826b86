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
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*\w+\)$")


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


def alert_expressions(chart) -> dict[str, str]:
    rule = only(manifests(render_templates(chart, {"metrics": {"prometheusRule": {"enabled": True}}})),
                "PrometheusRule")
    return {f"alert {r['alert']}": r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}


def exposed_metric_names() -> set[str]:
    registry = CollectorRegistry()
    OperatorMetrics(registry)
    TrainerMetrics(registry)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


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


def test_the_name_check_catches_a_misspelt_metric():
    assert metric_names('sum(rate(kubetune_operator_reconciles_totl{kind="x"}[5m])) / kubetune_resources') == [
        "kubetune_operator_reconciles_totl",
        "kubetune_resources",
    ]
    assert "kubetune_operator_reconciles_totl" not in exposed_metric_names()
    assert {"kubetune_eval_prompts_total", "kubetune_operator_reconcile_duration_seconds_bucket",
            "kubetune_trainer_gpu_memory_bytes"} <= exposed_metric_names()
