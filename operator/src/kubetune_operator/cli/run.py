"""`kubetune run FILE...`: run PreferenceDatasets, FineTuneJobs and EvalRuns on this machine."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from kubetune_operator.errors import UserError

EXIT_FAILED = 1
EXIT_GATES_FAILED = 3
EXIT_INTERRUPTED = 130
# Signals that stop a run as Ctrl-C does: `timeout`, a CI cancel, a closed terminal.
STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the resources in FILE... as local processes (no cluster)",
        description=(
            "Validate the documents against the CRD schemas, order them by their references, and run "
            "each pod's command locally with the env and config files it would get in a cluster. "
            "Steps whose spec and inputs have not changed since their last success are skipped."
        ),
        epilog=(
            f"exit status: 0 every step succeeded or was up to date; {EXIT_FAILED} a step failed (the steps "
            f"waiting for it did not run); 2 a document or option is invalid; {EXIT_GATES_FAILED} "
            f"an EvalRun's gates failed; {EXIT_INTERRUPTED} interrupted by Ctrl-C (128 + the signal's number "
            "for SIGTERM and SIGHUP, which stop the running step the same way)"
        ),
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML with kubetune resources")
    parser.add_argument(
        "--artifacts",
        type=artifact_root,
        default=".kubetune/artifacts",
        help="artifact root: a directory or s3://bucket/prefix (default: .kubetune/artifacts)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="run every step, even those that are up to date; a FineTuneJob trains from scratch: once its dataset "
        "and base model resolve, the trainer drops the finished run and checkpoints in its output (a local output "
        "only when kubetune created it, marked .kubetune-output)",
    )
    parser.add_argument("--gpus", type=gpu_count, default=None, help="GPUs to use (default: the visible ones)")
    parser.add_argument(
        "--workdir", type=Path, default=Path(".kubetune"), help="pod scratch, logs and run state (default: .kubetune)"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table: progress and tables on stdout (default); json: one JSON document on stdout with each "
        "resource's phase, key metrics, gates and artifact URIs, everything else on stderr",
    )
    parser.set_defaults(func=run)


def gpu_count(value: str) -> int:
    count = int(value) if value.isdigit() else -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of GPUs (0 or more)")
    return count


def artifact_root(value: str) -> str:
    """An absolute URI: pods run in their own scratch directories, where `file://./x` would land."""
    from kubetune_operator.builders.settings import artifact_root_problem

    problem = artifact_root_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    if value.startswith("s3://"):
        return value.rstrip("/")
    path = value[len("file://") :] if value.startswith("file://") else value
    return f"file://{Path(path).expanduser().resolve()}"


def run(args: argparse.Namespace) -> int:
    if args.output != "json":
        return _run(args, sys.stdout)
    try:
        return _run(args, sys.stderr)
    except UserError as exc:
        # A script reads stdout: it gets a document saying why nothing ran (stderr says it too).
        print(json.dumps(run_document([], exc.exit_code, args.artifacts, error=str(exc)), indent=2))
        raise


def _run(args: argparse.Namespace, stream) -> int:
    from rich.console import Console

    from kubetune_operator.builders import graph
    from kubetune_operator.cli.documents import load_documents, validate_all
    from kubetune_operator.localrun.runner import LocalRunner

    # Off a terminal (CI logs, `make demo | tee`) rich would fold tables to 80 columns.
    console = Console(file=stream, highlight=False, width=None if stream.isatty() else 140)
    resources = validate_all(load_documents(args.files))
    display = ProgressDisplay(console)
    runner = LocalRunner(
        args.artifacts, args.workdir.resolve(), force=args.force, gpus=args.gpus,
        on_event=display.event,
    )
    graph.order(resources, require_references=True)
    with display, stop_signals() as stopped:
        results = runner.run(resources, on_step=display.step_done)
    print_results(console, results)
    code = exit_code(results, stopped)
    if any(r.interrupted for r in results):
        console.print(f"interrupted{f' by {stopped[-1].name}' if stopped else ''}: the steps after it did not run")
    if args.output == "json":
        print(json.dumps(run_document(results, code, args.artifacts), indent=2, ensure_ascii=False))
    return code


def exit_code(results, stopped: list[signal.Signals]) -> int:
    if any(r.interrupted for r in results):
        return 128 + stopped[-1] if stopped else EXIT_INTERRUPTED
    if any(not r.ok for r in results):
        return EXIT_FAILED
    if any(r.summary.get("kind") == "eval" and r.summary.get("passed") is False for r in results):
        return EXIT_GATES_FAILED
    return 0


class Stopped(KeyboardInterrupt):
    """A stop signal other than SIGINT, handled as Ctrl-C is: the running step is stopped and awaited."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals():
    """SIGTERM and SIGHUP raise Stopped (a KeyboardInterrupt) while the run goes on; yields the signals seen."""
    seen: list[signal.Signals] = []

    def stop(signum, frame):
        seen.append(signal.Signals(signum))
        raise Stopped(signum)

    previous = {name: signal.signal(getattr(signal, name), stop) for name in STOP_SIGNALS if hasattr(signal, name)}
    try:
        yield seen
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


