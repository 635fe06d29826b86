"""The CRDs in a real kube-apiserver: they load with every CEL rule, every example passes a
server-side dry run and a real `kubectl apply`, `kubectl get` shows the printer columns and
`kubectl explain` the descriptions, and the table of bad objects is refused by the server itself,
naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubetune_operator.api import KINDS
from tests.cluster.client import ApiRefused, Kube
from tests.unit.operator.api.test_validation import BAD, GOOD, IMMUTABLE, load

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.yaml"))
# A wrong apiVersion is refused by the URL's version, in the server's words; label errors name the
# labels as a whole (metadata.labels, or ObjectMeta.labels for a value that is not a string).
SERVER_WORDING = {"wrong apiVersion": 'FineTuneJob in version "v1" cannot be handled'}
# The server takes an object's namespace from the URL (these tests post into their own), so the
# rows about a bad metadata.namespace are `kubetune run`'s checks only.
SERVER_BAD = {name: row for name, row in BAD.items() if not row[2].startswith("metadata.namespace")}


def in_namespace(document: dict, namespace: str) -> dict:
    document = copy.deepcopy(document)
    document["metadata"]["namespace"] = namespace
    return document


def create(kube: Kube, document: dict, namespace: str, dry_run: bool = False) -> dict:
    """POST as kubectl does: unknown fields are errors (fieldValidation=Strict), not pruned."""
    plural = KINDS[document["kind"]].plural if document.get("kind") in KINDS else "finetunejobs"
    query = "?fieldValidation=Strict" + ("&dryRun=All" if dry_run else "")
    return kube.request("POST", kube.path(plural, namespace) + query, in_namespace(document, namespace))


def test_the_crds_are_established_with_their_names_and_categories(crds):
    for model in KINDS.values():
        crd = crds.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{model.plural}.kubetune.dev")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True", conditions
        assert "kubetune" in crd["spec"]["names"]["categories"]


def examples(namespace: str) -> list[dict]:
    """Every example document, moved into the test's namespace."""
    return [in_namespace(d, namespace) for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d]


def test_every_example_passes_a_server_dry_run_and_is_applied(crds, namespace):
    for document in examples(namespace):
        create(crds, document, namespace, dry_run=True)
    dry = crds.kubectl_apply(examples(namespace), "--dry-run=server").stdout
    assert dry.count("(server dry run)") == len(examples(namespace))
    assert crds.list("finetunejobs", namespace) == []
    crds.kubectl_apply(examples(namespace))
    names = {(d["kind"], d["metadata"]["name"]) for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d}
    got = crds.kubectl("get", "kubetune", "-n", namespace, "-o", "yaml").stdout
    listed = {(item["kind"], item["metadata"]["name"]) for item in yaml.safe_load(got)["items"]}
    assert listed == names
    # Defaults applied by the server, as the pydantic models have them.
    ftj = crds.get("finetunejobs", namespace, "qwen2-7b-repeater-dpo")
    assert ftj["spec"]["checkpointing"]["keep"] == 3 and ftj["spec"]["hyperparameters"]["maxSteps"] == -1
    evr = crds.get("evalruns", namespace, "qwen2-7b-repeater-eval")
    assert evr["spec"]["engine"]["seed"] == 0


def test_kubectl_get_shows_the_printer_columns(crds, namespace):
    crds.kubectl_apply([in_namespace(load("preferencedataset.yaml"), namespace),
                        in_namespace(load("finetunejob.yaml"), namespace), in_namespace(load("evalrun.yaml"), namespace)])
    for short, columns in (("ftj", ["NAME", "METHOD", "PHASE", "PROGRESS", "LOSS", "AGE"]),
                           ("pds", ["NAME", "KIND", "PHASE", "TRAIN", "TEST", "AGE"]),
                           ("evr", ["NAME", "PHASE", "GATES", "AGE"])):
        header = crds.kubectl("get", short, "-n", namespace).stdout.splitlines()[0].split()
        assert header == columns, (short, header)
    # Columns read status: the operator's phase (its dataset does not exist: Waiting) and a progress
    # written to the status subresource show up.
    crds.wait_phase("finetunejobs", namespace, "qwen2-7b-repeater-dpo", "Waiting", timeout=60)
    crds.patch("finetunejobs", namespace, "qwen2-7b-repeater-dpo",
               {"status": {"progress": {"percent": 42.0, "loss": 0.5}}}, subresource="status")
    row = crds.kubectl("get", "ftj", "qwen2-7b-repeater-dpo", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:5] == ["dpo", "Waiting", "42", "0.5"], row


def test_kubectl_explain_prints_the_descriptions(crds):
    explained = crds.kubectl("explain", "ftj.spec").stdout
    assert "What to train." in explained and "baseModel" in explained
    field = crds.kubectl("explain", "ftj.spec.backoffLimit").stdout
    # One paragraph, as written in the model: no source line breaks in mid-sentence.
    assert "Preemptions (DisruptionTarget) do not count" in " ".join(field.split())
    assert "kubetune.dev" in crds.kubectl("explain", "evr.spec.gates").stdout


@pytest.mark.parametrize("example, mutate, field", SERVER_BAD.values(), ids=SERVER_BAD.keys())
def test_the_server_refuses_a_bad_object_naming_the_field(crds, namespace, example, mutate, field, request):
    document = load(example)
    mutate(document)
    with pytest.raises(ApiRefused) as refused:
        create(crds, document, namespace, dry_run=True)
    wording = SERVER_WORDING.get(request.node.callspec.id, "labels" if field.startswith("metadata.labels") else field)
    assert refused.value.status in (400, 422), refused.value
    assert wording in refused.value.message, refused.value.message


@pytest.mark.parametrize("example, mutate", GOOD.values(), ids=GOOD.keys())
def test_the_server_accepts_what_kubetune_run_accepts(crds, namespace, example, mutate):
    document = load(example)
    mutate(document)
    create(crds, document, namespace, dry_run=True)


@pytest.mark.parametrize("example, mutate, field", IMMUTABLE.values(), ids=IMMUTABLE.keys())
def test_the_server_refuses_changing_an_immutable_field(crds, namespace, example, mutate, field):
    created = create(crds, load(example), namespace)
    plural, name = KINDS[created["kind"]].plural, created["metadata"]["name"]
    for _ in range(10):
        # The operator writes the status meanwhile: a PUT of a stale resourceVersion is a 409.
        changed = crds.get(plural, namespace, name)
        mutate(changed)
        try:
            crds.request("PUT", crds.path(plural, namespace, name), changed)
        except ApiRefused as refused:
            if refused.status == 409:
                continue
            assert refused.status == 422, refused
            assert field in refused.message and "immutable" in refused.message, refused.message
            return
        raise AssertionError("the server accepted the change")
    raise AssertionError("ten conflicts in a row")


def test_suspend_may_change(crds, namespace):
    created = create(crds, load("finetunejob.yaml"), namespace)
    patched = crds.patch("finetunejobs", namespace, created["metadata"]["name"], {"spec": {"suspend": True}})
    assert patched["spec"]["suspend"] is True
