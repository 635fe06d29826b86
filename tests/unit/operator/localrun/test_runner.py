"""The local runner's own logic: launch collapsing, relative URIs, inputs from summaries, skipping."""

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from kubetune_operator.api.validation import validate
from kubetune_operator.errors import UserError
from kubetune_operator.localrun import runner as runner_module
from kubetune_operator.localrun.runner import LocalRunner, absolute_file_uris, collapse_launch

# The fake_trainer fixture points sys.executable at its fake; processes this test starts need the real one.
PYTHON = sys.executable


def test_multi_node_launch_collapses_to_this_machine():
    argv = [
        "kubetune-trainer", "train", "--config", "/c.yaml", "--nnodes=4", "--nproc-per-node=8",
        "--node-rank=$(JOB_COMPLETION_INDEX)", "--master-addr=x-train-0.x-train", "--master-port=29500",
    ]
    assert collapse_launch(argv, gpus=0) == ["kubetune-trainer", "train", "--config", "/c.yaml"]
    assert collapse_launch(argv, gpus=2) == [
        "kubetune-trainer", "train", "--config", "/c.yaml", "--nnodes=1", "--nproc-per-node=2"
    ]
    spaced = ["kubetune-trainer", "train", "--config", "/c.yaml", "--nproc-per-node", "8", "--nnodes", "2"]
    assert collapse_launch(spaced, gpus=1) == ["kubetune-trainer", "train", "--config", "/c.yaml"]


def test_single_process_commands_are_left_alone():
    argv = ["kubetune-trainer", "eval", "--config", "/etc/kubetune/config.yaml"]
    assert collapse_launch(argv, gpus=8) == argv


def ftj(**spec) -> dict:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "job"},
        "spec": {"method": "sft", "baseModel": "file://./models/base", "dataset": {"uri": "file://data/prepared"}, **spec},
    }


def test_relative_file_uris_become_absolute_under_the_working_directory(tmp_path):
    resource = absolute_file_uris(validate(ftj()), tmp_path)
    assert resource.spec.base_model == f"file://{tmp_path}/models/base"
    assert resource.spec.dataset.uri == f"file://{tmp_path}/data/prepared"


def test_an_unusable_absolute_path_is_named(tmp_path):
    with pytest.raises(UserError, match="relative file:// URI"):
        absolute_file_uris(validate(ftj()), tmp_path / "has space")


