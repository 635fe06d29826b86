"""The options of `data prepare`, checked up front so that a bad flag fails before any row is read."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from kubetune_trainer import storage
from kubetune_trainer.data.formats import FORMATS
from kubetune_trainer.errors import ConfigError, StorageError

KINDS = ("preference", "sft", "kto")
BAD_ROW_POLICIES = ("drop", "fail")


@dataclass(frozen=True)
class PrepareOptions:
    kind: str
    output: str
    sources: tuple[str, ...] = ()
    format: str = "auto"
    dataset_info: str | None = None
    dataset: str | None = None
    column_map: str | None = None
    test_fraction: float = 0.1
    stratify_by: str | None = None
    seed: int = 42
    dedupe: bool = True
    max_rows: int | None = None
    max_length: int | None = None
    on_bad_rows: str = "drop"
    max_drop_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"--kind must be preference, sft or kto, not {self.kind!r}")
        if self.format not in ("auto", *FORMATS):
            raise ConfigError(f"--format must be auto or one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.on_bad_rows not in BAD_ROW_POLICIES:
            raise ConfigError(f"--on-bad-rows must be drop or fail, not {self.on_bad_rows!r}")
        for flag, value in (
            ("--test-fraction", self.test_fraction),
            ("--max-drop-fraction", self.max_drop_fraction),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{flag} must be between 0 and 1, not {value}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be 0 or more, not {self.seed}")
        if self.seed >= 2**64:
            # The split hash is keyed with the seed's 8 bytes.
            raise ConfigError(f"--seed must be below 2**64, not {self.seed}")
        for flag, value in (("--max-rows", self.max_rows), ("--max-length", self.max_length)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be 1 or more, not {value}")
        if bool(self.dataset_info) != bool(self.dataset):
            raise ConfigError(
                "--dataset-info and --dataset go together: the file and the entry to read from it"
            )
        if self.dataset_info and self.column_map:
            raise ConfigError("--column-map and --dataset-info both map columns; give one")
        lf_formats = ("auto", "llamafactory", "alpaca", "sharegpt")
        if (self.dataset_info or self.column_map) and self.format not in lf_formats:
            raise ConfigError(f"--format {self.format} does not read LLaMA-Factory column maps")
        if self.format == "llamafactory" and not (self.dataset_info or self.column_map):
            raise ConfigError(
                "--format llamafactory needs --dataset-info FILE --dataset NAME, or --column-map"
            )
        if not self.sources and not self.dataset_info:
            raise ConfigError(
                "--source is required (or --dataset-info with an entry whose file_name names the data)"
            )
        for flag, uri in (("--output", self.output), *(("--source", source) for source in self.sources)):
            try:
                storage.parse(uri)
            except StorageError as exc:
                raise ConfigError(f"{flag} {exc.message}") from exc
        if self.stratify_by is not None and not self.stratify_by.strip():
            raise ConfigError("--stratify-by names a metadata field and cannot be empty")

    def describe(self) -> dict:
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }


def _number(flag: str, raw: str | None, kind: type):
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"{flag} must be {'an integer' if kind is int else 'a number'}, not {raw!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags are taken as text and checked by PrepareOptions, so that a bad value exits with BadConfig."""
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="S",
        help="file, directory, glob or s3:// URI; repeatable",
    )
    parser.add_argument("--format", default="auto", help=f"auto (default) or one of: {', '.join(FORMATS)}")
    parser.add_argument(
        "--dataset-info", metavar="FILE", help="LLaMA-Factory dataset_info.json (path or URI)"
    )
    parser.add_argument("--dataset", metavar="NAME", help="the entry of --dataset-info to read")
    parser.add_argument(
        "--column-map", metavar="JSON", help='inline LLaMA-Factory map: {"columns": {...}, "tags": {...}}'
    )
    parser.add_argument(
        "--kind", required=True, help="preference (pairs), sft (conversations) or kto (labelled answers)"
    )
    parser.add_argument(
        "--test-fraction", default="0.1", metavar="F", help="share of rows in test.jsonl (0.1)"
    )
    parser.add_argument("--stratify-by", metavar="FIELD", help="metadata field every test split must cover")
    parser.add_argument("--seed", default="42", metavar="N", help="split seed (42)")
    parser.add_argument(
        "--dedupe",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop rows whose content repeats an earlier row (default on)",
    )
    parser.add_argument("--max-rows", metavar="N", help="stop after N rows are kept")
    parser.add_argument("--max-length", metavar="N", help="drop rows with more characters of prompt + answer")
    parser.add_argument("--on-bad-rows", default="drop", help="drop (default) or fail at the first bad row")
    parser.add_argument(
        "--max-drop-fraction",
        default="0.05",
        metavar="F",
        help="fail when more than this share of rows is dropped (0.05)",
    )
    parser.add_argument(
        "--output", required=True, metavar="URI", help="directory or s3:// prefix to publish to"
    )


def from_args(args: argparse.Namespace) -> PrepareOptions:
    return PrepareOptions(
        kind=args.kind,
        output=args.output,
        sources=tuple(args.source),
        format=args.format,
        dataset_info=args.dataset_info,
        dataset=args.dataset,
        column_map=args.column_map,
        test_fraction=_number("--test-fraction", args.test_fraction, float),
        stratify_by=args.stratify_by,
        seed=_number("--seed", args.seed, int),
        dedupe=args.dedupe,
        max_rows=_number("--max-rows", args.max_rows, int),
        max_length=_number("--max-length", args.max_length, int),
        on_bad_rows=args.on_bad_rows,
        max_drop_fraction=_number("--max-drop-fraction", args.max_drop_fraction, float),
    )
