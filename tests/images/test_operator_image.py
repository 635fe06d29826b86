"""The operator image: its entrypoint, user, size and OCI export, and `kubetune render` run as the
chart's Deployment runs the operator (read-only root, its /tmp emptyDir, its user)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.images.common import (
    KUBETUNE,
    operator_deployment,
    test_entrypoint_answers_version_and_help,
    test_exports_as_an_oci_archive_that_skopeo_reads,
    test_size_is_within_its_limit,
    test_the_image_runs_as_the_charts_non_root_user,
)
from tests.images.harness import InImage

IMAGE = "operator"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

__all__ = ["test_entrypoint_answers_version_and_help", "test_exports_as_an_oci_archive_that_skopeo_reads",
           "test_size_is_within_its_limit", "test_the_image_runs_as_the_charts_non_root_user"]


def test_render_in_the_charts_pod_matches_the_sources(in_image: InImage):
    """The manifests the image's operator would create, under the chart's env, are the ones the sources render."""
    pod, container = operator_deployment()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    documents = sorted(p.name for p in (EXAMPLES / "pipeline").glob("*.yaml"))
    argv = ["kubetune", "render", "--artifact-root", "s3://bucket/kubetune", *(f"/examples/{d}" for d in documents)]
    result, log = in_image.pod(argv, container, pod, binds={"/examples": EXAMPLES / "pipeline"})
    assert result.code == 0, log
    chart_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    expected = subprocess.run([KUBETUNE, *argv[1:4], *(str(EXAMPLES / "pipeline" / d) for d in documents)],
                              capture_output=True, text=True, check=True, env={**os.environ, **chart_env}).stdout
    assert log == expected


def test_the_root_filesystem_is_read_only_and_tmp_is_not(in_image: InImage):
    pod, container = operator_deployment()
    script = ("import pathlib\n"
              "pathlib.Path('/tmp/ok').write_text('x')\n"
              "try:\n    pathlib.Path('/opt/kubetune/x').write_text('x')\n"
              "except OSError as exc:\n    print(exc.strerror)\n")
    result, log = in_image.pod(["python3", "-c", script], container, pod)
    assert (result.code, log.strip()) == (0, "Read-only file system")
