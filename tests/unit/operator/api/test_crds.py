"""The committed CRDs are exactly what the models generate, and they are good CRDs."""

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubetune_operator.api import KINDS
from kubetune_operator.api.crd import ARGOCD_HEALTH, crd, drift, expected_files, openapi_schema
from kubetune_operator.api.schema import unwrap, walk

ROOT = Path(__file__).resolve().parents[4]


def test_committed_crds_match_the_models():
    stale = drift(ROOT)
    assert not stale, f"run `kubetune crds`: {[str(p.relative_to(ROOT)) for p in stale]} differ from the models"


def fresh_root(tmp_path: Path) -> None:
    """A root with what `kubetune crds` reads: the chart folder and the hand-written Argo CD health check."""
    (tmp_path / ARGOCD_HEALTH).parent.mkdir(parents=True)
    shutil.copy(ROOT / ARGOCD_HEALTH, tmp_path / ARGOCD_HEALTH)


def test_kubetune_crds_regenerates_byte_identical_files(tmp_path):
    fresh_root(tmp_path)
    kubetune = Path(sys.executable).with_name("kubetune")
    for _ in range(2):
        subprocess.run([str(kubetune), "crds", "--root", str(tmp_path)], check=True, capture_output=True)
    for path, text in expected_files(ROOT).items():
        generated = tmp_path / path.relative_to(ROOT)
        assert generated.read_bytes() == text.encode()
        assert generated.read_bytes() == path.read_bytes()


def test_drift_is_detected(tmp_path):
    fresh_root(tmp_path)
    kubetune = Path(sys.executable).with_name("kubetune")
    subprocess.run([str(kubetune), "crds", "--root", str(tmp_path)], check=True, capture_output=True)
    edited = tmp_path / "crds" / "kubetune.dev_finetunejobs.yaml"
    edited.write_text(edited.read_text().replace("Peak learning rate.", "Learning rate."))
    result = subprocess.run(
        [str(kubetune), "crds", "--check", "--root", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "crds/kubetune.dev_finetunejobs.yaml" in result.stdout


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_property_has_a_description(kind):
    schema = openapi_schema(KINDS[kind])
    missing = [
        f"{path}.{name}" if path else name
        for path, node in walk(schema)
        for name, child in node.get("properties", {}).items()
        if not child.get("description")
    ]
    # kube-apiserver refuses a CRD whose metadata schema holds anything but `type: object`.
    assert missing == ["metadata"]
    assert schema["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_descriptions_are_flowing_text(kind):
    """`kubectl explain` wraps descriptions itself: a docstring's line break would show mid-sentence."""
    broken = [
        f"{path}.{name}"
        for path, node in walk(openapi_schema(KINDS[kind]))
        for name, child in node.get("properties", {}).items()
        if "\n" in child.get("description", "").replace("\n\n", "")
    ]
    assert not broken


def test_a_docstring_becomes_paragraphs_of_flowing_text():
    assert unwrap("Built-in methods (sft,\n    dpo), so methods such\n    as orpo.\n\n    Second paragraph.\n") == (
        "Built-in methods (sft, dpo), so methods such as orpo.\n\nSecond paragraph."
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_is_structural(kind):
    """Every node typed; no refs, unions, or keywords the API server rejects."""
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "patternProperties", "propertyNames", "title", "const"}
    for path, node in walk(openapi_schema(KINDS[kind])):
        assert "type" in node, path
        assert not forbidden & set(node), (path, forbidden & set(node))
        assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node or path.startswith("status") or path in {"apiVersion", "kind"}, (
                f"{path}: unbounded strings make CEL cost estimates fail"
            )
        if node["type"] == "array":
            assert "maxItems" in node, f"{path}: unbounded lists make CEL cost estimates fail"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_rule_field_path_names_a_field_below_its_rule(kind):
    """The API server refuses a CRD whose rule's fieldPath does not resolve in the schema."""
    unresolved = []
    for path, node in walk(openapi_schema(KINDS[kind])):
        for rule in node.get("x-kubernetes-validations", []):
            target = node
            for part in rule.get("fieldPath", "").split(".")[1:]:
                target = target.get("properties", {}).get(part)
                if target is None:
                    unresolved.append(f"{path or '<root>'}: {rule['fieldPath']}")
                    break
    assert not unresolved


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_validates_against_the_kubernetes_schema(kind):
    kubernetes_validate.validate(crd(KINDS[kind]), "1.33", strict=True)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_has_the_api_surface_users_rely_on(kind):
    document = yaml.safe_load((ROOT / "crds" / f"kubetune.dev_{KINDS[kind].plural}.yaml").read_text())
    spec = document["spec"]
    assert spec["group"] == "kubetune.dev"
    assert spec["names"]["categories"] == ["kubetune"]
    assert spec["names"]["shortNames"] == {"PreferenceDataset": ["pds"], "FineTuneJob": ["ftj"], "EvalRun": ["evr"]}[kind]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Phase" in columns and columns[-1] == "Age"


def test_immutability_rules_cover_what_a_running_job_depends_on():
    rules = openapi_schema(KINDS["FineTuneJob"])["properties"]["spec"]["x-kubernetes-validations"]
    transition_fields = {r["fieldPath"] for r in rules if "oldSelf" in r["rule"]}
    assert {".baseModel", ".dataset", ".method", ".startFrom", ".peft"} <= transition_fields