class ProgressDisplay:
    """Live progress bars on a terminal; a log line per phase change (and every 15 s) elsewhere."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.interactive = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self.interactive,
        )
        self.tasks: dict[str, Any] = {}
        self.last_line: dict[str, tuple[str, float]] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def _label(self, resource) -> str:
        return f"{resource.kind_name} {resource.metadata.name}"

    def event(self, resource, event: dict[str, Any]) -> None:
        label = self._label(resource)
        detail = describe_event(event)
        phase = event.get("phase", "")
        if self.interactive:
            if label not in self.tasks:
                self.tasks[label] = self.progress.add_task(label, total=100, detail="")
            self.progress.update(
                self.tasks[label],
                description=f"{label} [dim]{phase}[/dim]",
                completed=event.get("percent", 0) or 0,
                # A bar has one line; the log lines below keep whole messages (paths end them).
                detail=detail[:80],
            )
            return
        previous_phase, previous_time = self.last_line.get(label, ("", 0.0))
        now = time.monotonic()
        if phase != previous_phase or now - previous_time >= 15:
            self.console.print(f"{label}: {phase} {detail}".rstrip())
            self.last_line[label] = (phase, now)

    def step_done(self, result) -> None:
        label = self._label(result.resource)
        if self.interactive and label in self.tasks:
            self.progress.update(self.tasks[label], completed=100 if result.ok else None)
        style = {"Succeeded": "green", "Skipped": "cyan", "Failed": "red", "Blocked": "yellow"}[result.phase]
        note = f" ({result.message})" if result.message else ""
        ran = f" in {result.duration:.1f}s" if result.phase in {"Succeeded", "Failed"} else ""
        self.console.print(f"[{style}]{result.phase}[/{style}] {label}{ran}{note}")
        if result.phase == "Failed" and not result.interrupted and log_adds_to(result):
            self.console.print(f"[dim]last lines of its log:\n{result.log_tail[-2000:]}[/dim]")


def log_adds_to(result) -> bool:
    """Whether the log tail says more than the error already printed (a bad option's log is that line)."""
    lines = result.log_tail.strip().splitlines()
    error = str(result.summary.get("error") or "")
    return bool(lines) and not (len(lines) == 1 and error and error in lines[0])


def describe_event(event: dict[str, Any]) -> str:
    parts = []
    if event.get("step") is not None and event.get("total_steps"):
        parts.append(f"step {event['step']}/{event['total_steps']}")
    for key, label in (("loss", "loss"), ("reward_margin", "margin"), ("eval_loss", "eval")):
        if isinstance(event.get(key), int | float):
            parts.append(f"{label} {event[key]:.4f}")
    for key, label in (("tokens_per_second", "tok/s"), ("prompts_per_second", "prompts/s")):
        if isinstance(event.get(key), int | float):
            parts.append(f"{event[key]:.0f} {label}")
    if isinstance(event.get("eta_seconds"), int | float) and event["eta_seconds"] > 0:
        parts.append(f"eta {event['eta_seconds']:.0f}s")
    if event.get("message") and not parts:
        parts.append(str(event["message"]))
    return " · ".join(parts)


def key_metrics(result) -> str:
    summary = result.summary
    kind = summary.get("kind")
    if result.phase in {"Failed", "Blocked"}:
        return result.message
    if kind == "dataset":
        counts = summary.get("counts", {})
        dropped = sum((summary.get("dropped") or {}).values())
        return f"train {counts.get('train', 0)} · test {counts.get('test', 0)} · dropped {dropped}"
    if kind == "train":
        parts = [f"steps {summary.get('steps')}"]
        if isinstance(summary.get("finalLoss"), int | float):
            parts.append(f"loss {summary['finalLoss']:.4f}")
        if isinstance(summary.get("bestEvalLoss"), int | float):
            parts.append(f"best eval {summary['bestEvalLoss']:.4f}")
        return " · ".join(parts)
    if kind == "eval":
        gates = summary.get("gates") or []
        tally = summary.get("gateTally") or {}
        passed = tally.get("passed", sum(1 for g in gates if g.get("passed")))
        total = tally.get("total", len(gates))
        return f"gates {passed}/{total} {'passed' if summary.get('passed') else 'FAILED'}"
    return ""


def _display_path(uri: str) -> str:
    """A local artifact as a path (relative to here when it is below here); other URIs as they are."""
    if not uri.startswith("file://"):
        return uri
    path = Path(uri[len("file://") :])
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def artifacts_of(result) -> str:
    summary = result.summary
    return _display_path(str(summary.get("report") or summary.get("output") or ""))


def print_results(console, results) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="kubetune run", show_lines=False)
    for column in ("Resource", "Phase", "Duration", "Key metrics", "Artifacts"):
        table.add_column(column, overflow="fold")
    for result in results:
        table.add_row(
            f"{result.resource.kind_name}/{result.resource.metadata.name}",
            result.phase,
            {"Skipped": "up to date", "Blocked": "–"}.get(result.phase, f"{result.duration:.1f}s"),
            key_metrics(result),
            artifacts_of(result),
        )
    console.print(table)
    for result in results:
        if result.summary.get("kind") == "dataset":
            # The pod's log is not shown: a split that could not keep a stratum in train says so here.
            for warning in result.summary.get("warnings") or []:
                name = f"{result.resource.kind_name}/{result.resource.metadata.name}"
                console.print(f"[yellow]warning[/yellow] {name}: {escape(str(warning))}", highlight=False)
        if result.summary.get("kind") == "train" and result.ok:
            print_curves(console, result)
        if result.summary.get("kind") == "eval" and result.ok:
            print_comparison(console, result)
            promotion = result.resource.spec.promotion
            if promotion is not None and result.summary.get("passed"):
                console.print(
                    f"promotion to {promotion.repository} is not run locally (it needs the cluster's git "
                    "Secret); `kubetune promote --help` commits the same record by hand"
                )


