"""Builders: typed spec in, manifests out — valid Kubernetes, restricted, deterministic."""

import copy
import itertools
import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubetune_operator.api.evalrun import PullRequest
from kubetune_operator.api.validation import validate
from kubetune_operator.builders import dataset, evaluation, graph, promotion, training, workload
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.cli.documents import load_documents, validate_all
from kubetune_operator.errors import UserError, ValidationFailed
from kubetune_operator.exitcodes import PERMANENT

ROOT = Path(__file__).resolve().parents[4]
SETTINGS = OperatorSettings(
    artifact_root="s3://artifacts/kubetune",
    progress_base_url="http://kubetune-operator.kubetune-system.svc:8080",
    s3_secret="default-s3",
)
UID = "6f1c1a57-8a2e-4bd4-9b5e-1b8f4f0f0001"


def load(name: str, **spec_changes) -> dict:
    document = yaml.safe_load((ROOT / "examples" / name).read_text())
    document["metadata"]["uid"] = UID
    for path, value in spec_changes.items():
        node = document["spec"]
        *parents, last = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return document


def resource(name: str, **spec_changes):
    return validate(load(name, **spec_changes))


def all_manifests():
    resources = validate_all(load_documents(sorted((ROOT / "examples").rglob("*.yaml"))))
    for r in resources:
        r.metadata.uid = UID
    manifests = graph.render(resources, SETTINGS)
    record = {"schemaVersion": 1, "evalRun": {"name": "x"}}
    evr = resource("evalrun.yaml")
    return [*manifests, *promotion.build(evr, SETTINGS, record)]


