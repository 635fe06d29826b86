"""`kubetune render FILE...`: print the manifests the operator would create for these resources."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render", help="print the Jobs, Services and ConfigMaps the operator would create for FILE..."
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML with kubetune resources")
    parser.add_argument(
        "--artifact-root",
        type=checked_root,
        help="artifact root the operator is configured with (default: $KUBETUNE_ARTIFACT_ROOT or s3://kubetune-artifacts)",
    )
    parser.set_defaults(func=run)


def checked_root(value: str) -> str:
    from kubetune_operator.builders.settings import artifact_root_problem

    problem = artifact_root_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from kubetune_operator.builders import graph
    from kubetune_operator.builders.settings import OperatorSettings
    from kubetune_operator.cli.documents import load_documents, validate_all

    settings = OperatorSettings.from_env()
    if args.artifact_root:
        settings = replace(settings, artifact_root=args.artifact_root)
    resources = validate_all(load_documents(args.files))
    manifests = graph.render(resources, settings)
    print(yaml.safe_dump_all(manifests, sort_keys=False, allow_unicode=True), end="")
    return 0
