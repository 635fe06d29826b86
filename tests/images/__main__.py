"""python -m tests.images build [operator|trainer|eval ...] | clean

build  the images named (default all three, and what they are built on) into the per-machine
       buildah storage, each only when its Dockerfile, sources or base changed
clean  remove that storage, the local base and every image in it
"""

from __future__ import annotations

import argparse
import shutil
import sys

from tests.images.build import IMAGES, Builder
from tests.images.buildah import Buildah, ToolError, missing_tools


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.images", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "clean"])
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=f"{', '.join(IMAGES)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.images) - set(IMAGES))
    if unknown:
        parser.error(f"no image {', '.join(unknown)} (there are {', '.join(IMAGES)})")
    buildah = Buildah()
    if args.command == "clean":
        # vfs leaves files only root may remove through buildah's own bookkeeping: ask it first.
        buildah.run("rm", "--all", check=False)
        buildah.run("rmi", "--all", "--force", check=False)
        shutil.rmtree(buildah.root, ignore_errors=True)
        print(f"removed {buildah.root}")
        return 0
    if missing_tools():
        print(f"missing Debian packages: {' '.join(missing_tools())} (make images-deps installs them)", file=sys.stderr)
        return 1
    try:
        Builder(buildah, say=lambda line: print(line, flush=True)).ensure(args.images or None)
    except ToolError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