MANIFESTS = all_manifests()
PODS = [m["spec"]["template"]["spec"] for m in MANIFESTS if m["kind"] == "Job"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_every_manifest_is_valid_kubernetes(manifest):
    kubernetes_validate.validate(manifest, "1.33", strict=True)


@pytest.mark.parametrize("pod", PODS, ids=lambda p: p["containers"][0]["name"] + "/" + p["containers"][0]["image"])
def test_every_pod_meets_the_restricted_pod_security_standard(pod):
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True
        assert security["runAsNonRoot"] is True
        assert security.get("privileged") is not True
        assert container["resources"]["requests"] == container["resources"]["limits"]
        # Writable places on a read-only root are emptyDirs, or a claim the user named (a model cache).
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container["volumeMounts"]:
            if mount["mountPath"] in writable:
                assert {"emptyDir", "persistentVolumeClaim"} & set(volumes[mount["name"]]), mount
    assert not any(key in pod for key in ("hostNetwork", "hostPID", "hostIPC"))
    # The volume types the restricted profile allows.
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
    assert all(set(v) - {"name"} <= allowed for v in pod["volumes"]), pod["volumes"]


def test_children_are_owned_labelled_and_deterministically_named():
    again = all_manifests()
    assert again == MANIFESTS
    for manifest in MANIFESTS:
        meta = manifest["metadata"]
        (owner,) = meta["ownerReferences"]
        assert owner["uid"] == UID and owner["controller"] is True
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubetune"
        resource_name = meta["labels"]["kubetune.dev/resource"]
        assert meta["name"].startswith(resource_name + "-")


def test_no_owner_reference_without_a_uid():
    document = load("preferencedataset.yaml")
    del document["metadata"]["uid"]
    (job,) = dataset.build(validate(document), SETTINGS)
    assert "ownerReferences" not in job["metadata"]


def test_commands_are_argv_lists_without_a_shell():
    for pod in PODS:
        for container in pod["containers"]:
            argv = container["command"]
            assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
            assert argv[0] in {"kubetune-trainer", "kubetune"}
            assert not {"sh", "bash", "-c"} & set(argv)
            assert "args" not in container


def test_job_failure_policy_ignores_disruptions_and_fails_fast_on_permanent_exit_codes():
    for manifest in (m for m in MANIFESTS if m["kind"] == "Job"):
        spec = manifest["spec"]
        ignore, fail = spec["podFailurePolicy"]["rules"]
        assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
        assert fail["action"] == "FailJob"
        assert fail["onExitCodes"]["values"] == sorted(PERMANENT)
        assert fail["onExitCodes"]["containerName"] == spec["template"]["spec"]["containers"][0]["name"]
        assert spec["podReplacementPolicy"] == "Failed"
        assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_data_command_carries_every_option_as_its_own_argument():
    pds = resource("pipeline/01-sft-data.yaml", limits={"maxRows": 1000, "maxLength": 5000})
    (job,) = dataset.build(pds, SETTINGS)
    argv = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[:3] == ["kubetune-trainer", "data", "prepare"]
    pairs = dict(itertools.pairwise(argv))
    assert pairs["--kind"] == "sft" and pairs["--format"] == "defects-raw"
    assert pairs["--stratify-by"] == "subtype" and pairs["--test-fraction"] == "0.2"
    assert pairs["--max-rows"] == "1000" and pairs["--max-length"] == "5000"
    assert pairs["--output"] == "s3://artifacts/kubetune/llm-team/preferencedatasets/defects-sft"


def test_inline_llamafactory_columns_become_a_column_map():
    document = load("preferencedataset.yaml")
    document["spec"]["format"] = "sharegpt"
    document["spec"]["sources"] = [{"uri": "s3://llm-data/pref.json"}]
    document["spec"]["llamafactory"] = {
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        "tags": {"roleTag": "from", "contentTag": "value", "userTag": "human", "assistantTag": "gpt"},
    }
    (job,) = dataset.build(validate(document), SETTINGS)
    argv = job["spec"]["template"]["spec"]["containers"][0]["command"]
    column_map = yaml.safe_load(argv[argv.index("--column-map") + 1])
    assert column_map == {
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        "formatting": "sharegpt",
        "ranking": True,
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


def train_children(**spec_changes):
    ftj = resource("finetunejob.yaml", **spec_changes)
    inputs = training.TrainingInputs(dataset_uri="s3://artifacts/kubetune/llm-team/preferencedatasets/x")
    return {m["kind"]: m for m in training.build(ftj, SETTINGS, inputs)}


def trainer_container(children):
    return children["Job"]["spec"]["template"]["spec"]["containers"][0]


def test_one_node_of_eight_gpus_starts_eight_workers_with_zero3():
    children = train_children()
    container = trainer_container(children)
    assert container["command"] == [
        "kubetune-trainer", "train", "--config", "/etc/kubetune/config.yaml", "--nnodes=1", "--nproc-per-node=8"
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    config = yaml.safe_load(children["ConfigMap"]["data"]["config.yaml"])
    assert config["deepspeed_stage"] == 3
    assert config["method"] == "dpo" and config["beta"] == 0.1 and config["lora_r"] == 8
    assert config["cutoff_len"] == 4096 and config["output"].endswith("/finetunejobs/qwen2-7b-repeater-dpo")


def test_several_nodes_rendezvous_through_the_headless_service():
    children = train_children(resources__nodes=4)
    job, service = children["Job"], children["Service"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"] == "qwen2-7b-repeater-dpo-train"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    argv = trainer_container(children)["command"]
    assert "--nnodes=4" in argv and "--node-rank=$(JOB_COMPLETION_INDEX)" in argv
    assert "--master-addr=qwen2-7b-repeater-dpo-train-0.qwen2-7b-repeater-dpo-train" in argv
    selector = service["spec"]["selector"]
    assert selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()


def test_cpu_training_is_one_plain_process_without_gpus_or_zero():
    children = train_children(resources={"gpusPerNode": 0, "cpu": "2", "memory": "8Gi"})
    container = trainer_container(children)
    assert container["command"] == ["kubetune-trainer", "train", "--config", "/etc/kubetune/config.yaml"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert yaml.safe_load(children["ConfigMap"]["data"]["config.yaml"])["deepspeed_stage"] == 0


def test_kueue_queue_creates_the_job_suspended_with_its_label():
    job = train_children()["Job"]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-training"
    job = train_children(queueName=None)["Job"]
    assert job["spec"]["suspend"] is False and "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


def test_progress_token_and_s3_credentials_come_by_reference():
    env = {e["name"]: e for e in trainer_container(train_children())["env"]}
    assert env["KUBETUNE_PROGRESS_URL"]["value"] == (
        "http://kubetune-operator.kubetune-system.svc:8080/progress/llm-team/finetunejobs/qwen2-7b-repeater-dpo"
    )
    assert env["KUBETUNE_PROGRESS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == f"qwen2-7b-repeater-dpo-progress-{UID}"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
    assert all("value" not in e or "AWS_SECRET" not in e["name"] for e in env.values())


def test_tracking_reaches_the_config_and_its_server_comes_from_the_secret():
    children = train_children(tracking={"reportTo": ["mlflow", "tensorboard"], "project": "repeater", "secretName": "mlflow"})
    config = yaml.safe_load(children["ConfigMap"]["data"]["config.yaml"])
    assert config["report_to"] == ["mlflow", "tensorboard"]
    assert config["tracking_project"] == "repeater" and config["run_name"] == "qwen2-7b-repeater-dpo"
    env = {e["name"]: e for e in trainer_container(children)["env"]}
    uri = env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]
    assert uri == {"name": "mlflow", "key": "MLFLOW_TRACKING_URI"}  # required: no server, no start
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert not [name for name in env if name.startswith("WANDB_")]
    assert "MLFLOW" not in children["ConfigMap"]["data"]["config.yaml"]


def test_irsa_uses_the_service_account_and_no_secret():
    children = train_children(storage={"serviceAccountName": "trainer-irsa"})
    pod = children["Job"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer-irsa"
    assert pod["automountServiceAccountToken"] is False
    assert not [e for e in pod["containers"][0]["env"] if e["name"].startswith("AWS_ACCESS")]


def test_default_s3_secret_applies_when_the_spec_names_none():
    children = train_children(storage={})
    env = {e["name"]: e for e in trainer_container(children)["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "default-s3"


def test_scheduling_copies_only_the_allowed_fields():
    pod = train_children(
        scheduling={"nodeSelector": {"gpu": "h100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}
    )["Job"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                  {"key": "gpu", "operator": "Exists"}]


def test_a_gpu_pod_tolerates_the_gpu_pools_taint_and_a_cpu_pod_needs_none():
    # GPU node pools are tainted with the resource's name; a pod that asks for GPUs must tolerate it.
    def pod(**resources):
        return train_children(scheduling={}, resources=resources)["Job"]["spec"]["template"]["spec"]

    assert pod(gpusPerNode=8)["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "tolerations" not in pod(gpusPerNode=0, cpu="2", memory="4Gi")
    amd = pod(gpusPerNode=8, gpuResourceName="amd.com/gpu")
    assert amd["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_sft_options_reach_the_trainer_config():
    ftj = resource("pipeline/02-sft.yaml")
    config = training.trainer_config(ftj, SETTINGS, training.TrainingInputs(dataset_uri="s3://a/b"))
    assert config["key_token_patterns"] == ["判断:(是|否)"] and config["key_token_weight"] == 2.0
    assert config["completion_only_loss"] is True and "beta" not in config


def test_deterministic_reaches_the_trainer_config_as_full_determinism():
    ftj = resource("pipeline/02-sft.yaml")
    assert training.trainer_config(ftj, SETTINGS, training.TrainingInputs(dataset_uri="s3://a/b"))["full_determinism"] is False
    ftj.spec.hyperparameters.deterministic = True
    assert training.trainer_config(ftj, SETTINGS, training.TrainingInputs(dataset_uri="s3://a/b"))["full_determinism"] is True


def test_a_truncated_training_summary_still_locates_the_artifact():
    assert training.summary_artifacts({"output": "s3://b/x"}).uri == "s3://b/x/final"
    full = training.summary_artifacts({"output": "s3://b/x", "artifact": {"uri": "s3://b/x/final", "type": "full"}})
    assert (full.uri, full.type, full.merged_uri) == ("s3://b/x/final", "full", None)


def test_chained_dpo_starts_from_the_sft_jobs_final_adapter():
    resources = validate_all(load_documents(sorted((ROOT / "examples" / "pipeline").glob("*.yaml"))))
    known = {graph.key(r): r for r in resources}
    dpo = next(r for r in resources if r.metadata.name == "qwen25-1-5b-safety-dpo")
    inputs = training.resolve_inputs(dpo, graph.predicted(dpo, known, SETTINGS))
    assert inputs.start_from_uri == "s3://artifacts/kubetune/llm-team/finetunejobs/qwen25-1-5b-defects-sft/final"
    assert inputs.dataset_uri == "s3://artifacts/kubetune/llm-team/preferencedatasets/safety-prefs"
    ordered = [r.metadata.name for r in graph.order(resources)]
    assert ordered.index("qwen25-1-5b-defects-sft") < ordered.index("qwen25-1-5b-safety-dpo")
    assert ordered.index("qwen25-1-5b-safety-dpo") < ordered.index("qwen25-1-5b-chain-eval")


def test_eval_pod_requests_tensor_parallel_gpus_and_gets_no_git_credentials():
    evr = resource("evalrun.yaml")
    inputs = evaluation.EvalInputs(
        test_set_uri="s3://llm-data/repeater/test.json",
        candidates={"dpo": evaluation.CandidateArtifacts(adapter="s3://a/finetunejobs/x/final")},
    )
    config_map, job = evaluation.build(evr, SETTINGS, inputs)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert all("secret" not in v for v in pod["volumes"])
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["candidates"] == [
        {"name": "base", "baseline": True, "model": "s3://llm-models/Qwen2-7B-Instruct"},
        {"name": "dpo", "baseline": False, "adapter": "s3://a/finetunejobs/x/final"},
    ]
    assert config["beam_width"] == 5 and config["engine"] == "vllm"
    assert config["gates"][0] == {
        "name": "repetition_falls", "metric": "repetition", "comparator": "<=", "threshold": -0.1,
        "relative_to_baseline": True, "use_confidence_bound": False,
    }


def test_only_the_promote_pod_mounts_the_git_secret():
    evr = resource("evalrun.yaml")
    _, job = promotion.build(evr, SETTINGS, {"schemaVersion": 1})
    pod = job["spec"]["template"]["spec"]
    secrets = [v for v in pod["volumes"] if "secret" in v]
    assert [s["secret"]["secretName"] for s in secrets] == ["gitops-token"]
    argv = pod["containers"][0]["command"]
    assert argv[:2] == ["kubetune", "promote"]
    assert argv[argv.index("--repo") + 1] == "https://git.example.com/platform/llm-serving.git"
    assert pod["containers"][0]["image"] == SETTINGS.operator_image
    assert not [e for e in pod["containers"][0]["env"] if e["name"].startswith("AWS_")]


def test_a_promotion_by_pull_request_passes_the_forge_to_a_command_the_cli_takes():
    from kubetune_operator.cli import build_parser

    evr = resource("evalrun.yaml")
    evr.spec.promotion.pull_request = PullRequest(provider="github", api_url="https://github.example.com/api/v3")
    _, job = promotion.build(evr, SETTINGS, {"schemaVersion": 1})
    argv = job["spec"]["template"]["spec"]["containers"][0]["command"]
    args = build_parser().parse_args(argv[1:])
    assert (args.pull_request, args.api_url, args.branch) == ("github", "https://github.example.com/api/v3", "main")


def test_progress_secret_is_written_not_read():
    secret = workload.progress_secret(resource("finetunejob.yaml"), "t0k3n")
    assert secret["stringData"] == {"token": "t0k3n"}
    kubernetes_validate.validate(secret, "1.33", strict=True)


def test_a_namesakes_progress_secret_is_never_the_one_a_pod_reads():
    secret = workload.progress_secret(resource("finetunejob.yaml"), "t0k3n")
    assert secret["metadata"]["name"] == f"qwen2-7b-repeater-dpo-progress-{UID}"
    kubernetes_validate.validate(secret, "1.33", strict=True)


def test_settings_come_from_the_environment():
    settings = OperatorSettings.from_env(
        {"KUBETUNE_ARTIFACT_ROOT": "s3://bkt/r", "KUBETUNE_TRAINER_IMAGE": "reg/trainer:1", "KUBETUNE_S3_SECRET": "s"}
    )
    assert (settings.artifact_root, settings.trainer_image, settings.s3_secret) == ("s3://bkt/r", "reg/trainer:1", "s")
    with pytest.raises(UserError, match="KUBETUNE_ARTIFACT_ROOT: 'ftp://x/y': unsupported scheme"):
        OperatorSettings.from_env({"KUBETUNE_ARTIFACT_ROOT": "ftp://x/y"})


def test_render_refuses_unknown_references_only_when_asked():
    resources = validate_all(load_documents([ROOT / "examples" / "finetunejob.yaml"]))
    assert graph.render(resources, SETTINGS)
    with pytest.raises(Exception, match="references PreferenceDataset repeater-badcases"):
        graph.order(resources)


def test_render_cli_names_the_document_and_field_of_a_bad_resource(tmp_path):
    import subprocess
    import sys

    bad = copy.deepcopy(load("finetunejob.yaml"))
    bad["spec"]["hyperparameters"]["learningRate"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    kubetune = Path(sys.executable).with_name("kubetune")
    result = subprocess.run([str(kubetune), "render", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{path}#0 (FineTuneJob qwen2-7b-repeater-dpo): spec.hyperparameters.learningRate" in result.stderr
    assert "Traceback" not in result.stderr


BAD_FILES = {
    "empty file": (b"", "no resource documents in {path}"),
    "only separators": (b"---\n---\n", "no resource documents in {path}"),
    "broken YAML": (b"kind: FineTuneJob\nspec: [1,\n", "{path}:3:1: not valid YAML: did not find expected node content"),
    "not UTF-8": (b"kind: \xff\n", "{path}: not UTF-8 text (byte 6 is 0xff)"),
}


@pytest.mark.parametrize("content, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_one_error_naming_it(tmp_path, content, message):
    path = tmp_path / "resources.yaml"
    path.write_bytes(content)
    with pytest.raises(ValidationFailed) as error:
        load_documents([path])
    assert str(error.value).startswith(message.format(path=path))


def test_a_resource_defined_twice_names_both_documents():
    example = ROOT / "examples" / "finetunejob.yaml"
    with pytest.raises(ValidationFailed, match=rf"{example}#0 \(FineTuneJob .*\): defined twice \(first in {example}#0\)"):
        validate_all(load_documents([example, example]))


def _string_leaves(node, path=()):
    if isinstance(node, str):
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _string_leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_leaves(value, (*path, index))


def _with(document, path, value):
    changed = copy.deepcopy(document)
    node = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


def _containers_of(manifests):
    for manifest in manifests:
        if manifest["kind"] == "Job":
            yield from manifest["spec"]["template"]["spec"]["containers"]


EXAMPLE_DOCUMENTS = [
    document
    for path in sorted((ROOT / "examples").rglob("*.yaml"))
    for document in yaml.safe_load_all(path.read_text())
    if document
]


@pytest.mark.parametrize("text", ["$(HOME)", "x $(HOME) $$(HOME) $$$(HOME) $"])
def test_no_users_text_is_ever_expanded_by_the_kubelet_in_any_builder(text):
    """Every string field of every example, given `$(HOME)` where the API lets it through, must reach
    the process as written: the kubelet expands `$(VAR)` in command, args and env values."""
    from kubetune_operator.localrun.pod import expand

    reached = set()
    for document in EXAMPLE_DOCUMENTS:
        if "promotion" in document["spec"]:
            document = _with(document, ("spec", "promotion", "author"), "Bot <bot@example.com>")
        for path in _string_leaves(document["spec"], ("spec",)):
            written = f"Bot {text} <bot@example.com>" if path[-1] == "author" else text
            for value in (written, f"a{written}"):
                changed = _with(document, path, value)
                try:
                    resource_ = validate(changed)
                except ValidationFailed:
                    continue
                manifests = graph.render([resource_], SETTINGS)
                if getattr(resource_.spec, "promotion", None) is not None:
                    manifests += promotion.build(resource_, SETTINGS, {"schemaVersion": 1})
                for container in _containers_of(manifests):
                    env = {"HOME": "EXPANDED", **{e["name"]: "EXPANDED" for e in container["env"]}}
                    passed = [expand(a, env) for a in container["command"] + container.get("args", [])]
                    passed += [expand(e["value"], env) for e in container["env"] if "value" in e]
                    assert not [p for p in passed if "EXPANDED" in p], (path, passed)
                    if any(text in p for p in passed):
                        reached.add(path[-1])
    # The free-text fields that reach a command line: the author, column names, a stratify field...
    assert "author" in reached, reached


def test_pod_plumbing_reaches_the_training_pod_with_the_model_cache_and_scratch_size():
    ftj = resource("finetunejob.yaml")
    pod = training.build(ftj, SETTINGS, training.TrainingInputs("s3://d/p"))[-1]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}
    assert env["KUBETUNE_MODEL_CACHE"]["value"] == "/cache/models" and "KUBETUNE_MODEL_CACHE_READ_ONLY" not in env
    # The user's variables come after kubetune's, so theirs win over its defaults.
    assert [e["name"] for e in container["env"]].index("HF_TOKEN") > [e["name"] for e in container["env"]].index("HOME")
    assert container["envFrom"] == [{"configMapRef": {"name": "egress-proxy", "optional": True}}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "llm-model-cache", "readOnly": False}
    assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "200Gi"}
    assert container["resources"]["requests"]["ephemeral-storage"] == "200Gi"
    assert container["resources"]["limits"]["ephemeral-storage"] == "200Gi"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/internal-ca"] == {"name": "internal-ca", "mountPath": "/etc/internal-ca", "readOnly": True}
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    kubernetes_validate.validate(training.build(ftj, SETTINGS, training.TrainingInputs("s3://d/p"))[-1], "1.33",
                                 strict=True)


def test_the_charts_defaults_apply_where_a_resource_sets_nothing_and_yield_where_it_does():
    settings = OperatorSettings.from_env({
        "KUBETUNE_S3_ENDPOINT_URL": "https://s3.internal:9000",
        "KUBETUNE_S3_CA_BUNDLE": "internal-ca/bundle.pem",
        "KUBETUNE_POD_DEFAULTS": json.dumps({
            "training": {"nodeSelector": {"pool": "gpu"}, "priorityClassName": "training",
                         "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]},
            "evaluation": {"nodeSelector": {"pool": "inference"}},
        }),
    })
    ftj = resource("finetunejob.yaml")  # sets tolerations and affinity, not nodeSelector nor priorityClassName
    pod = training.build(ftj, settings, training.TrainingInputs("s3://d/p"))[-1]["spec"]["template"]["spec"]
    assert (pod["nodeSelector"], pod["priorityClassName"]) == ({"pool": "gpu"}, "training")
    assert {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"} not in pod["tolerations"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (env["AWS_ENDPOINT_URL"], env["AWS_CA_BUNDLE"]) == ("https://s3.internal:9000", "/etc/kubetune-ca/ca.crt")
    ca = next(v for v in pod["volumes"] if v["name"] == "ca-bundle")
    assert ca["configMap"] == {"name": "internal-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}
    evr = resource("evalrun.yaml", scheduling={"nodeSelector": {"pool": "mine"}},
                   storage={"secretName": "s3-credentials", "endpointUrl": "https://minio.team:9000"})
    eval_pod = evaluation.build(evr, settings, evaluation.EvalInputs("s3://t"))[-1]["spec"]["template"]["spec"]
    assert eval_pod["nodeSelector"] == {"pool": "mine"} and "priorityClassName" not in eval_pod
    assert {e["name"]: e.get("value") for e in eval_pod["containers"][0]["env"]}["AWS_ENDPOINT_URL"] == (
        "https://minio.team:9000")
    data_pod = dataset.build(resource("preferencedataset.yaml"), settings)[-1]["spec"]["template"]["spec"]
    assert any(v["name"] == "ca-bundle" for v in data_pod["volumes"]) and "nodeSelector" not in data_pod


@pytest.mark.parametrize("variable, value, said", [
    ("KUBETUNE_POD_DEFAULTS", '{"training": {"nodeSelector": {"a b": "x"}}}', "KUBETUNE_POD_DEFAULTS.training: nodeSelector"),
    ("KUBETUNE_POD_DEFAULTS", '{"trainig": {}}', "keys training, evaluation"),
    ("KUBETUNE_POD_DEFAULTS", "{", "not JSON"),
    ("KUBETUNE_S3_ENDPOINT_URL", "ftp://x", "KUBETUNE_S3_ENDPOINT_URL: endpointUrl"),
    ("KUBETUNE_S3_CA_BUNDLE", "Bad_Name/ca.crt", "KUBETUNE_S3_CA_BUNDLE: configMapName"),
])
def test_a_bad_chart_default_stops_the_operator_naming_it(variable, value, said):
    with pytest.raises(UserError, match=said):
        OperatorSettings.from_env({variable: value})


def test_users_env_values_reach_the_process_as_written():
    ftj = resource("finetunejob.yaml", pod={"env": [{"name": "GREETING", "value": "$(HOME) costs $5"}]})
    container = training.build(ftj, SETTINGS, training.TrainingInputs("s3://d/p"))[-1]["spec"]["template"]["spec"][
        "containers"][0]
    assert {e["name"]: e.get("value") for e in container["env"]}["GREETING"] == "$$(HOME) costs $$5"


@pytest.mark.parametrize("pod, field", [
    ({"env": [{"name": "KUBETUNE_NAME", "value": "x"}]}, "spec.pod.env[0].name"),
    ({"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "spec.pod.env[0]"),
    ({"volumes": [{"name": "scratch", "emptyDir": {}}]}, "spec.pod.volumes[0].name"),
    ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "spec.pod.volumes[0].hostPath"),
    ({"volumes": [{"name": "v", "emptyDir": {}}], "volumeMounts": [{"name": "v", "mountPath": "/scratch/x"}]},
     "spec.pod.volumeMounts[0].mountPath"),
    ({"volumeMounts": [{"name": "nowhere", "mountPath": "/data"}]}, "spec.pod.volumeMounts"),
    ({"volumes": [{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]}, "spec.pod.volumes[0]"),
])
def test_pod_plumbing_that_would_break_the_pod_or_kubetune_is_refused_naming_the_field(pod, field):
    with pytest.raises(ValidationFailed, match=re.escape(field)):
        resource("finetunejob.yaml", pod=pod)
