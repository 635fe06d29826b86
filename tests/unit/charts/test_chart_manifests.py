"""charts/kubetune renders valid, least-privilege, restricted manifests with every switch.

Built-in kinds validate against Kubernetes' own schemas (kubernetes-validate, strict). The
Prometheus Operator and Kueue kinds have no schema there, so they validate against the minimal
schemas below: the fields this chart uses, with unknown fields rejected so a typo cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_render import CHART, NAMESPACE, ROOT, VARIANTS, find, manifests, only, render_templates

from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.cli import build_parser
from kubetune_operator.runtime.settings import RuntimeSettings

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                   "labels": _STRING_MAP, "annotations": _STRING_MAP},
    "additionalProperties": False,
}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                               "values": {"type": "array", "items": {"type": "string"}}},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
_NAMESPACE_SELECTOR = {
    "type": "object",
    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
    "additionalProperties": False,
}
_RELABELING = {
    "type": "object",
    "properties": {"sourceLabels": {"type": "array", "items": {"type": "string"}}, "targetLabel": {"type": "string"},
                   "action": {"type": "string"}, "regex": {"type": "string"}, "replacement": {"type": "string"}},
    "additionalProperties": False,
}
_ENDPOINT = {
    "type": "object",
    "required": ["port"],
    "properties": {"port": {"type": "string"}, "path": {"type": "string"}, "interval": _DURATION,
                   "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array", "items": _RELABELING}},
    "additionalProperties": False,
}


def _custom_kind(spec: dict) -> dict:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": _METADATA,
                       "spec": spec},
        "additionalProperties": False,
    }


def _monitor(endpoints: str) -> dict:
    return _custom_kind({
        "type": "object",
        "required": ["selector", endpoints],
        "properties": {"selector": _LABEL_SELECTOR, "namespaceSelector": _NAMESPACE_SELECTOR,
                       endpoints: {"type": "array", "minItems": 1, "items": _ENDPOINT}},
        "additionalProperties": False,
    })


CUSTOM_KIND_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _monitor("endpoints"),
    ("monitoring.coreos.com/v1", "PodMonitor"): _monitor("podMetricsEndpoints"),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _custom_kind({
        "type": "object",
        "required": ["groups"],
        "properties": {"groups": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["name", "rules"],
            "properties": {"name": {"type": "string"}, "rules": {"type": "array", "items": {
                "type": "object",
                "required": ["alert", "expr"],
                "properties": {"alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                               "expr": {"type": "string", "minLength": 1}, "for": _DURATION,
                               "labels": _STRING_MAP, "annotations": _STRING_MAP},
                "additionalProperties": False,
            }}},
            "additionalProperties": False,
        }}},
        "additionalProperties": False,
    }),
    ("kueue.x-k8s.io/v1beta1", "LocalQueue"): _custom_kind({
        "type": "object",
        "required": ["clusterQueue"],
        "properties": {"clusterQueue": {"type": "string", "minLength": 1}},
        "additionalProperties": False,
    }),
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}


def validate(manifest: dict) -> None:
    custom = CUSTOM_KIND_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
    if custom is not None:
        jsonschema.validate(manifest, custom)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_finds_nothing_to_fix(variant):
    report = helm.lint(CHART, VARIANTS[variant], namespace=NAMESPACE, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_manifest_validates(rendered, variant):
    objects = rendered[variant]
    assert objects
    for manifest in objects:
        validate(manifest)


def test_the_crds_validate_and_match_the_top_level_copy(chart):
    shipped = {Path(crd["filename"]).name: crd["data"] for crd in chart.crds}
    top_level = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "crds").glob("*.yaml"))}
    assert shipped == top_level, "charts/kubetune/crds differs from crds/: run `kubetune crds`"
    for text in shipped.values():
        for crd in yaml.safe_load_all(text):
            validate(crd)


def rbac_rules(objects: list[dict]) -> list[tuple[str, dict]]:
    return [
        (f'{o["kind"]}/{o["metadata"]["name"]}', rule)
        for o in objects
        if o["kind"] in {"Role", "ClusterRole"}
        for rule in o.get("rules", [])
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_rbac_wildcard_and_no_secret_reads(rendered, variant):
    rules = rbac_rules(rendered[variant])
    assert rules
    for where, rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), f"{where}: wildcard in {field}"
        if "secrets" in rule.get("resources", []):
            assert set(rule["verbs"]) == {"create"}, f"{where}: {rule['verbs']} on secrets"


def permissions(role: dict) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def grant(group: str, resources: list[str], verbs: list[str]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for resource in resources for verb in verbs}


KINDS = ["preferencedatasets", "finetunejobs", "evalruns"]
OPERATOR_IN_A_NAMESPACE = (
    grant("kubetune.dev", KINDS, ["get", "list", "watch"])
    | grant("kubetune.dev", [f"{k}/status" for k in KINDS], ["patch"])
    | grant("kubetune.dev", [f"{k}/finalizers" for k in KINDS], ["update"])
    | grant("batch", ["jobs"], ["get", "list", "watch", "create", "patch"])
    | grant("", ["services", "configmaps"], ["get", "create"])
    | grant("", ["secrets"], ["create"])
    | grant("", ["pods"], ["list"])
    | grant("", ["events"], ["create"])
)
DISCOVERY = grant("apiextensions.k8s.io", ["customresourcedefinitions"], ["get", "list", "watch"]) | grant(
    "", ["namespaces"], ["list", "watch"]
)


def test_cluster_mode_grants_exactly_the_contract_cluster_wide(rendered):
    objects = rendered["defaults"]
    assert find(objects, "Role") == []
    role = only(objects, "ClusterRole", "kubetune-operator")
    assert permissions(role) == OPERATOR_IN_A_NAMESPACE | DISCOVERY
    binding = only(objects, "ClusterRoleBinding", "kubetune-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune", "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == "kubetune-operator"


def test_namespaced_mode_grants_the_contract_in_each_namespace_only(rendered):
    objects = rendered["namespaced-mode"]
    assert find(objects, "ClusterRole", "kubetune-operator") == []
    assert find(objects, "ClusterRoleBinding") == []
    roles = find(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert permissions(role) == OPERATOR_IN_A_NAMESPACE
    bindings = find(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune", "namespace": NAMESPACE}]


def test_user_roles_aggregate_into_view_and_edit(rendered):
    objects = rendered["defaults"]
    view = only(objects, "ClusterRole", "kubetune-view")
    edit = only(objects, "ClusterRole", "kubetune-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    assert {verb for _, _, verb in permissions(view)} == {"get", "list", "watch"}
    assert grant("kubetune.dev", KINDS, ["create", "update", "patch", "delete"]) <= permissions(edit)
    assert not any(resource.endswith("/status") and verb not in {"get", "list", "watch"}
                   for _, resource, verb in permissions(edit))


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for o in objects:
        if o["kind"] in WORKLOAD_KINDS:
            spec = o["spec"]
            if o["kind"] == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            specs.append((f'{o["kind"]}/{o["metadata"]["name"]}', spec if o["kind"] == "Pod" else spec["template"]["spec"]))
    return specs


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_workload_meets_the_restricted_pod_security_standard(rendered, variant):
    specs = pod_specs(rendered[variant])
    assert specs
    for where, pod in specs:
        pod_context = pod.get("securityContext", {})
        assert not any(pod.get(f) for f in ("hostNetwork", "hostPID", "hostIPC")), where
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container.get("securityContext", {})
            what = f"{where} container {container['name']}"
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, what
            assert context.get("runAsUser", pod_context.get("runAsUser", 1)) != 0, what
            seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
            assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, what
            assert context.get("allowPrivilegeEscalation") is False, what
            assert context.get("capabilities", {}).get("drop") == ["ALL"], what
            assert set(context.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, what
            assert context.get("readOnlyRootFilesystem") is True, what
            assert not context.get("privileged"), what
            assert not any("hostPort" in port for port in container.get("ports", [])), what
        assert not any("hostPath" in volume for volume in pod.get("volumes", [])), where


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_operator_runs_once_with_the_contract_ports_and_probe(rendered):
    deployment = only(rendered["defaults"], "Deployment", "kubetune")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubetune"]
    assert container["args"] == ["--log-level", "INFO", "operator", "--all-namespaces", "--progress-port", "8080", "--metrics-port", "9090", "--health-port", "8081"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"progress": 8080, "metrics": 9090,
                                                                          "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    service = only(rendered["defaults"], "Service", "kubetune")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "progress": (8080, "progress"), "metrics": (9090, "metrics")}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_namespaced_mode_starts_the_operator_on_each_namespace(rendered):
    container = only(rendered["namespaced-mode"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--log-level", "INFO", "operator", "--namespace", "team-a", "--namespace", "team-b",
                                 "--progress-port", "8080", "--metrics-port", "9090", "--health-port", "8081"]


def test_the_ports_are_one_value_each_for_the_pod_the_service_and_the_progress_url(chart):
    # The same number in the pod and on its Service: reached alike through a Service proxy or on the host network.
    objects = manifests(render_templates(chart, {"operator": {"ports": {"progress": 18080, "metrics": 19090,
                                                                        "health": 18081}}}))
    deployment = only(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-6:] == ["--progress-port", "18080", "--metrics-port", "19090", "--health-port", "18081"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"progress": 18080, "metrics": 19090,
                                                                          "health": 18081}
    service = only(objects, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"progress": 18080, "metrics": 19090}
    assert env_of(deployment)["KUBETUNE_PROGRESS_BASE_URL"]["value"] == "http://kubetune.kubetune-system.svc:18080"


def test_the_operator_gets_the_contract_environment(chart):
    values = {"artifacts": {"root": "s3://models/kubetune"}, "storage": {"secretName": "s3-credentials"},
              "images": {"trainer": {"repository": "registry.local/trainer", "tag": "9.9.9"},
                         "eval": {"repository": "registry.local/eval@sha256:" + "a" * 64, "tag": ""}}}
    objects = manifests(render_templates(chart, values))
    env = env_of(only(objects, "Deployment"))
    assert env["KUBETUNE_ARTIFACT_ROOT"]["value"] == "s3://models/kubetune"
    assert env["KUBETUNE_TRAINER_IMAGE"]["value"] == "registry.local/trainer:9.9.9"
    assert env["KUBETUNE_EVAL_IMAGE"]["value"] == "registry.local/eval@sha256:" + "a" * 64
    # Its tag is empty in values.yaml: the chart's appVersion.
    assert env["KUBETUNE_OPERATOR_IMAGE"]["value"] == "ghcr.io/kubetune/operator:" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert env["KUBETUNE_PROGRESS_BASE_URL"]["value"] == f"http://kubetune.{NAMESPACE}.svc:8080"
    assert env["KUBETUNE_S3_SECRET"]["value"] == "s3-credentials"
    key_ref = env["KUBETUNE_PROGRESS_KEY"]["valueFrom"]["secretKeyRef"]
    secret = only(objects, "Secret", key_ref["name"])
    assert len(secret["data"][key_ref["key"]]) >= 64


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_operator_process_accepts_what_the_deployment_passes(rendered, variant):
    """The rendered command line parses with the real `kubetune` CLI, on the ports the pod exposes,
    and the operator reads the rendered environment as the chart means it."""
    container = only(rendered[variant], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.command == "operator"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (args.progress_port, args.metrics_port, args.health_port) == (
        ports["progress"], ports["metrics"], ports["health"])
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    env = {e["name"]: e.get("value", "from-a-secret-key-ref") for e in container["env"]}
    settings = OperatorSettings.from_env(env)
    assert settings.trainer_image == env["KUBETUNE_TRAINER_IMAGE"]
    assert settings.eval_image == env["KUBETUNE_EVAL_IMAGE"]
    assert settings.operator_image == env["KUBETUNE_OPERATOR_IMAGE"]
    assert settings.progress_base_url == env["KUBETUNE_PROGRESS_BASE_URL"]
    assert settings.progress_base_url.endswith(f":{ports['progress']}")
    assert settings.artifact_root == env.get("KUBETUNE_ARTIFACT_ROOT", OperatorSettings().artifact_root)
    assert settings.s3_secret == env.get("KUBETUNE_S3_SECRET")
    assert RuntimeSettings.from_env(env).progress_key


def test_defaults_leave_out_what_is_not_configured(rendered):
    objects = rendered["defaults"]
    env = env_of(only(objects, "Deployment"))
    assert "KUBETUNE_ARTIFACT_ROOT" not in env and "KUBETUNE_S3_SECRET" not in env
    kinds = {o["kind"] for o in objects}
    assert kinds.isdisjoint({"ServiceMonitor", "PodMonitor", "PrometheusRule", "LocalQueue", "ConfigMap"})


def test_an_existing_progress_key_secret_replaces_the_generated_one(rendered):
    objects = rendered["everything-namespaced"]
    assert find(objects, "Secret") == []
    key_ref = env_of(only(objects, "Deployment"))["KUBETUNE_PROGRESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": "my-progress-key", "key": "key"}


def test_the_service_monitor_keeps_the_resources_namespace_label(rendered):
    monitor = only(rendered["service-monitor"], "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True}]
    service = only(rendered["service-monitor"], "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_the_pod_monitor_labels_series_with_resource_and_kind(rendered):
    monitor = only(rendered["pod-monitor"], "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "kubetune"}
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert relabel["resource"] == ["__meta_kubernetes_pod_label_kubetune_dev_resource"]
    assert relabel["kind"] == ["__meta_kubernetes_pod_label_kubetune_dev_kind"]
    namespaced = only(rendered["everything-namespaced"], "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_dashboards_ship_as_configmaps_for_the_grafana_sidecar(rendered):
    files = {path.name: json.loads(path.read_text(encoding="utf-8"))
             for path in sorted((CHART / "dashboards").glob("*.json"))}
    assert len(files) == 3
    configmaps = find(rendered["dashboards"], "ConfigMap")
    shipped = {}
    for configmap in configmaps:
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["annotations"] == {"grafana_folder": "kubetune"}
        assert configmap["metadata"]["namespace"] == NAMESPACE
        shipped |= {name: json.loads(text) for name, text in configmap["data"].items()}
    assert shipped == files
    assert {c["metadata"]["namespace"] for c in find(rendered["everything-namespaced"], "ConfigMap")} == {"monitoring"}


def test_per_namespace_objects_go_where_the_jobs_run(rendered):
    queues = find(rendered["everything-namespaced"], "LocalQueue")
    assert sorted(q["metadata"]["namespace"] for q in queues) == ["team-a", "team-b"]
    assert {q["spec"]["clusterQueue"] for q in queues} == {"gpu-cluster"}
    accounts = [a for a in find(rendered["irsa"], "ServiceAccount") if a["metadata"]["name"] == "kubetune-workload"]
    assert [a["metadata"]["namespace"] for a in accounts] == ["team-a"]
    assert accounts[0]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kubetune"}
    assert accounts[0]["automountServiceAccountToken"] is False


def test_a_per_namespace_object_without_namespaces_is_refused_with_the_value_to_set(chart):
    with pytest.raises(helm.HelmRenderError, match=r"kueue\.namespaces"):
        render_templates(chart, {"kueue": {"enabled": True, "clusterQueue": "gpu-cluster"}})


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"watch": {"mode": "everywhere"}}, "watch.mode"),
        ({"watch": {"mode": "namespaced"}}, "watch"),
        ({"watch": {"mode": "namespaced", "namespaces": []}}, "watch.namespaces"),
        ({"kueue": {"enabled": True}}, "kueue"),
        ({"artifacts": {"root": "my-bucket/kubetune"}}, "artifacts.root"),
        ({"metrics": {"serviceMonitor": {"enabled": True, "intervall": "30s"}}}, "intervall"),
        ({"metrics": {"prometheusRule": {"enabled": True, "stallMinutes": 0}}}, "stallMinutes"),
    ],
)
def test_bad_values_are_refused_naming_the_key(chart, values, names):
    with pytest.raises(helm.HelmError) as refused:
        render_templates(chart, values)
    assert names.split(".")[-1] in str(refused.value)


def test_notes_tell_the_user_what_to_do_next(chart):
    notes = render_templates(chart, VARIANTS["everything-namespaced"])["kubetune/templates/NOTES.txt"]
    assert "rollout status deployment/kubetune" in notes
    assert "team-a, team-b" in notes
    assert "kubectl -n <namespace> create secret generic s3-credentials" in notes
    assert "spec.queueName: kubetune" in notes
    assert "KubetuneJobStalled" in notes and "grafana_dashboard=1" in notes
    defaults = render_templates(chart, {})["kubetune/templates/NOTES.txt"]
    assert "artifacts.root is empty" in defaults
    assert "metrics.serviceMonitor.enabled=true" in defaults


def test_without_an_artifact_root_the_notes_name_where_outputs_really_go(chart):
    """The operator falls back to its built-in root, a bucket the user most likely does not own."""
    notes = render_templates(chart, {})["kubetune/templates/NOTES.txt"]
    assert OperatorSettings().artifact_root in notes
    assert "--set artifacts.root=s3://<bucket>/kubetune" in notes


def test_values_yaml_documents_every_key_the_schema_knows():
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert set(values) == set(schema["properties"]) - {"global"}
    jsonschema.validate(values, schema)


def test_pod_defaults_reach_the_operator_as_settings_a_resource_can_override(rendered):
    env = {e["name"]: e.get("value", "from-a-secret-key-ref")
           for e in only(rendered["pod-defaults"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    settings = OperatorSettings.from_env(env)
    assert settings.s3_endpoint_url == "https://s3.internal:9000"
    assert (settings.s3_ca_bundle.config_map_name, settings.s3_ca_bundle.key) == ("internal-ca", "ca.crt")
    training = settings.scheduling["training"]
    assert (training.node_selector, training.priority_class_name) == ({"pool": "gpu"}, "training")
    assert training.tolerations[0].key == "dedicated" and "nodeAffinity" in training.affinity
    assert settings.scheduling["evaluation"].node_selector == {"pool": "inference"}
    assert "KUBETUNE_POD_DEFAULTS" not in env_of(only(rendered["defaults"], "Deployment"))
