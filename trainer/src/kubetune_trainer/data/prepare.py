"""`data prepare`: read every source, convert and validate each row, split, publish.

Two passes keep rows out of memory however large the inputs grow. The first streams every record
through its format's converter and the checks, and spools the canonical rows to a scratch file;
per row it keeps only a 16-byte content hash (for dedupe), the prompt's split score, a stratum
id and three lengths, about 140 bytes. The split is then decided from those arrays, and the second pass copies the
spooled lines into train.jsonl and test.jsonl. The manifest, naming every file with its sha256,
is published last.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from kubetune_trainer import __version__, storage
from kubetune_trainer.data import sources, split
from kubetune_trainer.data.format_plan import FormatPlan
from kubetune_trainer.data.options import PrepareOptions
from kubetune_trainer.data.validate import (
    FILTERED,
    REASONS,
    RowError,
    chars,
    check_kto,
    check_preference,
    check_sft,
    type_name,
)
from kubetune_trainer.errors import ConfigError, DataError
from kubetune_trainer.progress import ProgressReporter, metrics

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
OUTPUT_FILES = tuple(f"{split_name}.jsonl" for split_name in SPLITS)
EXAMPLES_PER_REASON = 5
FIRST_BAD_IN_ERRORS = 5
MISSING = "<missing>"
LOG_EVERY_SECONDS = 10.0
# Rows between looks at the clock: often enough for a lively bar, rarely enough to cost nothing.
TICK_ROWS = 4096


@dataclass
class FirstPass:
    """What the first pass keeps per row, and what it counted."""

    fail_fast: bool = False
    read: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)
    scores: array = field(default_factory=lambda: array("Q"))
    strata: array = field(default_factory=lambda: array("I"))
    prompt_chars: array = field(default_factory=lambda: array("I"))
    answer_chars: array = field(default_factory=lambda: array("I"))
    rejected_chars: array = field(default_factory=lambda: array("I"))
    stratum_ids: dict[str, int] = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)
    # KTO rows kept per label: desirable_weight and undesirable_weight balance them.
    labels: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return len(self.scores)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def invalid_total(self) -> int:
        return sum(count for reason, count in self.dropped.items() if reason not in FILTERED)

    def drop(self, name: str, line: int, error: RowError) -> None:
        self.dropped[error.reason] += 1
        where = f"{name}:{line}"
        if self.fail_fast and error.reason not in FILTERED:
            raise DataError(f"{where}: {error.reason}: {error.detail} (--on-bad-rows fail)")
        if self.dropped[error.reason] <= EXAMPLES_PER_REASON:
            self.examples.append({"source": where, "reason": error.reason, "detail": error.detail})
            log.warning("%s: dropped (%s): %s", where, error.reason, error.detail)

    def keep(self, score: int, stratum: str, lengths: tuple[int, int, int]) -> None:
        self.scores.append(score)
        self.strata.append(self.stratum_ids.setdefault(stratum, len(self.stratum_ids)))
        self.prompt_chars.append(lengths[0])
        self.answer_chars.append(lengths[1])
        self.rejected_chars.append(lengths[2])


class Progress:
    """A bar on a terminal; in a pod, a log line every few seconds. Progress events and the rows
    counter go to the operator either way."""

    def __init__(self, reporter: ProgressReporter):
        self.reporter = reporter
        self.started = time.monotonic()
        self.last_log = self.started
        self.reported: Counter = Counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(unit=" rows", desc="data prepare", unit_scale=True, file=sys.stderr)

    def tick(self, state: FirstPass, force: bool = False) -> None:
        now = time.monotonic()
        rate = state.read / max(now - self.started, 1e-9)
        message = (
            f"read {state.read} rows: {state.kept} kept, {state.dropped_total} dropped ({rate:.0f} rows/s)"
        )
        if self.bar is not None:
            self.bar.update(state.read - self.bar.n)
            self.bar.set_postfix(kept=state.kept, dropped=state.dropped_total, refresh=False)
        elif force or now - self.last_log >= LOG_EVERY_SECONDS:
            log.info(message)
            self.last_log = now
        self._count(state)
        self.reporter.update(force=force, phase="data", step=state.read, message=message)

    def _count(self, state: FirstPass) -> None:
        outcomes = Counter(state.dropped)
        outcomes["kept"] = state.kept
        counter = metrics().rows_total
        for outcome, total in outcomes.items():
            if total > self.reported[outcome]:
                counter.labels(outcome=outcome).inc(total - self.reported[outcome])
                self.reported[outcome] = total

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _field(metadata: dict, path: str) -> Any:
    value: Any = metadata
    for part in path.split("."):
        if type(value) is not dict or part not in value:
            return None
        value = value[part]
    return value


def _stratum(value: Any) -> str:
    if value is None:
        return MISSING
    return value if type(value) is str else orjson.dumps(value).decode()


class _Stop(Exception):
    """--max-rows reached."""


def with_source(where: str, metadata: dict) -> dict:
    """The row's metadata under its `file:line`, which trainer and eval messages name; an input field
    called `source` is kept as `input_source` rather than hiding it."""
    if "source" not in metadata:
        return {"source": where, **metadata}
    if "input_source" in metadata:
        raise RowError(
            "unsupported_field", "the row has both source and input_source fields; metadata.source is taken"
        )
    return {
        "source": where,
        **{"input_source" if key == "source" else key: value for key, value in metadata.items()},
    }


def checked(content: dict, kind: str, max_length: int | None) -> tuple[list, tuple[int, int, int]]:
    """Check a converted row; returns its prompt and the characters of prompt, answer and rejected answer."""
    if kind == "preference":
        prompt = content["prompt"]
        check_preference(prompt, content["chosen"], content["rejected"])
        lengths = (chars(prompt), chars(content["chosen"]), chars(content["rejected"]))
    elif kind == "kto":
        prompt = content["prompt"]
        check_kto(prompt, content["completion"])
        lengths = (chars(prompt), chars(content["completion"]), 0)
    else:
        conversation = content["messages"]
        check_sft(conversation)
        prompt = conversation[:-1]
        lengths = (chars(prompt), len(conversation[-1]["content"]), 0)
    total = lengths[0] + max(lengths[1], lengths[2])
    if max_length and total > max_length:
        raise RowError("too_long", f"{total} characters of prompt and answer (--max-length {max_length})")
    return prompt, lengths


def first_pass(
    options: PrepareOptions, plan: FormatPlan, uris: list[str], spool: Any, work: Path, progress: Progress
) -> FirstPass:
    state = FirstPass(fail_fast=options.on_bad_rows == "fail")
    key = split.seed_key(options.seed)
    seen: set[bytes] = set()
    dumps, blake2b, write = orjson.dumps, hashlib.blake2b, spool.write
    log.info("reading %d file(s)", len(uris))
    try:
        for uri in uris:
            name = sources.display(uri)
            read_before, kept_before = state.read, state.kept
            convert, records = plan.converter_for(name, sources.records(uri, work))
            for line, value in records:
                state.read += 1
                if not state.read % TICK_ROWS:
                    progress.tick(state)
                if type(value) is not dict:
                    state.drop(
                        name,
                        line,
                        value
                        if isinstance(value, RowError)
                        else RowError("not_an_object", f"the record is {type_name(value)}, not an object"),
                    )
                    continue
                try:
                    content, metadata = convert(value)
                    prompt, lengths = checked(content, options.kind, options.max_length)
                    body = dumps(content)
                    if options.dedupe:
                        digest = blake2b(body, digest_size=16).digest()
                        if digest in seen:
                            raise RowError("duplicate", "an earlier row has the same prompt and answers")
                        seen.add(digest)
                    tail = dumps(with_source(f"{name}:{line}", metadata), default=str)
                except RowError as error:
                    state.drop(name, line, error)
                    continue
                except orjson.JSONEncodeError as exc:
                    # Python's parser, which reads JSON arrays, lets lone surrogates and integers beyond
                    # 64 bits through; orjson writes neither.
                    error = RowError("unsupported_field", f"cannot be written as UTF-8 JSON ({exc})")
                    state.drop(name, line, error)
                    continue
                write(body[:-1] + b',"metadata":' + tail + b"}\n")
                if "label" in content:
                    state.labels["desirable" if content["label"] else "undesirable"] += 1
                stratum = _stratum(_field(metadata, options.stratify_by)) if options.stratify_by else ""
                state.keep(split.score(dumps(prompt), key), stratum, lengths)
                if state.kept == options.max_rows:
                    raise _Stop
            state.files.append(_file_summary(name, state, read_before, kept_before))
            if state.read == read_before:
                log.warning("%s holds no records", name)
    except _Stop:
        state.files.append(_file_summary(name, state, read_before, kept_before))
        log.info("--max-rows %d reached; the rest of the sources is not read", options.max_rows)
    progress.tick(state, force=True)
    return state


def _file_summary(name: str, state: FirstPass, read_before: int, kept_before: int) -> dict:
    return {"source": name, "read": state.read - read_before, "kept": state.kept - kept_before}


def check_drops(state: FirstPass, options: PrepareOptions) -> None:
    """Fail when nothing is usable or too much was dropped; the error names the first bad rows."""
    if not state.read:
        raise DataError(f"the sources hold no rows: {', '.join(f['source'] for f in state.files)}")
    reasons = ", ".join(f"{reason} {count}" for reason, count in _ordered(state.dropped).items())
    if not state.kept:
        raise DataError(
            f"no usable rows: all {state.read} rows were dropped ({reasons}). First: {_first(state.examples)}"
        )
    share = state.invalid_total / state.read
    if share > options.max_drop_fraction:
        invalid = [example for example in state.examples if example["reason"] not in FILTERED]
        raise DataError(
            f"{state.invalid_total} of {state.read} rows are bad ({share:.1%} > --max-drop-fraction "
            f"{options.max_drop_fraction:.1%}): {reasons}. First bad rows: {_first(invalid)}"
        )
    if options.stratify_by and list(state.stratum_ids) == [MISSING]:
        raise DataError(f"--stratify-by {options.stratify_by}: no row has this metadata field")


def _first(examples: list[dict]) -> str:
    return "; ".join(f"{e['source']}: {e['reason']}: {e['detail']}" for e in examples[:FIRST_BAD_IN_ERRORS])


def _ordered(dropped: Counter) -> dict[str, int]:
    return {reason: dropped[reason] for reason in REASONS if dropped[reason]}


def _lengths(values: array) -> dict[str, float]:
    data = np.frombuffer(values, dtype=np.uint32)
    p50, p95 = np.percentile(data, [50, 95])
    return {
        "min": int(data.min()),
        "mean": round(float(data.mean()), 1),
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "max": int(data.max()),
    }


def second_pass(spool_path: Path, is_test: np.ndarray, staging: Path) -> dict[str, int]:
    """Copy the spooled lines into train.jsonl and test.jsonl, in input order."""
    counts = dict.fromkeys(SPLITS, 0)
    with (
        open(spool_path, "rb") as spool,
        open(staging / "train.jsonl", "wb") as train,
        open(staging / "test.jsonl", "wb") as test,
    ):
        for line, to_test in zip(spool, is_test.tolist(), strict=True):
            (test if to_test else train).write(line)
        counts["test"] = int(is_test.sum())
        counts["train"] = len(is_test) - counts["test"]
    return counts


def fingerprint(files: dict[str, str]) -> str:
    """sha256 over the canonical output: each split's file name and sha256, train then test."""
    framed = "".join(f"{name} {files[name]}\n" for name in OUTPUT_FILES)
    return "sha256:" + hashlib.sha256(framed.encode()).hexdigest()


