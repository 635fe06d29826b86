"""JSON that parsers read differently: a key written twice, NaN and infinities, deep nesting.

Each case is the same in every input format: a counted drop naming file, line and what is wrong,
never a traceback, never a value quietly changed (Python's parser, which reads JSON arrays, keeps
the last of two keys and reads NaN, which orjson then writes as null).
"""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest

from .conftest import pref

PROMPT = '[{"role": "user", "content": "bad"}]'
ANSWER = '[{"role": "assistant", "content": "fine"}]'
DEEP = "[" * 5000 + "]" * 5000
# case: (chosen, rejected, extra) as JSON texts, and what the drop must say.
BAD = {
    "duplicate key": (
        '[{"role": "assistant", "content": "first", "content": "second"}]', ANSWER, "1",
        "key 'content' appears twice in one object",
    ),
    "NaN": (ANSWER, '[{"role": "assistant", "content": "other"}]', "NaN", "NaN is not a number JSON can hold"),
    "Infinity": (ANSWER, '[{"role": "assistant", "content": "other"}]', "-Infinity", "-Infinity is not a number JSON can hold"),
    "beyond a double": (ANSWER, '[{"role": "assistant", "content": "other"}]', "1e999", "1e999 is not a number JSON can hold"),
    "deep": (ANSWER, '[{"role": "assistant", "content": "other"}]', DEEP, "nested deeper than"),
}
GOOD = [pref("kept-1"), pref("kept-2")]


def bad_object(chosen: str, rejected: str, extra: str) -> str:
    return f'{{"prompt": {PROMPT}, "chosen": {chosen}, "rejected": {rejected}, "extra": {extra}}}'


def as_lines(bad: tuple[str, str, str]) -> str:
    return "\n".join([json.dumps(GOOD[0]), bad_object(*bad), json.dumps(GOOD[1])]) + "\n"


def as_array(bad: tuple[str, str, str]) -> str:
    return "[\n" + ",\n".join([json.dumps(GOOD[0]), bad_object(*bad), json.dumps(GOOD[1])]) + "\n]\n"


def as_csv(bad: tuple[str, str, str]) -> str:
    """Message lists as JSON cells, as CSV exports of chat data hold them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prompt", "chosen", "rejected", "extra"])
    writer.writerow([json.dumps(GOOD[0][k]) for k in ("prompt", "chosen", "rejected")] + ["[]"])
    writer.writerow([PROMPT, bad[0], bad[1], f"[{bad[2]}]"])
    writer.writerow([json.dumps(GOOD[1][k]) for k in ("prompt", "chosen", "rejected")] + ["[]"])
    return out.getvalue()


# name: (file name, writer, the line the bad row starts on)
LAYOUTS = {
    "jsonl": ("rows.jsonl", as_lines, 2),
    "jsonl.gz": ("rows.jsonl.gz", as_lines, 2),
    "json array": ("rows.json", as_array, 3),
    "json array.gz": ("rows.json.gz", as_array, 3),
    "JSON lines named .json": ("rows.json", as_lines, 2),
    "csv cells": ("rows.csv", as_csv, 3),
}


@pytest.mark.parametrize("case", BAD, ids=BAD.keys())
@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUTS.keys())
def test_a_row_parsers_disagree_on_is_dropped_and_counted_in_every_format(prepare, tmp_path, case, layout):
    *bad, detail = BAD[case]
    name, write, line = LAYOUTS[layout]
    text = write(tuple(bad))
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    result = prepare("--source", path, "--kind", "preference", "--format", "trl", "--max-drop-fraction", "1",
                     "--test-fraction", "0")
    assert result.rc == 0, result.termination
    manifest = result.manifest
    assert manifest["dropped"] == {"broken_json": 1}, manifest["drop_examples"]
    (example,) = manifest["drop_examples"]
    assert example["source"] == f"{path}:{line}"
    assert detail in example["detail"]
    assert sorted(row["prompt"][0]["content"] for row in result.all_rows()) == ["kept-1", "kept-2"]


def test_an_array_element_deeper_than_any_buffer_is_still_stepped_over(prepare, tmp_path, monkeypatch):
    from kubetune_trainer.data import sources

    monkeypatch.setattr(sources, "CHUNK", 64)  # the deep element spans many reads
    path = tmp_path / "rows.json"
    path.write_text(as_array(BAD["deep"][:3]), encoding="utf-8")
    result = prepare("--source", path, "--kind", "preference", "--format", "trl", "--max-drop-fraction", "1",
                     "--test-fraction", "0")
    assert result.rc == 0 and result.manifest["dropped"] == {"broken_json": 1}
