"""Checks every image gets; each test module imports them, and `in_image` gives them its image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from kubetune_operator.builders.workload import POD_SECURITY
from tests.images.build import app_version
from tests.images.harness import SIZES, InImage
from tests.unit.charts.chart_render import CHART, manifests, render_templates

# Uncompressed, as the image store holds them: a change that doubles an image fails here first.
KUBETUNE = str(Path(sys.executable).with_name("kubetune"))  # the sources' CLI, from the venv
SIZE_LIMITS = {"operator": 0.6e9, "trainer": 7.5e9, "eval": 11.5e9}


def chart_objects() -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        return manifests(render_templates(chart, {}))


def operator_deployment() -> tuple[dict, dict]:
    """The chart's operator Deployment: (its pod spec, its container)."""
    deployment = next(o for o in chart_objects() if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_entrypoint_answers_version_and_help(in_image: InImage):
    entrypoint = in_image.image.entrypoint
    assert [os.path.basename(p) for p in entrypoint] in (["kubetune"], ["kubetune-trainer"]), entrypoint
    version = in_image.run(*entrypoint, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"{entrypoint[0]} {app_version()}"
    usage = in_image.run(*entrypoint, "--help")
    assert usage.returncode == 0 and usage.stdout.startswith(f"usage: {entrypoint[0]}"), usage.stdout + usage.stderr


def test_the_image_runs_as_the_charts_non_root_user(in_image: InImage):
    """The chart's Deployment and the operator's pods set runAsUser; the image's USER must be the
    same uid, or files the image owns (and `runAsNonRoot` without a uid) would disagree."""
    uid, gid = in_image.image.uid_gid
    assert uid != 0 and in_image.image.user == f"{uid}:{gid}", in_image.image.user
    pod, _ = operator_deployment()
    chart = (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"])
    assert (uid, gid) == chart == (POD_SECURITY["runAsUser"], POD_SECURITY["runAsGroup"])
    whoami = in_image.run("id", "-u")
    assert whoami.stdout.strip() == str(uid), whoami.stdout + whoami.stderr


def test_size_is_within_its_limit(in_image: InImage):
    name = in_image.built.spec.name
    size = in_image.image.size
    root = in_image.runtime.roots[in_image.built.spec.reference][0]
    SIZES.setdefault(name, {}).update(reference=in_image.built.spec.reference, size=size, dominant=dominant(root))
    assert size <= SIZE_LIMITS[name], f"{name}: {size / 1e9:.2f} GB, over {SIZE_LIMITS[name] / 1e9:.1f} GB"


@pytest.mark.timeout(1800)  # gzip of 10 GB (eval) on two shared cores
def test_exports_as_an_oci_archive_that_skopeo_reads(in_image: InImage, tmp_path: Path):
    """The release path without a registry here: `buildah push` to an OCI archive, which
    `skopeo copy oci-archive:... docker://REGISTRY/...` would publish."""
    archive = tmp_path / f"{in_image.built.spec.name}.tar"
    reference = in_image.built.spec.reference
    in_image.buildah.run("push", reference, f"oci-archive:{archive}:{reference}", log=tmp_path / "push.log",
                         scratch=tmp_path)
    try:
        inspected = json.loads(in_image.buildah.run("inspect", f"oci-archive:{archive}", tool=["skopeo"]))
        config = json.loads(in_image.buildah.run("inspect", "--config", f"oci-archive:{archive}", tool=["skopeo"]))
        manifest = json.loads(in_image.buildah.run("inspect", "--raw", f"oci-archive:{archive}", tool=["skopeo"]))
    finally:
        archive.unlink(missing_ok=True)
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")
    assert config["config"]["User"] == in_image.image.user
    assert config["config"]["Entrypoint"] == in_image.image.entrypoint
    stored = json.loads(in_image.buildah.run("inspect", "--type", "image", reference))
    assert len(inspected["Layers"]) == len(stored["OCIv1"]["rootfs"]["diff_ids"])
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in manifest["layers"]), manifest["layers"]
    SIZES.setdefault(in_image.built.spec.name, {}).update(
        compressed=sum(layer["size"] for layer in manifest["layers"]), layers=len(manifest["layers"]))


def rendered(*documents: Path, artifact_root: str) -> list[dict]:
    """What the operator would create for these documents (`kubetune render`, from the sources)."""
    out = subprocess.run([KUBETUNE, "render", "--artifact-root", artifact_root, *map(str, documents)],
                         capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def job_pod(objects: list[dict], kind_label: str) -> tuple[dict, dict]:
    """(pod spec, container) of the rendered Job whose pods carry kubetune.dev/kind=kind_label."""
    for obj in objects:
        template = obj.get("spec", {}).get("template", {})
        if obj["kind"] == "Job" and template.get("metadata", {}).get("labels", {}).get("kubetune.dev/kind") == kind_label:
            return template["spec"], template["spec"]["containers"][0]
    raise AssertionError(f"no Job for {kind_label} in {[o['kind'] + '/' + o['metadata']['name'] for o in objects]}")


def dominant(root: Path, top: int = 4) -> str:
    """The largest parts of a root filesystem, `name 1.20 GB, ...`: each package of a
    site-packages on its own (torch, nvidia, ...), everything else by its top folder (/usr, ...)."""
    sizes: Counter[str] = Counter()
    seen: set[tuple[int, int]] = set()
    for folder, _, files in os.walk(root):
        parts = Path(folder).relative_to(root).parts
        if "site-packages" in parts[:-1]:
            unit = _package(parts[parts.index("site-packages") + 1])
        else:
            unit = f"/{parts[0]}" if parts else "/"
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                sizes[unit] += stat.st_size
    return ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in sizes.most_common(top))


def _package(entry: str) -> str:
    """A site-packages folder's package: `torch`; a dist-info folder counts with its package."""
    return entry.split("-", 1)[0].lower() if entry.endswith(".dist-info") else entry
