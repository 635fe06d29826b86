"""The pipeline's own guarantees: metadata.source is always the file and line, and duplicates are found by content."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from .conftest import pref, write_jsonl


def test_an_input_source_field_does_not_hide_the_file_and_line(prepare, tmp_path):
    source = write_jsonl(tmp_path / "rows.jsonl", [pref("q1", source="ultrachat"), pref("q2")])
    rows = sorted(prepare("--source", source, "--kind", "preference").all_rows(), key=lambda r: r["metadata"]["source"])
    assert [r["metadata"] for r in rows] == [
        {"source": f"{source}:1", "input_source": "ultrachat"},
        {"source": f"{source}:2"},
    ]


def test_message_key_order_does_not_hide_a_duplicate(prepare, tmp_path):
    reordered = pref("q1") | {"prompt": [{"content": "q1", "role": "user"}]}
    source = write_jsonl(tmp_path / "rows.jsonl", [pref("q1"), reordered, pref("q2"), pref("q3")])
    result = prepare("--source", source, "--kind", "preference")
    assert result.manifest["dropped"] == {"duplicate": 1}
    assert all(list(row["prompt"][0]) == ["role", "content"] for row in result.all_rows())


def test_parquet_message_structs_with_null_fields_read(prepare, tmp_path):
    # Parquet gives every struct in a column the same fields, so one message with a name gives all a null one.
    rows = [{"messages": [{"role": "user", "content": f"q{i}", "name": "ann" if i == 0 else None},
                          {"role": "assistant", "content": "a", "name": None}]} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    result = prepare("--source", tmp_path / "rows.parquet", "--kind", "sft", "--max-drop-fraction", "0.1")
    assert result.manifest["dropped"] == {"unsupported_field": 1}
    assert result.manifest["counts"]["kept"] == 9
    assert all(set(m) == {"role", "content"} for row in result.all_rows() for m in row["messages"])


def test_an_output_that_would_overwrite_a_source_is_refused(prepare, tmp_path, capsys):
    source = write_jsonl(tmp_path / "data" / "train.jsonl", [pref(f"q{i}") for i in range(4)])
    before = source.read_bytes()
    result = prepare("--source", tmp_path / "data", "--kind", "preference", output=tmp_path / "data")
    assert result.rc == 64
    assert f"--output {tmp_path / 'data'}: publishing there would overwrite the source {source}" in (
        capsys.readouterr().err
    )
    assert source.read_bytes() == before
