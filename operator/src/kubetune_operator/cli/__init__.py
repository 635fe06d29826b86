"""`kubetune`: the user's command line (CRDs, render, local runs, promotion, the operator itself).

Each command module exposes `register(subparsers)` and sets `func` on its parser. User errors
print one message naming the file, document or field, and exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from kubetune_operator import __version__
from kubetune_operator.errors import UserError

# Module paths, in the order their commands appear in --help.
COMMANDS = [
    "kubetune_operator.cli.crds",
    "kubetune_operator.cli.render",
    "kubetune_operator.cli.run",
    "kubetune_operator.cli.promote",
    "kubetune_operator.cli.operator",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description="kubetune: fine-tune and evaluate LLMs on Kubernetes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING))
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"kubetune {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        # 128 + the signal, as a shell reports it: SIGINT (Ctrl-C) or a stop signal a command turned into this.
        return 128 + getattr(exc, "signum", 2)


if __name__ == "__main__":
    sys.exit(main())