def print_curves(console, result) -> None:
    """Where a training's curves and tracker runs are."""
    name = f"{result.resource.kind_name}/{result.resource.metadata.name}"
    plots = result.summary.get("plots") or {}
    if isinstance(plots, dict) and plots:
        console.print(f"{name} curves: {', '.join(_display_path(str(uri)) for uri in plots.values())}", highlight=False)
    runs = result.summary.get("tracking") or {}
    if not isinstance(runs, dict):
        return
    if runs.get("mlflowRunId"):
        console.print(f"{name} MLflow run {runs['mlflowRunId']} (experiment {runs.get('mlflowExperimentId')})")
    if runs.get("wandbRunUrl") or runs.get("wandbRunId"):
        console.print(f"{name} W&B run {runs.get('wandbRunUrl') or runs['wandbRunId']}", highlight=False)
    if runs.get("tensorboard"):
        console.print(f"{name} tensorboard --logdir {_display_path(str(runs['tensorboard']))}", highlight=False)


def _local_summary(result) -> dict[str, Any]:
    """The eval's full summary.json when the artifacts are local (it has deltas); else the short one."""
    output = result.summary.get("output", "")
    if output.startswith("file://"):
        path = Path(output[len("file://") :]) / "summary.json"
        with contextlib.suppress(OSError, json.JSONDecodeError):
            return json.loads(path.read_text(encoding="utf-8"))
    return result.summary