def _strata(state: FirstPass, is_test: np.ndarray, options: PrepareOptions) -> dict[str, dict[str, int]]:
    """Rows of every stratum per split, strata by name."""
    if not options.stratify_by:
        return {}
    strata = np.frombuffer(state.strata, dtype=np.uint32)
    names = list(state.stratum_ids)
    test = np.bincount(strata[is_test], minlength=len(names)).tolist()
    train = np.bincount(strata[~is_test], minlength=len(names)).tolist()
    return {
        name: {"train": train[i], "test": test[i]} for i, name in sorted(enumerate(names), key=lambda p: p[1])
    }


def split_warnings(state: FirstPass, is_test: np.ndarray, options: PrepareOptions) -> list[str]:
    """Strata of two or more prompts that the split left without a train row, one sentence each."""
    if options.test_fraction >= 1.0:
        return []
    scores = np.frombuffer(state.scores, dtype=np.uint64)
    strata = np.frombuffer(state.strata, dtype=np.uint32)
    names = list(state.stratum_ids)
    return [
        f"{options.stratify_by} {names[stratum]!r} has no row in train: each of its prompts also occurs "
        "in a stratum that needed it in test, and no prompt may be on both sides"
        for stratum in split.strata_without_train(scores, strata, is_test)
    ]


