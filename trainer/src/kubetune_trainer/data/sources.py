"""Where rows come from: files, directories, globs and s3:// URIs holding JSON, JSONL, CSV or
Parquet, each optionally gzipped. Every record comes with the line it starts on.

A reader yields `(line, value)` where value is the parsed object or, for a record that cannot be
parsed, a RowError; a file that cannot be read on (a corrupt gzip or Parquet file, text that is
not UTF-8 inside a JSON document) stops the run with a DataError naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import glob
import gzip
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kubetune_trainer import storage, strict_json
from kubetune_trainer.data.validate import RowError, listed
from kubetune_trainer.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
LINE_SUFFIXES = (".jsonl", ".ndjson")
GLOB_CHARS = re.compile(r"[*?\[]")
CONFIG_FILES = ("dataset_info.json",)
# A JSON array element may be cut by the end of the buffer; past this size it is too large to hold.
MAX_ELEMENT = 256 << 20
# A syntax error this close to the end of the buffer may just be an element the buffer cut short.
CUT_MARGIN = 16
GZIP_MAGIC = b"\x1f\x8b"
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
BOM = codecs.BOM_UTF8

csv.field_size_limit(64 << 20)

Record = tuple[int, Any]


def display(uri: str) -> str:
    """How a file is named in messages and `metadata.source`: a plain path, or its s3:// URI."""
    loc = storage.parse(uri)
    return loc.uri if loc.scheme == "s3" else loc.path


