"""`kubetune-trainer data prepare`: the command a PreferenceDataset's pod runs (docs/data.md)."""

from __future__ import annotations

import argparse

from kubetune_trainer import storage
from kubetune_trainer.data import options as prepare_options
from kubetune_trainer.errors import KubetuneError
from kubetune_trainer.exitcodes import REASONS, ExitCode
from kubetune_trainer.progress import write_termination_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="dataset preparation")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    prepare = commands.add_parser(
        "prepare",
        help="read, validate, split and fingerprint a dataset into canonical TRL JSONL",
        description="Read every --source, convert rows to TRL conversational records, drop bad rows "
        "with a reason, split train/test and publish train.jsonl, test.jsonl and manifest.json.",
    )
    prepare_options.add_arguments(prepare)
    prepare.set_defaults(func=run_prepare)


# The termination message carries the start of the manifest's warnings; manifest.json has them all.
MAX_WARNINGS = 5
WARNING_LENGTH = 300


def clip_warnings(warnings: list[str]) -> list[str]:
    """At most MAX_WARNINGS sentences of at most WARNING_LENGTH characters, the last one saying how
    many more there are when they do not all fit."""
    clipped = [w if len(w) <= WARNING_LENGTH else w[: WARNING_LENGTH - 1] + "…" for w in warnings]
    if len(clipped) > MAX_WARNINGS:
        more = len(clipped) - MAX_WARNINGS + 1
        clipped = [*clipped[: MAX_WARNINGS - 1], f"… and {more} more warnings in manifest.json"]
    return clipped


def summary(manifest: dict, output: str) -> dict:
    """The termination message: the dataset shape of docs/contracts.md §5."""
    return {
        "kind": "dataset",
        "output": storage.parse(output).uri,
        "format": manifest["format"],
        "formatEvidence": manifest["format_evidence"],
        "fingerprint": manifest["fingerprint"],
        "counts": {"train": manifest["counts"]["train"], "test": manifest["counts"]["test"]},
        "dropped": manifest["dropped"],
        "strata": manifest["strata"],
        "lengths": {key: manifest["lengths"][key] for key in ("prompt", "answer")},
        "warnings": clip_warnings(manifest["warnings"]),
        # Dropped from the end first when the message would not fit in 4 KiB: warnings go last.
        "_optional": ["warnings", "dropped", "lengths", "strata"],
    }


def run_prepare(args: argparse.Namespace) -> int:
    from kubetune_trainer.data.prepare import prepare

    try:
        options = prepare_options.from_args(args)
        manifest = prepare(options)
    except KubetuneError as exc:
        write_termination_summary({"kind": "dataset", "error": exc.message, "reason": REASONS[exc.exit_code]})
        raise
    except Exception as exc:
        write_termination_summary(
            {"kind": "dataset", "error": str(exc), "reason": REASONS[ExitCode.INTERNAL]}
        )
        raise
    write_termination_summary(summary(manifest, options.output))
    counts = manifest["counts"]
    print(
        f"published {storage.parse(options.output).uri}: {counts['train']} train, {counts['test']} test, "
        f"{counts['dropped']} dropped; format {manifest['format']}; {manifest['fingerprint']}"
    )
    for warning in manifest["warnings"]:
        print(f"warning: {warning}")
    return 0
