"""`kubetune-trainer train --config FILE`: a FineTuneJob's pods run this.

With `--nproc-per-node`/`--nnodes` it starts its own workers through torchrun's launcher and exits
with the code of the worker that failed first. Plain `torchrun -m kubetune_trainer train` works too,
but torchrun turns every worker failure into exit 1, so the operator could not tell a bad config
(fail at once) from a crash (retry).
"""

from __future__ import annotations

import argparse
import logging
import os

from kubetune_trainer.errors import ConfigError, KubetuneError
from kubetune_trainer.exitcodes import REASONS, ExitCode
from kubetune_trainer.progress import write_termination_summary
from kubetune_trainer.recipes.config import load_config

log = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT = 300


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model (SFT or DPO, LoRA or full) from a TrainConfig file",
        description="Fine-tune a model from a TrainConfig (YAML or JSON; see docs/training.md).",
    )
    parser.add_argument("--config", required=True, help="TrainConfig file (YAML or JSON)")
    launch = parser.add_argument_group(
        "distributed launch", "start the workers here instead of wrapping this command in torchrun"
    )
    launch.add_argument("--nnodes", type=int, default=1, help="nodes taking part (default 1)")
    launch.add_argument("--nproc-per-node", type=int, default=1, help="worker processes (GPUs) per node")
    launch.add_argument(
        "--node-rank",
        type=int,
        default=None,
        help="this node's rank (default: $JOB_COMPLETION_INDEX, else 0)",
    )
    launch.add_argument("--master-addr", default=None, help="rendezvous host (default: $MASTER_ADDR)")
    launch.add_argument(
        "--master-port", type=int, default=None, help="rendezvous port (default: $MASTER_PORT or 29500)"
    )
    launch.add_argument(
        "--shutdown-timeout",
        type=int,
        default=int(os.environ.get("KUBETUNE_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT)),
        help="seconds the workers get after SIGTERM to write their checkpoint (default 300)",
    )
    parser.set_defaults(func=run_train)


def _failure_summary(code: int, message: str) -> None:
    write_termination_summary(
        {"kind": "train", "error": message, "reason": REASONS.get(code, "InternalError")}
    )


def run_train(args: argparse.Namespace) -> int:
    launching = args.nnodes * args.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ
    try:
        load_config(args.config)  # a bad config fails here once, not in every worker
        if args.nnodes < 1 or args.nproc_per_node < 1:
            raise ConfigError("--nnodes and --nproc-per-node must be >= 1")
        torchrun = torchrun_args(args) if launching else []
    except KubetuneError as exc:
        _failure_summary(int(exc.exit_code), exc.message)
        raise
    if launching:
        return launch(torchrun)
    return work(args.config)


def work(config_path: str) -> int:
    from kubetune_trainer.recipes import train
    from kubetune_trainer.recipes.distributed import World

    is_main = World.from_env().is_main
    try:
        summary = train(load_config(config_path))
    except KubetuneError as exc:
        if is_main:
            _failure_summary(int(exc.exit_code), exc.message)
        raise
    except Exception as exc:
        if is_main:
            _failure_summary(int(ExitCode.INTERNAL), f"{type(exc).__name__}: {exc}")
        raise
    if is_main:
        write_termination_summary(summary)
        print(
            f"trained {summary['artifact']['type']} at {summary['artifact']['uri']} in {summary['steps']} steps"
        )
    return 0


def torchrun_args(args: argparse.Namespace) -> list[str]:
    torchrun = [
        f"--nnodes={args.nnodes}",
        f"--nproc-per-node={args.nproc_per_node}",
        f"--shutdown-timeout={args.shutdown_timeout}",
    ]
    if args.nnodes == 1:
        torchrun.append("--standalone")
    else:
        node_rank = (
            args.node_rank if args.node_rank is not None else int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
        )
        master_addr = args.master_addr or os.environ.get("MASTER_ADDR")
        if not master_addr:
            raise ConfigError("--master-addr (or $MASTER_ADDR) is needed with --nnodes > 1")
        master_port = args.master_port or int(os.environ.get("MASTER_PORT", "29500"))
        torchrun += [
            f"--node-rank={node_rank}",
            f"--master-addr={master_addr}",
            f"--master-port={master_port}",
        ]
    return [*torchrun, "-m", "kubetune_trainer", "train", "--config", args.config]


def launch(torchrun: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(torchrun))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        log.error("worker rank %s failed first, with exit code %s", rank, failure.exitcode)
        if failure.exitcode > 0:
            # Rank 0 wrote its own summary; another rank's reason reaches the pod only from here.
            if rank != 0:
                _failure_summary(failure.exitcode, f"worker rank {rank} exited with code {failure.exitcode}")
            return failure.exitcode
        # A signal (the kernel's OOM killer, say): not one of our codes, and the worker wrote nothing.
        _failure_summary(
            int(ExitCode.INTERNAL), f"worker rank {rank} was killed by signal {-failure.exitcode}"
        )
        return int(ExitCode.INTERNAL)
    except SignalException as exc:
        log.warning("%s: the workers were asked to checkpoint and stop", exc)
        return int(ExitCode.PREEMPTED)
    return 0