def _inner_name(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def is_data_file(name: str) -> bool:
    base = Path(name).name
    return not base.startswith(".") and base not in CONFIG_FILES and _inner_name(base).endswith(DATA_SUFFIXES)


def _hidden(relative: str) -> bool:
    """Below a hidden directory (.git, .ipynb_checkpoints, a crashed run's .staging-*): not the user's rows."""
    return any(part.startswith(".") for part in relative.split("/")[:-1])


def _file_uri(path: str) -> str:
    # Percent-encoded, so that a name holding #, % or ? survives storage.parse.
    return Path(path).as_uri()


def _local_files(root: str) -> list[str]:
    """Every file below a local directory outside hidden directories, sorted by path, as URIs.

    Symbolic links are followed (a linked folder is read like any other, each real folder once); a
    link to nothing that names a data file is an error, not a file quietly left out."""
    found = []
    visited = {os.path.realpath(root)}
    for folder, directories, files in os.walk(root, followlinks=True):
        kept = []
        for name in directories:
            real = os.path.realpath(os.path.join(folder, name))
            if not name.startswith(".") and real not in visited:
                visited.add(real)
                kept.append(name)
        directories[:] = kept
        found.extend(os.path.join(folder, name) for name in files)
    _refuse_broken_links(found)
    return [_file_uri(path) for path in sorted(found) if os.path.isfile(path)]


def _refuse_broken_links(paths: Iterable[str]) -> None:
    for path in paths:
        if os.path.islink(path) and not os.path.exists(path) and is_data_file(path):
            raise DataError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist")


def _keep_data_files(found: list[str], spec: str) -> list[str]:
    kept, skipped = [], []
    for uri in found:
        (kept if is_data_file(uri) else skipped).append(uri)
    skipped = [Path(storage.parse(uri).path).name for uri in skipped]
    if skipped:
        log.info(
            "--source %s: skipping %d file(s) that hold no rows: %s",
            spec,
            len(skipped),
            ", ".join(skipped[:10]),
        )
    return kept


def resolve(specs: list[str]) -> list[str]:
    """Every data file the --source values name, as URIs, in order; a value naming none is an error."""
    resolved: dict[str, None] = {}
    for spec in specs:
        found = _resolve_one(spec)
        if not found:
            raise ConfigError(
                f"--source {spec}: no data file matches ({', '.join(DATA_SUFFIXES)}, optionally .gz)"
            )
        resolved.update(dict.fromkeys(found))
    return list(resolved)


def _resolve_one(spec: str) -> list[str]:
    loc = storage.parse(spec)
    if loc.scheme == "s3":
        return _resolve_s3(spec, loc)
    path = loc.path
    # A name that exists is taken as it is, even when it holds glob characters ("data [v2].jsonl").
    if Path(path).is_file():
        return [_file_uri(path)]
    if Path(path).is_dir():
        return _keep_data_files(_local_files(path), spec)
    if GLOB_CHARS.search(path):
        matches = sorted(glob.glob(path, recursive=True))
        _refuse_broken_links(matches)
        files = [_file_uri(p) for p in matches if Path(p).is_file()]
        for directory in (p for p in matches if Path(p).is_dir()):
            files.extend(_local_files(directory))
        return _keep_data_files(files, spec)
    given = spec[len("file://") :] if spec.startswith("file://") else spec
    if os.path.islink(given):
        raise DataError(f"--source {given}: a symbolic link to {os.readlink(given)}, which does not exist")
    raise ConfigError(f"--source {spec}: no such file or directory")


def _resolve_s3(spec: str, loc: storage.Location) -> list[str]:
    match = GLOB_CHARS.search(loc.path)
    if match:
        base = loc.path[: match.start()].rpartition("/")[0]
        below = storage.list_files(f"s3://{loc.bucket}/{base}")
        pattern = loc.path.split("/")
        return _keep_data_files(
            [uri for uri in below if _glob_match(storage.parse(uri).path.split("/"), pattern)], spec
        )
    prefix = f"s3://{loc.bucket}/{loc.path.rstrip('/')}/" if loc.path.strip("/") else f"s3://{loc.bucket}/"
    below = [uri for uri in storage.list_files(spec) if not _hidden(uri[len(prefix) :])]
    if below:
        return _keep_data_files(below, spec)
    if loc.path and storage.exists(spec):
        return [spec]
    raise ConfigError(f"--source {spec}: no such object or prefix")


def _glob_match(parts: list[str], pattern: list[str]) -> bool:
    """An S3 key against a glob, segment by segment as glob.glob(recursive=True) matches local paths:
    `*` stays within a segment, `**` spans any number of them, and a hidden name needs a pattern
    that starts with a dot."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    visible = bool(parts) and not parts[0].startswith(".")
    if head == "**":
        return _glob_match(parts, rest) or (visible and _glob_match(parts[1:], pattern))
    return (
        bool(parts)
        and (visible or head.startswith("."))
        and fnmatch.fnmatchcase(parts[0], head)
        and _glob_match(parts[1:], rest)
    )


def _utf8(uri: str, stream: IO[bytes]) -> IO[bytes]:
    """The stream, unless it is UTF-16 (as Windows tools save "Unicode" text), which would read as
    nothing but broken rows."""
    if stream.peek(2)[:2] in UTF16_BOMS:
        raise DataError(
            f"{display(uri)}: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"
        )
    return stream


@contextmanager
def _open(uri: str) -> Iterator[IO[bytes]]:
    # Local files and S3 bodies alike arrive buffered (peek works on both).
    with storage.open_read(uri) as stream:
        if uri.endswith(".gz") or stream.peek(2)[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
                yield _utf8(uri, io.BufferedReader(unzipped, CHUNK))
            return
        yield _utf8(uri, stream)


def records(uri: str, work_dir: Path) -> Iterator[Record]:
    """Every record of one file as (line, object or RowError); unreadable files raise DataError."""
    name = display(uri)
    line = 0
    try:
        for line, value in _records(uri, work_dir):
            yield line, value
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: not a readable gzip stream after line {line} ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{name}: not UTF-8 text after line {line} ({exc.reason} at byte {exc.start})"
        ) from exc
    except _BrokenDocument as exc:
        raise DataError(f"{name}:{exc.line}: {exc.message}") from exc
    except OSError as exc:
        raise DataError(f"{name}: unreadable after line {line} ({exc})") from exc


def _records(uri: str, work_dir: Path) -> Iterator[Record]:
    inner = _inner_name(storage.parse(uri).path)
    if inner.endswith(".parquet"):
        yield from _parquet(uri, work_dir)
        return
    with _open(uri) as stream:
        if inner.endswith(".csv"):
            yield from _csv(stream)
        elif inner.endswith(LINE_SUFFIXES):
            yield from _json_lines(stream)
        else:
            yield from _json(stream)


def _parse_line(number: int, raw: bytes) -> Record | None:
    try:
        return number, strict_json.loads(raw)
    except strict_json.JSONProblem as problem:
        if raw.strip():
            return number, RowError("broken_json", problem.message)
        return None


def _json_lines(stream: Iterable[bytes], number: int = 0) -> Iterator[Record]:
    for raw in stream:
        number += 1
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        parsed = _parse_line(number, raw)
        if parsed is not None:
            yield parsed


def _json(stream: IO[bytes]) -> Iterator[Record]:
    """A .json file: an array of objects, one object, or JSON lines under a .json name."""
    number = 0
    first = b""
    for raw in stream:
        number += 1
        first = raw[len(BOM) :] if number == 1 and raw.startswith(BOM) else raw
        if first.strip():
            break
    head = first.lstrip()[:1]
    if head == b"[":
        yield from _array(_Text(stream, first, number))
        return
    if head == b"{":
        one_line = _parse_line(number, first)
        if one_line is not None and not isinstance(one_line[1], RowError):
            yield one_line
            yield from _json_lines(stream, number)
            return
        # Not an object on one line: one document spread over lines, or JSON lines whose first line is
        # broken. The next line that is not blank tells them apart: JSON lines start it with {.
        ahead = []
        for raw in stream:
            ahead.append(raw)
            if raw.strip():
                break
        if ahead and ahead[-1].startswith(b"{"):
            yield one_line
            yield from _json_lines(itertools.chain(ahead, stream), number)
            return
        document = first + b"".join(ahead) + stream.read()
        try:
            yield number, strict_json.loads(document)
        except strict_json.JSONProblem as problem:
            yield number, RowError("broken_json", f"not a valid JSON document: {problem.message}")
        return
    if head:
        parsed = _parse_line(number, first)
        if parsed is not None:
            yield parsed
        yield from _json_lines(stream, number)


class _BrokenDocument(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _Text:
    """The decoded text of a stream, buffered in chunks, that knows the line of every position."""

    def __init__(self, stream: IO[bytes], first: bytes, first_line: int):
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = self.decoder.decode(first)
        self.pos = 0
        self.eof = False
        self.counted_pos = 0
        self.counted_line = first_line

    def line_at(self, pos: int) -> int:
        self.counted_line += self.buf.count("\n", self.counted_pos, pos)
        self.counted_pos = pos
        return self.counted_line

    def more(self) -> bool:
        """Read another chunk, dropping the text before `pos`; False at the end of the stream."""
        if self.eof:
            return False
        self.line_at(self.pos)
        chunk = self.stream.read(CHUNK)
        self.eof = not chunk
        self.buf = self.buf[self.pos :] + self.decoder.decode(chunk, final=self.eof)
        self.counted_pos -= self.pos
        self.pos = 0
        return not self.eof

    def next_char(self) -> str:
        """The next character that is not whitespace (empty at the end), leaving `pos` on it."""
        while True:
            end = len(self.buf)
            while self.pos < end and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < end or not self.more():
                return self.buf[self.pos : self.pos + 1]

    def fail(self, message: str, pos: int | None = None) -> _BrokenDocument:
        return _BrokenDocument(self.line_at(self.pos if pos is None else pos), message)


_decoder = strict_json.decoder()


def _close(text: _Text) -> None:
    """Step over the closing ] of the top-level array; only whitespace may follow it."""
    text.pos += 1
    if text.next_char():
        raise text.fail("unexpected text after the closing ]")


def _array(text: _Text) -> Iterator[Record]:
    """Stream the elements of a top-level array without holding the file in memory."""
    text.next_char()
    text.pos += 1
    if text.next_char() == "]":
        _close(text)
        return
    while True:
        if not text.next_char():
            raise text.fail("the array is not closed with ]")
        start = text.pos
        try:
            value, end = _decoder.raw_decode(text.buf, start)
            strict_json.check(text.buf[start:end], value)
        except json.JSONDecodeError as exc:
            cut = exc.pos >= len(text.buf) - CUT_MARGIN or exc.msg.startswith("Unterminated string")
            if cut and len(text.buf) - start < MAX_ELEMENT and text.more():
                continue
            raise text.fail(f"not valid JSON: {exc.msg}", exc.pos) from exc
        except strict_json.JSONProblem as problem:
            # A well-formed element holding what JSON rows may not: step over it, as a broken line
            # of JSON lines is stepped over, and count it.
            end = strict_json.value_end(text.buf, start)
            if end is None:
                if len(text.buf) - start < MAX_ELEMENT and text.more():
                    continue
                raise text.fail(problem.message) from None
            value = RowError("broken_json", problem.message)
        yield text.line_at(start), value
        text.pos = end
        separator = text.next_char()
        if separator == "]":
            _close(text)
            return
        if separator != ",":
            raise text.fail(
                f"expected , or ] after an element, found {separator!r}"
                if separator
                else "the array is not closed with ]"
            )
        text.pos += 1


def _csv_cell(cell: str) -> Any:
    """CSV cannot nest, so a cell holding a JSON array or object (a message list) is decoded; a cell
    that is no JSON is text, but one that is JSON with a key twice or NaN in it is a broken row."""
    if cell[:1] in ("[", "{"):
        try:
            return strict_json.loads(cell)
        except strict_json.JSONProblem as problem:
            if problem.kind == "syntax":
                return cell
            raise
    return cell


def _csv(stream: IO[bytes]) -> Iterator[Record]:
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""))
    header = next(reader, None)
    if not header:
        return
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise _BrokenDocument(reader.line_num, f"the header names {listed(repeated, 'columns')} twice")
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, RowError("broken_csv", str(exc))
            continue
        if not cells:
            continue
        if len(cells) != len(header):
            yield start, RowError("broken_csv", f"{len(cells)} fields where the header has {len(header)}")
            continue
        row = {}
        for key, cell in zip(header, cells, strict=True):
            try:
                row[key] = _csv_cell(cell)
            except strict_json.JSONProblem as problem:
                row = RowError("broken_json", f"column {listed([key], 'columns')}: {problem.message}")
                break
        yield start, row


def _parquet(uri: str, work_dir: Path) -> Iterator[Record]:
    import pyarrow
    import pyarrow.parquet as pq

    loc = storage.parse(uri)
    if loc.scheme == "file":
        path = Path(loc.path)
    else:
        # Parquet needs random access (the footer first), so a remote file is copied to scratch.
        path = storage.download_file(uri, work_dir / hashlib.sha256(uri.encode()).hexdigest()[:16])
    number = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                found = _not_finite(row)
                # JSON has no NaN: written out, it would become null and the row change silently.
                yield number, row if found is None else RowError(
                    "unsupported_field", f"{found[0]} is {found[1]}, which JSON cannot hold"
                )
    except pyarrow.ArrowException as exc:
        raise DataError(f"{display(uri)}: not a readable Parquet file after row {number} ({exc})") from exc


def _not_finite(row: dict) -> tuple[str, float] | None:
    """The first field (as a path) holding NaN or an infinity, at any depth, and its value."""
    pending: list[tuple[str, Any]] = list(row.items())
    while pending:
        where, value = pending.pop()
        if type(value) is float and not math.isfinite(value):
            return where, value
        if type(value) is dict:
            pending.extend((f"{where}.{key}", item) for key, item in value.items())
        elif type(value) is list:
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return None
