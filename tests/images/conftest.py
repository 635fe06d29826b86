"""Fixtures of the image checks: each image built (or found built) and run for real.

The checks build images (minutes and gigabytes the first time), so they run only when asked:
`KUBETUNE_IMAGE_TESTS` names the images to check (`operator`, `trainer`, `eval`, or `all`;
`make images-test` sets `all`). Elsewhere they skip, saying so.

A module checks one image (its `IMAGE`); `in_image` gives it that image's container
(tests/images/harness.py). At the end of the session the sizes go into a table, printed and
written to `<cache>/sizes.md`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.node.image import ImageRootfs, container_name
from tests.cluster.node.runtime import HostProcess
from tests.images.build import IMAGES, Builder
from tests.images.buildah import Buildah, missing_tools
from tests.images.harness import SIZES, InImage, wanted


@pytest.fixture(scope="module")
def in_image(request) -> Iterator[InImage]:
    name = request.module.IMAGE
    if name not in wanted():
        pytest.skip(f"builds and runs the {name} image (minutes, gigabytes): make images-test, or "
                    f"KUBETUNE_IMAGE_TESTS={name}")
    if missing_tools():
        pytest.fail(f"missing Debian packages {', '.join(missing_tools())}: make images-deps installs them")
    if os.geteuid() != 0:
        pytest.fail("buildah with vfs storage and chroot isolation runs as root here")
    buildah = Buildah()
    built = {b.spec.name: b for b in Builder(buildah, say=lambda _: None).ensure([name])}[name]
    reference = built.spec.reference
    runtime = ImageRootfs([reference], HostProcess(), buildah)
    scratch = Path(tempfile.mkdtemp(prefix=f"images-{name}-"))
    try:
        yield InImage(built, runtime.roots[reference][1], runtime, buildah, container_name(reference), scratch)
    finally:
        # The operator's container stays for the test cluster; the others are gigabytes.
        runtime.close(remove=name != "operator")
        shutil.rmtree(scratch, ignore_errors=True)


def pytest_terminal_summary(terminalreporter) -> None:
    if not SIZES:
        return
    lines = ["| image | size | compressed (pulled) | layers | what dominates it |", "|---|---|---|---|---|"]
    for name in IMAGES:
        if "size" in SIZES.get(name, {}):
            row = SIZES[name]
            compressed = f"{row['compressed'] / 1e9:.2f} GB" if "compressed" in row else "(not exported)"
            lines.append(f"| {row['reference']} | {row['size'] / 1e9:.2f} GB | {compressed} | "
                         f"{row.get('layers', '?')} | {row.get('dominant', '?')} |")
    table = "\n".join(lines)
    terminalreporter.write_sep("=", "image sizes")
    terminalreporter.write_line(table)
    (Buildah().root / "sizes.md").write_text(table + "\n")
