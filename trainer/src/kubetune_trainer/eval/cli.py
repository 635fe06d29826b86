"""`kubetune-trainer eval --config FILE`: the command an EvalRun's pod runs.

Exit status 0 whenever the evaluation ran, gates passed or not: the operator reads the result
(termination summary, summary.json) and sets its conditions from the gates.
"""

from __future__ import annotations

import argparse

from kubetune_trainer.errors import KubetuneError
from kubetune_trainer.exitcodes import REASONS, ExitCode
from kubetune_trainer.progress import ProgressReporter, write_termination_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="replay a test set through candidate models, score them against a baseline, gate, report",
        description="Replay a test set through base models, adapters and merged models; score every "
        "candidate with bootstrap confidence intervals against the baseline; evaluate gates; write "
        "predictions, CSV/XLSX, plots and an HTML report to the output URI.",
    )
    parser.add_argument("--config", required=True, help="EvalConfig file (YAML or JSON)")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from kubetune_trainer.eval.config import load_config
    from kubetune_trainer.eval.runner import run_eval, termination_summary

    try:
        config = load_config(args.config)
        summary = run_eval(config, reporter=ProgressReporter.from_env())
    except KubetuneError as exc:
        write_termination_summary({"kind": "eval", "error": exc.message, "reason": REASONS[exc.exit_code]})
        raise
    except Exception as exc:
        write_termination_summary(
            {"kind": "eval", "error": str(exc) or type(exc).__name__, "reason": REASONS[ExitCode.INTERNAL]}
        )
        raise
    write_termination_summary(termination_summary(summary))
    for gate in summary["gates"]:
        print(f"gate {'passed' if gate['passed'] else 'FAILED'}: {gate['name']} (value {gate['value']})")
    print(f"report: {summary['report']}")
    return 0
