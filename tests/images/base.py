"""The local base image: Debian bookworm made by debootstrap from Debian's archive.

No container registry is reachable here, so `python:3.11-slim-bookworm` cannot be pulled. This
base stands in for it: the same Debian release, a `python3` of the same minor version with venv,
pip's wheels and the headers (Triton and DeepSpeed compile against them at run time), and apt
sources with updates and security, so the Dockerfiles' `apt-get install` works unchanged. It is
made once per machine, kept as `localhost/kubetune/base:bookworm-<key>` (the key hashes what
decides its contents) and made again only when those change.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.images.buildah import Buildah, ToolError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python3-dev", "python-is-python3", "ca-certificates")
SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# pip's vendored certificate list is not the system's: trust what the system trusts, as pip does
# from 24.2 on (truststore). Builds bind this machine's CA bundle over the system's.
PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
# What python:3.11-slim sets that the Dockerfiles rely on.
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
# Left out of the image, as Debian's slim images leave them out.
PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
         "dev", "proc", "sys")


def key() -> str:
    digest = hashlib.sha256()
    digest.update(repr((SUITE, MIRROR, PACKAGES, SOURCES, PIP_CONF, sorted(ENV.items()), PRUNE)).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:12]


def name() -> str:
    return f"localhost/kubetune/base:{SUITE}-{key()}"


def ensure(buildah: Buildah, log: Path) -> str:
    """The base image's name, made first when this machine has none of this key."""
    image = name()
    if buildah.image_id(image):
        return image
    work = Path(tempfile.mkdtemp(prefix="base-", dir=buildah.root))
    try:
        rootfs = work / "rootfs"
        with open(log, "ab") as out:
            done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                                   str(rootfs), MIRROR], stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode:
            raise ToolError(f"debootstrap failed ({done.returncode}); see {log}")
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES)
        (rootfs / "etc/pip.conf").write_text(PIP_CONF)
        for path in PRUNE:
            shutil.rmtree(rootfs / path, ignore_errors=True)
            (rootfs / path).mkdir(parents=True)
        tar = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        shutil.rmtree(rootfs)
        container = buildah.run("from", "scratch").strip()
        try:
            buildah.run("add", container, str(tar), "/")
            buildah.run("config", *(f"--env={k}={v}" for k, v in ENV.items()), "--cmd", "python3", container)
            buildah.run("commit", "--rm", container, image, log=log)
        except BaseException:
            buildah.remove_container(container)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image