FAKE_TRAINER = textwrap.dedent(
    """
    import json, os, sys
    # Pods see only their own env, so the test talks to this script through files beside it.
    home = os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0])))
    counter = os.path.join(home, "calls.txt")
    with open(counter, "a") as handle:
        handle.write(" ".join(sys.argv[1:3]) + (" afresh" if os.environ.get("KUBETUNE_TRAIN_AFRESH") else "") + "\\n")
    with open(os.path.join(home, "env.json"), "w") as handle:
        json.dump({k: v for k, v in os.environ.items() if k.startswith(("ATEN", "MKL", "OMP", "SOME"))}, handle)
    config = sys.argv[sys.argv.index("--output") + 1] if "--output" in sys.argv else None
    if sys.argv[1] == "data" and os.path.exists(os.path.join(home, "hang")):
        import signal
        open(os.path.join(home, "pid"), "w").write(str(os.getpid()))
        def preempted(*_):
            open(os.path.join(home, "got-sigterm"), "w").close()
            open(os.environ["KUBETUNE_TERMINATION_LOG"], "w").write(json.dumps(
                {"kind": "dataset", "error": "stopped by SIGTERM", "reason": "Preempted"}))
            sys.exit(75)
        if open(os.path.join(home, "hang")).read() == "ignore SIGTERM":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, preempted)
        with open(os.environ["KUBETUNE_PROGRESS_FILE"], "a") as progress:
            progress.write(json.dumps({"phase": "data"}) + "\\n")
        while True:
            signal.pause()
    if sys.argv[1] == "data":
        import hashlib
        source = sys.argv[sys.argv.index("--source") + 1][len("file://"):]
        fingerprint = "sha256:" + hashlib.sha256(open(source, "rb").read()).hexdigest()
        summary = {"kind": "dataset", "output": config, "fingerprint": fingerprint,
                   "counts": {"train": 3, "test": 1}}
        os.makedirs(config[len("file://"):], exist_ok=True)
        open(os.path.join(config[len("file://"):], "manifest.json"), "w").write("{}")
    else:
        import yaml
        cfg = yaml.safe_load(open(sys.argv[sys.argv.index("--config") + 1]))
        assert cfg["dataset"].endswith("/preferencedatasets/data"), cfg["dataset"]
        assert cfg["dataset_fingerprint"].startswith("sha256:")
        out = cfg["output"][len("file://"):]
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, "manifest.json"), "w").write("{}")
        if os.path.exists(os.path.join(home, "fail")):
            open(os.environ["KUBETUNE_TERMINATION_LOG"], "w").write(json.dumps(
                {"kind": "train", "error": "learning_rate: too high", "reason": "BadConfig"}))
            sys.exit(64)
        summary = {"kind": "train", "output": cfg["output"], "steps": 2,
                   "artifact": {"uri": cfg["output"] + "/final", "type": "adapter"}}
    open(os.environ["KUBETUNE_TERMINATION_LOG"], "w").write(json.dumps(summary))
    """
)


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    """`kubetune-trainer` on PATH is a script that records its calls and writes summaries."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubetune-trainer"
    script.write_text(f"#!{sys.executable}\n{FAKE_TRAINER}")
    script.chmod(0o755)
    counter = tmp_path / "calls.txt"
    counter.touch()
    # The runner puts its own interpreter's directory first on PATH; point that at the fake.
    monkeypatch.setattr(runner_module.sys, "executable", str(bin_dir / "python"))
    (tmp_path / "data.jsonl").write_text('{"messages": []}\n')
    documents = [
        {"apiVersion": "kubetune.dev/v1alpha1", "kind": "PreferenceDataset", "metadata": {"name": "data"},
         "spec": {"kind": "sft", "format": "trl", "sources": [{"uri": f"file://{tmp_path}/data.jsonl"}]}},
        {"apiVersion": "kubetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "job"},
         "spec": {"method": "sft", "baseModel": f"file://{tmp_path}/base", "dataset": {"preferenceDataset": "data"},
                  "resources": {"gpusPerNode": 0}}},
    ]
    return tmp_path, counter, [validate(d) for d in documents]


def calls(counter: Path) -> list[str]:
    return counter.read_text().splitlines()


def test_steps_run_in_order_with_inputs_from_earlier_summaries_then_skip(fake_trainer):
    tmp_path, counter, resources = fake_trainer
    make = lambda **kw: LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0, **kw)  # noqa: E731
    results = make().run(list(reversed(resources)))
    assert [(r.resource.kind_name, r.phase) for r in results] == [
        ("PreferenceDataset", "Succeeded"), ("FineTuneJob", "Succeeded")
    ], [r.message for r in results]
    assert calls(counter) == ["data prepare", "train --config"]

    again = make().run(resources)
    assert [r.phase for r in again] == ["Skipped", "Skipped"]
    assert calls(counter) == ["data prepare", "train --config"]

    (tmp_path / "data.jsonl").write_text('{"messages": [1]}\n')
    changed = make().run(resources)
    assert [r.phase for r in changed] == ["Succeeded", "Succeeded"]
    assert len(calls(counter)) == 4

    output = tmp_path / "artifacts" / "default" / "finetunejobs" / "job"
    assert json.loads((output / ".kubetune-output").read_text()) == {
        "kind": "FineTuneJob", "namespace": "default", "name": "job"
    }
    forced = make(force=True).run(resources)
    assert [r.phase for r in forced] == ["Succeeded", "Succeeded"]
    # Forced, a training starts from nothing: the trainer is told so, and drops the old run itself
    # once its inputs resolve (it would otherwise reuse what it finds there).
    assert calls(counter)[-2:] == ["data prepare", "train --config afresh"]


def test_the_numeric_libraries_settings_of_this_machine_reach_the_pods(fake_trainer, monkeypatch):
    tmp_path, _, resources = fake_trainer
    numeric = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}
    for name, value in {**numeric, "SOME_OTHER_VARIABLE": "x"}.items():
        monkeypatch.setenv(name, value)
    results = LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0).run(resources)
    assert [r.phase for r in results] == ["Succeeded", "Succeeded"]
    # A pod sees what its node and image give it, not the whole shell it was started from.
    assert json.loads((tmp_path / "env.json").read_text()) == numeric


def test_a_failed_step_reports_its_reason_and_nothing_is_recorded(fake_trainer):
    tmp_path, _, resources = fake_trainer
    (tmp_path / "fail").touch()
    results = LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0).run(resources)
    assert results[1].phase == "Failed"
    assert results[1].message == "BadConfig (exit 64): learning_rate: too high"
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert [key.split("|")[1] for key in state["steps"]] == ["PreferenceDataset"]


def test_a_missing_reference_is_refused_before_anything_runs(fake_trainer):
    tmp_path, counter, resources = fake_trainer
    with pytest.raises(UserError, match="references PreferenceDataset data, which is not among the documents"):
        LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0).run(resources[1:])
    assert calls(counter) == []


def test_run_cli_names_document_and_field(tmp_path):
    import subprocess

    bad = ftj()
    bad["spec"]["hyperparameters"] = {"learningRate": -1}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    kubetune = Path(sys.executable).with_name("kubetune")
    result = subprocess.run([str(kubetune), "run", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.yaml#0 (FineTuneJob job): spec.hyperparameters.learningRate" in result.stderr
    assert "Traceback" not in result.stderr


def interrupt_on_first_event(then=None):
    """One Ctrl-C, as the user presses it while a step runs; `then` runs as it is raised."""
    pressed = []

    def on_event(resource, event):
        if not pressed:
            pressed.append(True)
            if then:
                then()
            raise KeyboardInterrupt
    return on_event


def test_ctrl_c_stops_the_step_like_a_preemption_and_runs_nothing_after_it(fake_trainer):
    tmp_path, counter, resources = fake_trainer
    (tmp_path / "hang").write_text("wait for SIGTERM")
    runner = LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0, on_event=interrupt_on_first_event())
    results = runner.run(resources)
    assert [(r.resource.kind_name, r.phase, r.interrupted) for r in results] == [("PreferenceDataset", "Failed", True)]
    assert results[0].message == "interrupted; Preempted (exit 75): stopped by SIGTERM"
    assert (tmp_path / "got-sigterm").exists()
    assert calls(counter) == ["data prepare"]


def test_a_second_ctrl_c_kills_a_step_that_does_not_stop(fake_trainer):
    import signal

    tmp_path, _, resources = fake_trainer
    (tmp_path / "hang").write_text("ignore SIGTERM")

    def second_ctrl_c(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, second_ctrl_c)
    try:
        on_event = interrupt_on_first_event(then=lambda: signal.setitimer(signal.ITIMER_REAL, 0.5))
        results = LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0, on_event=on_event).run(resources)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(results) == 1 and results[0].interrupted
    assert results[0].message == "interrupted; Killed (exit 137): killed by a second interrupt"


def test_progress_lines_keep_whole_messages():
    from kubetune_operator.cli.run import describe_event

    report = "all gates passed; report file:///home/user/project/demo-artifacts/default/evalruns/demo-eval/report.html"
    assert describe_event({"phase": "done", "message": report}) == report
    assert describe_event({"phase": "train", "step": 3, "total_steps": 9, "loss": 1.5}) == "step 3/9 · loss 1.5000"


def test_a_log_tail_is_shown_only_when_it_says_more_than_the_error():
    from kubetune_operator.cli.run import log_adds_to
    from kubetune_operator.localrun.runner import StepResult

    def failed(log_tail: str, error: str = "--source file:///x: no such file or directory") -> StepResult:
        return StepResult(None, "Failed", summary={"error": error}, log_tail=log_tail)

    assert not log_adds_to(failed("kubetune-trainer data: error: --source file:///x: no such file or directory\n"))
    assert log_adds_to(failed("step 3 loss nan\nkubetune-trainer train: error: NaN loss", error="NaN loss"))
    assert log_adds_to(failed("Traceback (most recent call last): ...", error=""))
    assert not log_adds_to(failed(""))


@pytest.mark.parametrize("given", ["out", "./out", "file://./out", "file://out"])
def test_a_relative_artifact_root_is_made_absolute_here(given, tmp_path, monkeypatch):
    from kubetune_operator.cli.run import artifact_root

    monkeypatch.chdir(tmp_path)
    assert artifact_root(given) == f"file://{tmp_path}/out"
    assert artifact_root("s3://bucket/prefix/") == "s3://bucket/prefix"


def test_a_gate_on_a_confidence_bound_says_so(tmp_path):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from kubetune_operator.cli.run import print_comparison
    from kubetune_operator.localrun.runner import StepResult

    gate = {"name": "falls", "metric": "repetition", "candidate": "dpo", "value": -0.682, "threshold": 0.0,
            "comparator": "<", "passed": True, "relativeToBaseline": True, "useConfidenceBound": True}
    (tmp_path / "summary.json").write_text(json.dumps(
        {"baseline": "sft", "confidence": 0.9, "metrics": {"sft": {}, "dpo": {}}, "gates": [gate], "report": ""}))
    evalrun = SimpleNamespace(metadata=SimpleNamespace(name="eval"))
    out = io.StringIO()
    print_comparison(Console(file=out, width=200), StepResult(evalrun, "Succeeded", summary={"output": f"file://{tmp_path}"}))
    assert "gate falls: Δ repetition of dpo (90% CI bound) = -0.682 < 0.0 → pass" in out.getvalue()


def test_a_datasets_split_warnings_are_shown_after_the_table():
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from kubetune_operator.cli.run import print_results
    from kubetune_operator.localrun.runner import StepResult

    data = SimpleNamespace(kind_name="PreferenceDataset", metadata=SimpleNamespace(name="bad-cases"))
    summary = {"kind": "dataset", "counts": {"train": 9, "test": 3}, "dropped": {},
               "warnings": ["subtype '[a]' has no row in train: its prompts recur in subtype 'b'"]}
    out = io.StringIO()
    print_results(Console(file=out, width=200), [StepResult(data, "Succeeded", summary=summary)])
    assert "warning PreferenceDataset/bad-cases: subtype '[a]' has no row in train" in out.getvalue()


def test_a_namespace_that_would_leave_the_workdir_is_refused_by_the_runner_too(fake_trainer, monkeypatch):
    # The API refuses such a namespace; the runner checks again, as paths are built from it.
    tmp_path, counter, resources = fake_trainer
    resources[0].metadata.namespace = "../../esc"  # refused input
    monkeypatch.setattr(runner_module, "absolute_file_uris", lambda resource, base: resource)
    with pytest.raises(UserError, match="would leave"):
        LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0).run(resources[:1])
    assert calls(counter) == []
    assert not (tmp_path / "esc").exists()


@pytest.mark.parametrize("command", ["render", "run"])
def test_render_and_run_refuse_a_namespace_that_is_not_a_dns_label(command, tmp_path):
    import subprocess

    bad = ftj()
    bad["metadata"]["namespace"] = "../../esc"  # refused input
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    kubetune = Path(sys.executable).with_name("kubetune")
    result = subprocess.run([str(kubetune), command, str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert "bad.yaml#0 (FineTuneJob job): metadata.namespace: must be a DNS-1123 label" in result.stderr
    assert "../../esc" not in result.stdout  # refused input


@pytest.mark.parametrize(
    "given, said",
    [
        ("s3://", "is not an s3://BUCKET"),
        ("s3:///prefix", "is not an s3://BUCKET"),
        ("s3://B/x", "is not an s3://BUCKET"),
        ("s3://bucket/../x", "is not an s3://BUCKET"),
        ("ftp://x/y", "unsupported scheme"),
        ("s3:/bucket/x", "unsupported scheme"),
        ("", "is empty"),
    ],
)
@pytest.mark.parametrize("command, flag", [("run", "--artifacts"), ("render", "--artifact-root")])
def test_an_artifact_root_that_is_no_store_is_refused_before_anything_runs(command, flag, given, said, tmp_path):
    import subprocess

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(ftj()))
    kubetune = Path(sys.executable).with_name("kubetune")
    result = subprocess.run(
        [str(kubetune), command, str(path), f"{flag}={given}", *(["--workdir", "wd"] if command == "run" else [])],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout
    assert flag in result.stderr and said in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


def test_artifact_roots_that_name_a_store_are_accepted(tmp_path, monkeypatch):
    from kubetune_operator.builders.settings import artifact_root_problem
    from kubetune_operator.cli.run import artifact_root

    monkeypatch.chdir(tmp_path)
    for good in ("s3://bucket", "s3://my.bucket-1/a/b/", "file:///srv/x", "out", "./s3:/x", "/abs/path"):
        assert artifact_root_problem(good) is None, good
    assert artifact_root("./s3:/x") == f"file://{tmp_path}/s3:/x"


def test_force_leaves_an_output_folder_kubetune_did_not_create_alone(fake_trainer):
    tmp_path, counter, resources = fake_trainer
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x").write_text("keep")
    job = resources[1].model_copy(deep=True)
    job.spec.output.uri = f"file://{mine}"
    results = LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0, force=True).run([resources[0], job])
    assert [r.phase for r in results] == ["Succeeded", "Failed"]
    assert results[1].message.startswith(f"--force: {mine} was not created by kubetune")
    assert (mine / "x").read_text() == "keep" and sorted(p.name for p in mine.iterdir()) == ["x"]
    assert calls(counter) == ["data prepare"]


def test_a_second_run_on_one_workdir_is_refused_naming_the_holder(fake_trainer):
    import os

    from kubetune_operator.localrun.locks import Busy, Locks

    tmp_path, counter, resources = fake_trainer
    with Locks() as held:
        held.take(tmp_path / "work" / "lock", "work folder", "")
        with pytest.raises(Busy, match=rf"work folder {tmp_path}/work is in use by another kubetune run \(PID {os.getpid()}\)"):
            LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0).run(resources)
    assert calls(counter) == []
    results = LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0).run(resources)
    assert [r.phase for r in results] == ["Succeeded", "Succeeded"]


def test_runs_sharing_an_artifacts_folder_are_kept_off_each_others_outputs(fake_trainer):
    import os

    from kubetune_operator.localrun.locks import Busy, Locks

    tmp_path, counter, resources = fake_trainer
    output = tmp_path / "artifacts" / "default" / "finetunejobs" / "job"
    with Locks() as held:
        held.take(output / ".kubetune-lock", "output", "")
        with pytest.raises(Busy, match=rf"output {output} of FineTuneJob job is in use by another kubetune run \(PID {os.getpid()}\)"):
            LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "other-work", gpus=0).run(resources)
    assert calls(counter) == []


def test_kubetunes_own_files_in_an_output_are_not_its_content(tmp_path):
    (tmp_path / "test.jsonl").write_text("{}\n")
    before = runner_module._file_fingerprint(f"file://{tmp_path}")
    (tmp_path / ".kubetune-lock").write_text("4242\n")
    (tmp_path / ".kubetune-output").write_text("{}\n")
    assert runner_module._file_fingerprint(f"file://{tmp_path}") == before
    assert runner_module._model_fingerprint(f"file://{tmp_path}") == [("test.jsonl", 3, (tmp_path / "test.jsonl").stat().st_mtime_ns)]


def wait_for(condition, what: str, seconds: float = 60.0):
    import time

    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def gone(pid: int) -> bool:
    """Exited (a zombie whose parent never reaps it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.fixture
def kubetune_run(fake_trainer):
    """`kubetune run` in a process of its own, with the fake trainer first on its pods' PATH."""
    import subprocess

    tmp_path, _, resources = fake_trainer
    files = []
    for resource in resources:
        path = tmp_path / f"{resource.metadata.name}.yaml"
        path.write_text(yaml.safe_dump(resource.to_wire()))
        files.append(str(path))
    # SIGINT at Python's default, as a terminal gives it: a suite started in the background of a
    # non-interactive shell (a CI step, `make test &`) passes SIGINT on as ignored, and Python then
    # leaves it ignored.
    driver = (
        f"import signal, sys; sys.executable = {str(tmp_path / 'bin' / 'python')!r}\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from kubetune_operator.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )

    def start_hanging_step() -> tuple[subprocess.Popen, int]:
        """The run, and the PID of its first step, which waits for SIGTERM and has sent its first event."""
        (tmp_path / "hang").write_text("wait for SIGTERM")
        run = subprocess.Popen(
            [PYTHON, "-c", driver, "run", *files, "--artifacts", "artifacts", "--workdir", "work", "--gpus", "0"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        started.append(run)
        pid_file = tmp_path / "pid"
        child = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the step to start"))
        progress = tmp_path / "work" / "pods" / "default" / "preferencedatasets" / "data" / "progress.jsonl"
        wait_for(progress.exists, "the step's first event")
        return run, child

    started: list[subprocess.Popen] = []
    yield tmp_path, start_hanging_step
    # A run that a failed test left waiting must not outlive it (its step stops by parent-death signal).
    for run in started:
        if run.poll() is None:
            run.kill()
            run.wait()


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_stop_signal_reaches_the_running_step_and_is_awaited(kubetune_run, signum, code):
    import signal

    tmp_path, start_hanging_step = kubetune_run
    run, child = start_hanging_step()
    run.send_signal(getattr(signal, signum))
    output, _ = run.communicate(timeout=60)
    assert run.returncode == code, output
    assert (tmp_path / "got-sigterm").exists() and gone(child)
    assert "interrupted; Preempted (exit 75): stopped by SIGTERM" in output


def test_the_running_step_stops_when_kubetune_run_is_killed(kubetune_run):
    import os
    import signal

    tmp_path, start_hanging_step = kubetune_run
    run, child = start_hanging_step()
    os.kill(run.pid, signal.SIGKILL)
    run.communicate(timeout=60)
    # The kernel tells the orphan, as a node would its pods: it stops as on a preemption.
    wait_for(lambda: (tmp_path / "got-sigterm").exists(), "the step to get SIGTERM")
    wait_for(lambda: gone(child), "the step to exit")


@pytest.mark.parametrize(
    "code, termination, interrupted, killed, message",
    [
        (137, "", False, False, "Killed (exit 137): killed by SIGKILL (out of memory?)"),
        # The log tail a killed pod falls back to starts anywhere: it is no reason.
        (137, "ep 12/40 loss 0.41\nstep 13/40", False, False, "Killed (exit 137): killed by SIGKILL (out of memory?)"),
        (137, "", True, True, "interrupted; Killed (exit 137): killed by a second interrupt"),
        (143, '{"kind": "train", "output": "file:///o", "steps": 4}', False, False,
         "Terminated (exit 143): stopped by SIGTERM after it wrote its summary"),
        (143, '{"kind": "train", "error": "disk full", "reason": "StorageError"}', True, False,
         "interrupted; Terminated (exit 143): disk full"),
        (143, "", True, False, "interrupted; Terminated (exit 143): stopped by SIGTERM before it wrote a summary"),
        (139, "", False, False, "Killed by SIGSEGV (exit 139): stopped by SIGSEGV before it wrote a summary"),
        (1, "Traceback (most recent call last):\n  ...\nValueError: boom\n", False, False,
         "InternalError (exit 1): last line of its log: ValueError: boom"),
        (1, "", False, False, "InternalError (exit 1): no message"),
        (1, "[1, 2]", False, False, "InternalError (exit 1): last line of its log: [1, 2]"),
        (65, '{"kind": "dataset", "error": "' + "x" * 5000 + '"}', False, False,
         "BadData (exit 65): " + "x" * 999 + "… (5000 characters)"),
    ],
)
def test_a_failed_step_is_described_by_its_exit_and_summary(code, termination, interrupted, killed, message):
    from kubetune_operator.localrun.pod import PodResult
    from kubetune_operator.localrun.runner import failure_message

    summary = json.loads(termination) if termination.startswith("{") else {}
    assert failure_message(PodResult(code, termination, termination), summary, interrupted, killed) == message


def test_a_step_killed_by_sigkill_is_said_to_be_killed(fake_trainer):
    tmp_path, _, resources = fake_trainer
    (tmp_path / "hang").write_text("wait for SIGTERM")

    def kill_it(resource, event):
        import os
        import signal

        os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)

    results = LocalRunner(f"file://{tmp_path}/artifacts", tmp_path / "work", gpus=0, on_event=kill_it).run(resources)
    assert results[0].message == "Killed (exit 137): killed by SIGKILL (out of memory?)"


def run_json(tmp_path, resources, capsys, *extra) -> tuple[int, dict]:
    from kubetune_operator.cli import main

    files = []
    for resource in resources:
        path = tmp_path / f"{resource.metadata.name}.yaml"
        path.write_text(yaml.safe_dump(resource.to_wire()))
        files.append(str(path))
    code = main(["run", *files, "--artifacts", str(tmp_path / "artifacts"), "--workdir", str(tmp_path / "work"),
                 "--gpus", "0", "--output", "json", *extra])
    out = capsys.readouterr().out
    # The whole of stdout is the document: progress and tables went to stderr.
    return code, json.loads(out)


def test_output_json_is_one_document_with_phases_metrics_and_artifacts(fake_trainer, capsys):
    tmp_path, _, resources = fake_trainer
    code, document = run_json(tmp_path, resources, capsys)
    assert code == 0
    assert (document["kind"], document["result"], document["exitCode"]) == ("LocalRun", "Succeeded", 0)
    data, job = document["resources"]
    assert (data["kind"], data["name"], data["phase"]) == ("PreferenceDataset", "data", "Succeeded")
    assert data["metrics"] == {"counts": {"train": 3, "test": 1}}
    assert data["fingerprint"].startswith("sha256:")
    output = f"file://{tmp_path}/artifacts/default/finetunejobs/job"
    assert job["metrics"] == {"steps": 2}
    assert job["artifacts"] == {"output": output, "final": f"{output}/final"}
    assert job["artifactType"] == "adapter"

    code, again = run_json(tmp_path, resources, capsys)
    assert [r["phase"] for r in again["resources"]] == ["Skipped", "Skipped"]
    assert again["resources"][1]["artifacts"] == job["artifacts"]


def test_output_json_names_a_failed_steps_reason(fake_trainer, capsys):
    tmp_path, _, resources = fake_trainer
    (tmp_path / "fail").touch()
    code, document = run_json(tmp_path, resources, capsys)
    assert (code, document["result"], document["exitCode"]) == (1, "Failed", 1)
    failed = document["resources"][1]
    assert (failed["phase"], failed["reason"]) == ("Failed", "BadConfig")
    assert failed["message"] == "BadConfig (exit 64): learning_rate: too high"
    assert "metrics" not in failed


def test_output_json_says_why_nothing_ran(tmp_path, capsys):
    bad = ftj()
    bad["spec"]["hyperparameters"] = {"learningRate": -1}
    resource_file = tmp_path / "bad.yaml"
    resource_file.write_text(yaml.safe_dump(bad))
    from kubetune_operator.cli import main

    code = main(["run", str(resource_file), "--workdir", str(tmp_path / "work"), "--output", "json"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert code == 2 and (document["result"], document["exitCode"], document["resources"]) == ("Invalid", 2, [])
    assert "spec.hyperparameters.learningRate" in document["error"]
    assert "spec.hyperparameters.learningRate" in captured.err


def test_an_evalruns_json_has_values_deltas_gates_and_the_report(tmp_path):
    from types import SimpleNamespace

    from kubetune_operator.cli.run import resource_document
    from kubetune_operator.localrun.runner import StepResult

    gate = {"name": "holds", "metric": "contains", "candidate": "dpo", "value": -0.05, "threshold": 0.0,
            "comparator": ">=", "passed": False}
    full = {"baseline": "sft", "gates": [gate], "report": f"file://{tmp_path}/report.html",
            "metrics": {"sft": {"contains": {"value": 0.7, "ciLow": 0.6, "ciHigh": 0.8}},
                        "dpo": {"contains": {"value": 0.65, "ciLow": 0.55, "ciHigh": 0.75}}},
            "deltas": {"dpo": {"contains": {"value": -0.05, "ciLow": -0.1, "ciHigh": 0.0}}}}
    (tmp_path / "summary.json").write_text(json.dumps(full))
    short = {"kind": "eval", "output": f"file://{tmp_path}", "report": full["report"], "passed": False,
             "gates": [gate], "gateTally": {"passed": 0, "total": 1}}
    evalrun = SimpleNamespace(kind_name="EvalRun", metadata=SimpleNamespace(name="eval", namespace=None))
    entry = resource_document(StepResult(evalrun, "Succeeded", 3.0, summary=short))
    assert entry["passed"] is False and entry["gates"] == [gate] and entry["gateTally"] == {"passed": 0, "total": 1}
    assert entry["metrics"]["sft"]["contains"] == {"value": 0.7, "ciLow": 0.6, "ciHigh": 0.8}
    assert entry["metrics"]["dpo"]["contains"] == {
        "value": 0.65, "ciLow": 0.55, "ciHigh": 0.75, "delta": -0.05, "deltaCiLow": -0.1, "deltaCiHigh": 0.0}
    assert entry["artifacts"] == {"output": f"file://{tmp_path}", "report": full["report"]}
    assert (entry["namespace"], entry["baseline"]) == ("default", "sft")


def test_a_local_run_leaves_out_what_only_a_cluster_has():
    from kubetune_operator.localrun.runner import without_cluster_plumbing

    document = ftj()
    document["spec"]["pod"] = {"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                               "modelCache": {"claimName": "models"}}
    document["spec"]["storage"] = {"caBundle": {"configMapName": "internal-ca"}}
    local = without_cluster_plumbing(validate(document))
    assert local.spec.pod.env == [] and local.spec.pod.model_cache is None
    assert local.spec.storage.ca_bundle is None
