"""One container of a rendered pod spec as a local process: volumes, env, paths, torchrun, results."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from kubetune_operator.localrun.pod import (
    LocalContainer,
    PodSpecError,
    collapse_torchrun,
    expand,
    localize,
    prepare,
    run,
)


def spec(command, env=(), volumes=(), mounts=(), policy="FallbackToLogsOnError"):
    return {
        "containers": [{"name": "c", "command": list(command), "env": list(env), "volumeMounts": list(mounts),
                        "terminationMessagePolicy": policy}],
        "volumes": list(volumes),
    }


def test_variable_references_expand_like_kubernetes():
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"


def test_mount_paths_are_replaced_once_at_path_boundaries(tmp_path):
    mounts = {"/tmp": tmp_path / "tmp", "/scratch": tmp_path / "tmp" / "scratch"}
    assert localize("/scratch/cache", mounts) == f"{tmp_path}/tmp/scratch/cache"
    assert localize("--dir=/tmp/x", mounts) == f"--dir={tmp_path}/tmp/x"
    assert localize("/tmpfs/x and s3://b/tmp", mounts) == "/tmpfs/x and s3://b/tmp"
    assert localize("--output=file:///tmp/artifacts", mounts) == "--output=file:///tmp/artifacts"


@pytest.mark.parametrize(("argv", "gpus", "expected"), [
    (["torchrun", "--standalone", "--nproc-per-node=8", "-m", "pkg", "train"], 0, [sys.executable, "-m", "pkg", "train"]),
    (["torchrun", "--nnodes=4", "--nproc-per-node", "8", "--node-rank=$(JOB_COMPLETION_INDEX)",
      "--master-addr=x-0.x", "-m", "pkg", "train"], 2,
     ["torchrun", "--standalone", "--nproc-per-node=2", "-m", "pkg", "train"]),
    (["torchrun", "--no-python", "kubetune-trainer", "train"], 1, ["kubetune-trainer", "train"]),
    (["kubetune-trainer", "train"], 8, ["kubetune-trainer", "train"]),
])
def test_torchrun_collapses_onto_this_machine(argv, gpus, expected):
    assert collapse_torchrun(argv, gpus) == expected


def test_config_maps_secrets_and_fields_reach_the_process(tmp_path):
    pod = spec(
        [sys.executable, "-c", "import os,sys; print(open(sys.argv[1]).read(), os.environ['TOKEN'], os.environ['ME'],"
         " os.environ['HOME_DIR'])", "/etc/app/config.yaml"],
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
             {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
             {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope", "optional": True}}},
             {"name": "HOME_DIR", "value": "/scratch/home-$(ME)"}],
        volumes=[{"name": "config", "configMap": {"name": "cm"}}, {"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "config", "mountPath": "/etc/app"}, {"name": "scratch", "mountPath": "/scratch"}],
    )
    result = run(pod, workdir=tmp_path, config_maps={"cm": {"config.yaml": "lr: 1"}}, secrets={"s": {"token": "t0k"}},
                 fields={"metadata.name": "pod-1"})
    assert result.exit_code == 0
    assert result.log_tail.split() == ["lr:", "1", "t0k", "pod-1", f"{tmp_path}/volumes/scratch/home-pod-1"]


def test_what_cannot_run_locally_is_named(tmp_path):
    with pytest.raises(PodSpecError, match="env TOKEN: Secret 's' key 'token' not found"):
        prepare(spec(["true"], env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}]),
                workdir=tmp_path)
    with pytest.raises(PodSpecError, match="volume data: type persistentVolumeClaim cannot run locally"):
        prepare(spec(["true"], volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}]), workdir=tmp_path)
    with pytest.raises(PodSpecError, match="volume config: ConfigMap 'cm' not found"):
        prepare(spec(["true"], volumes=[{"name": "config", "configMap": {"name": "cm"}}]), workdir=tmp_path)


def test_the_termination_message_comes_from_the_file_or_the_log_tail(tmp_path):
    writes = spec([sys.executable, "-c", "import os; open(os.environ['KUBETUNE_TERMINATION_LOG'], 'w').write('{}'); exit(3)"])
    assert (run(writes, workdir=tmp_path / "a").termination_message, run(writes, workdir=tmp_path / "b").exit_code) == ("{}", 3)
    crashes = spec([sys.executable, "-c", "print('boom'); exit(1)"])
    assert run(crashes, workdir=tmp_path / "c").termination_message == "boom"
    assert run(spec(crashes["containers"][0]["command"], policy="File"), workdir=tmp_path / "d").termination_message == ""


def test_a_signalled_container_exits_128_plus_the_signal(tmp_path):
    container = LocalContainer(prepare(spec([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]),
                                       workdir=tmp_path))
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / "container.log").read_text():
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.01)
    container.signal(signal.SIGTERM)
    assert container.wait(10).exit_code == 143
