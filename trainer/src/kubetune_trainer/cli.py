"""`kubetune-trainer`: the commands that pods (and `kubetune run`) execute.

Each command module exposes `register(subparsers)` and sets `func` on its parser. Errors a user
can act on print one clear message and exit with the code the operator maps to a condition
reason (kubetune_trainer.exitcodes); nothing a user feeds in ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

from kubetune_trainer import __version__, redact
from kubetune_trainer.errors import KubetuneError
from kubetune_trainer.exitcodes import ExitCode

# Module paths, in the order their commands appear in --help.
COMMANDS = [
    "kubetune_trainer.data.cli",
    "kubetune_trainer.models.cli",
    "kubetune_trainer.recipes.cli",
    "kubetune_trainer.eval.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetune-trainer",
        description="kubetune data plane: prepare data, train, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default=os.environ.get("KUBETUNE_LOG_LEVEL", "INFO"), help="logging level (default INFO)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


# Pods get these pointing into an empty scratch volume (the root filesystem is read-only); libraries
# expect them to exist.
SCRATCH_ENV = ("KUBETUNE_CACHE_DIR", "HF_HOME", "TMPDIR", "HOME", "XDG_CACHE_HOME")


def make_scratch_dirs() -> None:
    for name in SCRATCH_ENV:
        if os.environ.get(name):
            # A directory that cannot be made is reported by whatever needs it, with its own context.
            with contextlib.suppress(OSError):
                os.makedirs(os.environ[name], exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    make_scratch_dirs()
    parser = build_parser()
    args = parser.parse_args(argv)
    redact.install(
        getattr(logging, str(args.log_level).upper(), logging.INFO), "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # bitsandbytes warns at import, on every CPU with AVX512-BF16 (GPU nodes too), that it could not
    # fetch an optional kernel from the Hugging Face hub; its plain kernels work, and pods never
    # fetch code from a hub.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except KubetuneError as exc:
        print(f"kubetune-trainer {args.command}: error: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.PREEMPTED)


if __name__ == "__main__":
    sys.exit(main())