def _all_lengths(state: FirstPass, kind: str) -> dict[str, dict]:
    """Character lengths; for preference rows `answer` covers chosen and rejected answers together."""
    if kind != "preference":
        return {"prompt": _lengths(state.prompt_chars), "answer": _lengths(state.answer_chars)}
    return {
        "prompt": _lengths(state.prompt_chars),
        "answer": _lengths(state.answer_chars + state.rejected_chars),
        "chosen": _lengths(state.answer_chars),
        "rejected": _lengths(state.rejected_chars),
    }


def build_manifest(
    options: PrepareOptions,
    plan: FormatPlan,
    state: FirstPass,
    counts: dict,
    is_test: np.ndarray,
    files: dict,
) -> dict:
    return {
        "kind": options.kind,
        "format": plan.format,
        "format_evidence": plan.evidence,
        "format_details": plan.describe(),
        "fingerprint": fingerprint(files),
        "files": files,
        "counts": {**counts, "read": state.read, "kept": state.kept, "dropped": state.dropped_total},
        "dropped": _ordered(state.dropped),
        "drop_examples": state.examples,
        "stratify_by": options.stratify_by,
        "strata": _strata(state, is_test, options),
        "warnings": split_warnings(state, is_test, options),
        "lengths": _all_lengths(state, options.kind),
        **({"labels": {k: state.labels[k] for k in ("desirable", "undesirable")}} if options.kind == "kto" else {}),
        "sources": state.files,
        "options": options.describe(),
        "created_by": f"kubetune-trainer {__version__}",
    }


