"""The trainer image: its entrypoint, user, size and OCI export; the CUDA its torch was built for
is the one docs/install.md states; and `kubetune-trainer data prepare` on a sample, run as the
operator's data pod runs (read-only root, its scratch mounts, env and user)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.images.common import (
    job_pod,
    rendered,
    test_entrypoint_answers_version_and_help,
    test_exports_as_an_oci_archive_that_skopeo_reads,
    test_size_is_within_its_limit,
    test_the_image_runs_as_the_charts_non_root_user,
)
from tests.images.harness import InImage

IMAGE = "trainer"
INSTALL_DOC = Path(__file__).resolve().parents[2] / "docs" / "install.md"
DATASET = """\
apiVersion: kubetune.dev/v1alpha1
kind: PreferenceDataset
metadata: {name: image-check, namespace: images}
spec:
  kind: preference
  format: llamafactory
  llamafactory:
    datasetInfo: file:///data/llamafactory/dataset_info.json
    dataset: generalized_dpo_preference_dataset
  split: {testFraction: 0.2, seed: 1}
"""

__all__ = ["test_entrypoint_answers_version_and_help", "test_exports_as_an_oci_archive_that_skopeo_reads",
           "test_size_is_within_its_limit", "test_the_image_runs_as_the_charts_non_root_user"]


def test_data_prepare_runs_in_the_operators_data_pod(in_image: InImage, tmp_path: Path, sample_data: Path):
    document = tmp_path / "dataset.yaml"
    document.write_text(DATASET)
    pod, container = job_pod(rendered(document, artifact_root="/scratch/artifacts"), "preferencedataset")
    assert container["image"] == in_image.built.spec.reference
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    result, log = in_image.pod(container["command"], container, pod, binds={"/data": sample_data})
    assert result.code == 0, log
    summary = json.loads(result.message)
    assert summary["kind"] == "dataset" and summary["counts"]["train"] > 0 and summary["counts"]["test"] > 0, summary
    scratch = next(p for p in (in_image.scratch).rglob("preferencedatasets/image-check") if p.is_dir())
    assert {p.name for p in scratch.iterdir()} >= {"train.jsonl", "test.jsonl", "manifest.json"}


def test_torch_is_the_cuda_build_docs_install_states(in_image: InImage):
    probe = in_image.run("python3", "-c", "import json, torch; print(json.dumps([torch.__version__, "
                         "torch.version.cuda, torch._C._cuda_getArchFlags().split()]))")
    assert probe.returncode == 0, probe.stderr
    version, cuda, arches = json.loads(probe.stdout.splitlines()[-1])
    lowest = min(int(a.removeprefix("sm_")) for a in arches)
    doc = INSTALL_DOC.read_text(encoding="utf-8")
    assert version.startswith("2.13.0") and f"CUDA {cuda}" in doc, (version, cuda)
    assert re.search(rf"compute capability {lowest // 10}\.{lowest % 10}\b", doc), (arches, "docs/install.md")