def _interval(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    text = f"{entry['value']:.3f}"
    if entry.get("ciLow") is not None and entry.get("ciHigh") is not None:
        text += f" [{entry['ciLow']:.3f}, {entry['ciHigh']:.3f}]"
    return text


def print_comparison(console, result) -> None:
    """Metrics down, candidates across: each value with its interval, and each delta vs the baseline."""
    from rich.table import Table

    summary = _local_summary(result)
    metrics: dict[str, dict[str, Any]] = summary.get("metrics") or {}
    deltas: dict[str, dict[str, Any]] = summary.get("deltas") or {}
    baseline = summary.get("baseline")
    candidates = sorted(metrics, key=lambda c: (c != baseline, c))
    names = list(dict.fromkeys(name for per in metrics.values() for name in per))
    confidence = summary.get("confidence", 0.95)
    table = Table(title=f"EvalRun {result.resource.metadata.name}: value [{confidence:.0%} CI]")
    table.add_column("Metric")
    for candidate in candidates:
        table.add_column(f"{candidate} (baseline)" if candidate == baseline else candidate)
        if candidate != baseline and candidate in deltas:
            table.add_column(f"Δ {candidate} vs {baseline}")
    for name in names:
        row = [name]
        for candidate in candidates:
            row.append(_interval(metrics[candidate].get(name)))
            if candidate != baseline and candidate in deltas:
                row.append(_interval(deltas[candidate].get(name)))
        table.add_row(*row)
    console.print(table)
    for gate in summary.get("gates") or []:
        mark = "[green]pass[/green]" if gate.get("passed") else "[red]FAIL[/red]"
        value = gate.get("value")
        shown = "–" if value is None else f"{value:.3f}"
        what = "Δ " if gate.get("relativeToBaseline") else ""
        # The tested value is then an end of the interval, not the point estimate in the table.
        bound = f" ({confidence:.0%} CI bound)" if gate.get("useConfidenceBound") else ""
        console.print(
            f"  gate {gate.get('name')}: {what}{gate.get('metric')} of {gate.get('candidate')}{bound} = {shown} "
            f"{gate.get('comparator')} {gate.get('threshold')} → {mark}"
        )
    console.print(f"report: {_display_path(summary.get('report', ''))}")


# --- `--output json` --------------------------------------------------------------------------------

# What each kind's summary (contracts §5) holds of numbers, and of where things were written.
_METRIC_KEYS = {
    "dataset": ("counts", "dropped", "strata"),
    "train": ("steps", "finalLoss", "bestEvalLoss"),
}
_ARTIFACT_KEYS = {
    "dataset": {"output": "output"},
    "train": {"output": "output", "merged": "merged", "bestCheckpoint": "bestCheckpoint", "resumedFrom": "resumedFrom"},
    "eval": {"output": "output", "report": "report"},
}


def _eval_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """candidate → metric → value and interval, with the delta against the baseline where there is one."""
    deltas = summary.get("deltas") or {}
    metrics: dict[str, Any] = {}
    for candidate, per_metric in (summary.get("metrics") or {}).items():
        metrics[candidate] = {}
        for name, entry in per_metric.items():
            merged = {k: entry.get(k) for k in ("value", "ciLow", "ciHigh") if k in entry}
            delta = (deltas.get(candidate) or {}).get(name)
            if delta:
                merged |= {"delta": delta.get("value"), "deltaCiLow": delta.get("ciLow"), "deltaCiHigh": delta.get("ciHigh")}
            metrics[candidate][name] = merged
    return metrics


def resource_document(result) -> dict[str, Any]:
    """One step of a run as scripts read it: phase, key metrics, gates and artifact URIs."""
    resource = result.resource
    summary = result.summary
    kind = summary.get("kind")
    entry: dict[str, Any] = {
        "kind": resource.kind_name,
        "namespace": resource.metadata.namespace or "default",
        "name": resource.metadata.name,
        "phase": result.phase,
        "durationSeconds": round(result.duration, 3),
    }
    if result.message:
        entry["message"] = result.message
    if not result.ok:
        if summary.get("reason"):
            entry["reason"] = summary["reason"]
        if result.interrupted:
            entry["interrupted"] = True
        return entry
    if kind == "eval":
        full = _local_summary(result)
        entry["metrics"] = _eval_metrics(full)
        entry["baseline"] = full.get("baseline")
        entry["passed"] = summary.get("passed")
        entry["gates"] = full.get("gates") or summary.get("gates") or []
        if summary.get("gateTally"):
            entry["gateTally"] = summary["gateTally"]
    else:
        entry["metrics"] = {key: summary[key] for key in _METRIC_KEYS.get(kind, ()) if summary.get(key) is not None}
    artifacts = {name: summary[key] for name, key in _ARTIFACT_KEYS.get(kind, {}).items() if summary.get(key)}
    if kind == "train":
        from kubetune_operator.builders.training import summary_artifacts

        artifact = summary_artifacts(summary)
        artifacts["final"] = artifact.uri
        if artifact.type:
            entry["artifactType"] = artifact.type
        if summary.get("trueBase"):
            entry["trueBase"] = summary["trueBase"]
    if kind == "dataset" and summary.get("fingerprint"):
        entry["fingerprint"] = summary["fingerprint"]
    entry["artifacts"] = artifacts
    if summary.get("warnings"):
        entry["warnings"] = list(summary["warnings"])
    return entry


RESULTS = {0: "Succeeded", EXIT_FAILED: "Failed", EXIT_GATES_FAILED: "GatesFailed"}


def run_document(results, code: int, artifact_root: str, error: str | None = None) -> dict[str, Any]:
    """The whole run as one JSON document (`kubetune run --output json`)."""
    document: dict[str, Any] = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "LocalRun",
        # Invalid: nothing ran (a document or option was refused); Interrupted: a stop signal ended it.
        "result": "Invalid" if error is not None else RESULTS.get(code, "Interrupted"),
        "exitCode": code,
        "artifactRoot": artifact_root,
        "resources": [resource_document(r) for r in results],
    }
    if error is not None:
        document["error"] = error
    return document