def publish(staging: Path, output: str) -> None:
    """Retract any old manifest, put the data files in place, then the new manifest."""
    manifest_uri = storage.join(output, "manifest.json")
    if storage.is_remote(output):
        storage.delete_file(manifest_uri)
        storage.upload_dir(staging, output)
        return
    target = storage.local_path(output)
    storage.delete_file(manifest_uri)
    for name in (*OUTPUT_FILES, "manifest.json"):
        os.replace(staging / name, target / name)


def check_output(output: str) -> None:
    """Refuse an output that cannot be written before any row is read, not after."""
    if storage.is_remote(output):
        return
    target = storage.local_path(output)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a directory")
    existing = next(parent for parent in (target, *target.parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {output}: {existing} is not a writable directory")


def check_sources_survive(uris: list[str], output: str) -> None:
    """Publishing replaces train.jsonl, test.jsonl and manifest.json in the output: none may be an input."""
    published = {storage.parse(storage.join(output, name)) for name in (*OUTPUT_FILES, "manifest.json")}
    for uri in uris:
        if storage.parse(uri) in published:
            raise ConfigError(
                f"--output {output}: publishing there would overwrite the source {sources.display(uri)}"
            )


def _staging_dir(output: str, work: Path) -> Path:
    """Where the output is written before it is published: beside the target when it is local, so
    that publishing is a rename."""
    if storage.is_remote(output):
        return Path(tempfile.mkdtemp(prefix="out-", dir=work))
    target = storage.local_path(output)
    target.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=target))


def prepare(options: PrepareOptions, reporter: ProgressReporter | None = None) -> dict:
    """Run the whole pipeline; returns the manifest it published."""
    reporter = reporter or ProgressReporter.from_env()
    plan = FormatPlan(options)
    check_output(options.output)
    uris = sources.resolve(plan.sources)
    check_sources_survive(uris, options.output)
    reporter.update(force=True, phase="data", step=0, message="reading sources")
    scratch = os.environ.get("KUBETUNE_CACHE_DIR") or None
    with tempfile.TemporaryDirectory(prefix="kubetune-data-", dir=scratch) as work_dir:
        work = Path(work_dir)
        spool_path = work / "rows.jsonl"
        progress = Progress(reporter)
        try:
            with open(spool_path, "wb") as spool:
                state = first_pass(options, plan, uris, spool, work, progress)
        finally:
            progress.close()
        check_drops(state, options)
        for reason, count in _ordered(state.dropped).items():
            log.warning("dropped %d row(s): %s", count, reason)
        is_test = split.choose_test(
            np.frombuffer(state.scores, dtype=np.uint64),
            np.frombuffer(state.strata, dtype=np.uint32),
            options.test_fraction,
        )
        staging = _staging_dir(options.output, work)
        try:
            counts = second_pass(spool_path, is_test, staging)
            files = storage.sha256_tree(staging)
            manifest = build_manifest(options, plan, state, counts, is_test, files)
            for warning in manifest["warnings"]:
                log.warning("%s", warning)
            (staging / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            publish(staging, options.output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    reporter.update(
        force=True, phase="done", step=state.read, message=f"published {storage.parse(options.output).uri}"
    )
    return manifest
