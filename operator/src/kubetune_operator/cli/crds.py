"""`kubetune crds`: write (or check) the CRDs generated from the API models."""

from __future__ import annotations

import argparse
from pathlib import Path

from kubetune_operator.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crds", help="write crds/*.yaml and the chart's copy from the API models"
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    parser.add_argument("--stdout", action="store_true", help="print the CRDs instead of writing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kubetune_operator.api import KINDS
    from kubetune_operator.api.crd import drift, render, write

    if args.stdout:
        print("---\n".join(render(model) for model in KINDS.values()), end="")
        return 0
    root = args.root.resolve()
    if not (root / "charts" / "kubetune").is_dir():
        raise UserError(f"{root}: not the kubetune repository root (no charts/kubetune); pass --root")
    if args.check:
        stale = drift(root)
        for path in stale:
            print(f"differs from the models: {path.relative_to(root)}")
        return 1 if stale else 0
    for path in write(root):
        print(f"wrote {path.relative_to(root)}")
    return 0
