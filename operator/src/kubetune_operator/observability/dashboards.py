"""kubetune's Grafana dashboards, built in code and exported as JSON into the Helm chart.

    python -m kubetune_operator.observability.dashboards --write charts/kubetune/dashboards

regenerates `charts/kubetune/dashboards/*.json`; the chart ships them as ConfigMaps labelled for
the Grafana sidecar, and a test fails when the committed JSON drifts from this module. Queries
use only the metrics of contracts §8: operator series (`kubetune_operator_*`, `kubetune_resources`,
`kubetune_training_*`, `kubetune_eval_metric`, `kubetune_eval_gates_failed`, labelled `namespace`
and `resource`) and pod series (`kubetune_trainer_*`, `kubetune_eval_*`, labelled `namespace`,
`resource` and `kind` by the chart's PodMonitor). What pods measure comes from the pods alone;
throughput is the rate of their token and prompt counters. An EvalRun's results are exported for a
while after it ends, so its panels read them back with `last_over_time` over the time range.

Needs the `dashboards` extra (grafana-foundation-sdk); the operator itself never imports this.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["kubetune"]
# Phases in which a resource waits for something: its inputs, or quota (a Job Kueue has not yet
# admitted is Suspended, with the reason Queued).
WAITING_PHASES = "Pending|Waiting|Suspended"
FULL_WIDTH = 24

# Resources of different kinds may share a name: pod series are narrowed to the kind as well.
JOB_PODS = 'namespace="$namespace", kind="finetunejob", resource="$job"'
EVAL = 'namespace="$namespace", resource="$evalrun"'
EVAL_PODS = 'namespace="$namespace", kind="evalrun", resource="$evalrun"'
RATE = "[$__rate_interval]"
FAILURES = "kubetune_resource_failures_total"


def _failures_within(window: str) -> str:
    """Failures per series within `window`. A failure counter's series is born with its first
    failure, which increase() cannot see: a series younger than the window counts in full."""
    return f"({FAILURES} unless {FAILURES} offset {window}) or increase({FAILURES}[{window}])"



def _query(expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query


def _with_queries(panel, queries: list[prometheus.Dataquery]):
    for ref_id, query in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(query.ref_id(ref_id))
    return panel.datasource(DATASOURCE)


def _graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery, width: int = 12,
           stacked: bool = False) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(width)
        .height(8)
        .legend(common.VizLegendOptions().show_legend(True).display_mode(common_models.LegendDisplayMode.LIST)
                .placement(common_models.LegendPlacement.BOTTOM))
    )
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL)).fill_opacity(30)
    return _with_queries(panel, list(queries))


def _stat(title: str, description: str, unit: str, query: prometheus.Dataquery, width: int = 6,
          red_from: float | None = None) -> stat.Panel:
    steps = [dashboard_models.Threshold(value=None, color="green")]
    if red_from is not None:
        steps.append(dashboard_models.Threshold(value=red_from, color="red"))
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(width)
        .height(4)
        .thresholds(dashboard.ThresholdsConfig().mode(dashboard_models.ThresholdsMode.ABSOLUTE).steps(steps))
        .color_mode(common_models.BigValueColorMode.VALUE)
        .graph_mode(common_models.BigValueGraphMode.NONE)
    )
    return _with_queries(panel, [query])


def _datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def _label_variable(name: str, label: str, query: str, multi: bool = False) -> dashboard.QueryVariable:
    variable = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        variable = variable.multi(True).include_all(True)
    return variable


def _resource_variables(metric: str, variable: str, label: str, matchers: str = "") -> list[dashboard.QueryVariable]:
    """A namespace picker, then a picker of the resources `metric{matchers}` has series for in it."""
    within = f"{matchers}, " if matchers else ""
    return [
        _label_variable("namespace", "Namespace", f"label_values({metric}{{{matchers}}}, namespace)" if matchers
                        else f"label_values({metric}, namespace)"),
        _label_variable(variable, label, f'label_values({metric}{{{within}namespace="$namespace"}}, resource)'),
    ]


def _dashboard(uid: str, title: str, description: str,
               variables: Sequence[dashboard.QueryVariable] = ()) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .variables([_datasource_variable(), *variables])
    )


def overview() -> dashboard.Dashboard:
    return (
        _dashboard("kubetune-overview", "kubetune / Overview",
                   "Resources by phase, failures, the queue of waiting resources and the operator's health.")
        .with_row(dashboard.Row("Resources"))
        .with_panel(_stat("Running", "Resources in the Running phase", "short",
                          _query('sum(kubetune_resources{phase="Running"})')))
        .with_panel(_stat("Waiting", "Resources waiting for their inputs or for quota",
                          "short", _query(f'sum(kubetune_resources{{phase=~"{WAITING_PHASES}"}})')))
        .with_panel(_stat("Failed in range", "Resources that failed during the selected time range", "short",
                          _query(f"sum({_failures_within('$__range')})"), red_from=1))
        .with_panel(_stat("EvalRuns with failed gates", "EvalRuns that ended in the time range with gates that did "
                          "not all pass", "short",
                          _query("count(max_over_time(kubetune_eval_gates_failed[$__range]) > 0) or vector(0)"),
                          red_from=1))
        .with_panel(_graph("Resources by phase", "Every resource the operator knows, by kind and phase", "short",
                           _query("sum by (kind, phase) (kubetune_resources)", "{{kind}} {{phase}}"),
                           stacked=True))
        .with_panel(_graph("Queue", "Resources waiting for their inputs or for quota, by kind", "short",
                           _query(f'sum by (kind) (kubetune_resources{{phase=~"{WAITING_PHASES}"}})',
                                  "{{kind}}"), stacked=True))
        .with_panel(_graph("Failures by reason", "Resources that failed, by kind and exit reason", "short",
                           _query(f"sum by (kind, reason) ({_failures_within('$__rate_interval')})",
                                  "{{kind}} {{reason}}"), width=FULL_WIDTH, stacked=True))
        .with_row(dashboard.Row("Active training"))
        .with_panel(
            _with_queries(
                table.Panel()
                .title("Active jobs")
                .description("Jobs that reported progress and have not finished")
                .span(FULL_WIDTH)
                .height(8)
                .with_transformation(dashboard_models.DataTransformerConfig(id_val="merge", options={}))
                .with_transformation(dashboard_models.DataTransformerConfig(
                    id_val="organize",
                    options={"excludeByName": {"Time": True},
                             "renameByName": {"Value #A": "progress", "Value #B": "ETA",
                                              "Value #C": "loss", "Value #D": "tokens/s"}},
                )),
                [
                    _query(f"max by (namespace, resource) ({metric}{{kind=\"finetunejob\"}})", instant=True)
                    for metric in ("kubetune_trainer_progress_ratio", "kubetune_trainer_eta_seconds",
                                   "kubetune_trainer_loss")
                ] + [_query(f'sum by (namespace, resource) (rate(kubetune_trainer_tokens_total{{kind="finetunejob"}}{RATE}))',
                            instant=True)],
            )
        )
        .with_row(dashboard.Row("Operator"))
        .with_panel(_graph("Reconciles", "Reconciles per second, by kind and result", "ops",
                           _query("sum by (kind, result) (rate(kubetune_operator_reconciles_total[$__rate_interval]))",
                                  "{{kind}} {{result}}"), width=8))
        .with_panel(_graph("Reconcile errors", "Reconciles that raised, per second", "ops",
                           _query('sum by (kind) (rate(kubetune_operator_reconciles_total{result="error"}[$__rate_interval]))',
                                  "{{kind}}"), width=8))
        .with_panel(_graph("Reconcile latency p95", "95th percentile of the time one reconcile takes", "s",
                           _query("histogram_quantile(0.95, sum by (kind, le) "
                                  "(rate(kubetune_operator_reconcile_duration_seconds_bucket[$__rate_interval])))",
                                  "{{kind}}"), width=8))
    )


def training() -> dashboard.Dashboard:
    return (
        _dashboard("kubetune-training", "kubetune / Training job",
                   "One FineTuneJob: progress and ETA, loss, DPO reward margin, throughput and GPU memory.",
                   _resource_variables("kubetune_trainer_step", "job", "Job", 'kind="finetunejob"'))
        .with_panel(_stat("Progress", "Fraction of the job done", "percentunit",
                          _query(f"max(kubetune_trainer_progress_ratio{{{JOB_PODS}}})")))
        .with_panel(_stat("ETA", "Estimated time until the job is done", "s",
                          _query(f"max(kubetune_trainer_eta_seconds{{{JOB_PODS}}})")))
        .with_panel(_stat("Step", "Optimizer steps completed", "short",
                          _query(f"max(kubetune_trainer_step{{{JOB_PODS}}})")))
        .with_panel(_stat("Planned steps", "Optimizer steps planned", "short",
                          _query(f"max(kubetune_trainer_total_steps{{{JOB_PODS}}})")))
        .with_panel(_graph("Loss", "Training and evaluation loss, as the job's pods report them", "short",
                           _query(f"max(kubetune_trainer_loss{{{JOB_PODS}}})", "train"),
                           _query(f"max(kubetune_trainer_eval_loss{{{JOB_PODS}}})", "eval")))
        .with_panel(_graph("Reward margin", "DPO: chosen minus rejected reward, and how often chosen wins",
                           "short",
                           _query(f"max(kubetune_trainer_reward_margin{{{JOB_PODS}}})", "margin"),
                           _query(f"max(kubetune_trainer_reward_accuracy{{{JOB_PODS}}})", "accuracy")))
        .with_panel(_graph("Tokens per second", "Training throughput of the whole job: the rate of its token counter",
                           "short", _query(f"sum(rate(kubetune_trainer_tokens_total{{{JOB_PODS}}}{RATE}))", "job")))
        .with_panel(_graph("GPU memory", "Peak GPU memory allocated, per pod and GPU", "bytes",
                           _query(f"kubetune_trainer_gpu_memory_bytes{{{JOB_PODS}}}", "{{pod}} gpu {{gpu}}")))
        .with_panel(_graph("Progress", "Fraction of the job done over time", "percentunit",
                           _query(f"max(kubetune_trainer_progress_ratio{{{JOB_PODS}}})", "progress")))
        .with_panel(_graph("Learning rate", "Current learning rate", "short",
                           _query(f"max(kubetune_trainer_learning_rate{{{JOB_PODS}}})", "learning rate")))
    )


def evaluation() -> dashboard.Dashboard:
    metric_filter = f'{EVAL}, metric=~"$metric"'
    return (
        _dashboard("kubetune-eval", "kubetune / EvalRun",
                   "One EvalRun: every candidate's score on each metric, its gates and generation throughput.",
                   [*_resource_variables("kubetune_eval_metric", "evalrun", "EvalRun"),
                    _label_variable("metric", "Metric", f"label_values(kubetune_eval_metric{{{EVAL}}}, metric)",
                                    multi=True)])
        .with_panel(_stat("Gates failed", "Gates of this EvalRun that did not pass", "short",
                          _query(f"last_over_time(kubetune_eval_gates_failed{{{EVAL}}}[$__range])"), red_from=1))
        .with_panel(_stat("Generation progress", "Fraction of the prompts generated and scored", "percentunit",
                          _query(f"max(kubetune_trainer_progress_ratio{{{EVAL_PODS}}})")))
        .with_panel(_stat("Prompts generated", "Prompts the eval engine has generated", "short",
                          _query(f"sum(kubetune_eval_prompts_total{{{EVAL_PODS}}})")))
        .with_panel(_stat("Candidates", "Candidates scored", "short",
                          _query(f"count(count by (candidate) (last_over_time(kubetune_eval_metric{{{EVAL}}}[$__range])))")))
        .with_panel(
            _with_queries(
                bargauge.Panel()
                .title("$metric")
                .description("Each candidate's score on this metric")
                .repeat("metric")
                .repeat_direction("h")
                .max_per_row(3)
                .span(FULL_WIDTH)
                .height(8)
                .orientation(common_models.VizOrientation.HORIZONTAL)
                .display_mode(common_models.BarGaugeDisplayMode.BASIC)
                .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
                .unit("short"),
                [_query(f'last_over_time(kubetune_eval_metric{{{EVAL}, metric="$metric"}}[$__range])', "{{candidate}}")],
            )
        )
        .with_panel(
            _with_queries(
                table.Panel()
                .title("Scores")
                .description("Candidates as rows, metrics as columns")
                .span(FULL_WIDTH)
                .height(8)
                .with_transformation(dashboard_models.DataTransformerConfig(
                    id_val="groupingToMatrix",
                    options={"columnField": "metric", "rowField": "candidate", "valueField": "Value"},
                )),
                [_query(f"last_over_time(kubetune_eval_metric{{{metric_filter}}}[$__range])", instant=True)],
            )
        )
        .with_panel(_graph("Prompts per second", "Generation throughput of the eval pods", "short",
                           _query(f"sum(rate(kubetune_eval_prompts_total{{{EVAL_PODS}}}{RATE}))", "prompts/s")))
        .with_panel(_graph("Generated tokens per second", "Tokens the eval engine generates per second", "short",
                           _query(f"sum(rate(kubetune_eval_tokens_total{{{EVAL_PODS}}}{RATE}))", "tokens/s")))
    )


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "kubetune-overview.json": overview,
    "kubetune-training.json": training,
    "kubetune-eval.json": evaluation,
}


def render() -> dict[str, str]:
    """Every dashboard as the JSON text committed in the chart, by file name."""
    rendered = {}
    for filename, build in DASHBOARDS.items():
        model = build().build()
        # Grafana needs panel ids unique within a dashboard; the SDK leaves them to the caller.
        for panel_id, panel in enumerate(model.panels or [], start=1):
            panel.id_val = panel_id
        rendered[filename] = json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return rendered


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render().items():
        path = directory / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubetune_operator.observability.dashboards",
        description="Write kubetune's Grafana dashboards as JSON (into the Helm chart).",
    )
    parser.add_argument("--write", metavar="DIR", type=Path, required=True,
                        help="directory to write the dashboards into, e.g. charts/kubetune/dashboards")
    args = parser.parse_args(argv)
    for path in write(args.write):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
