"""The pipeline's own guarantees: metadata.source is always the file and line, and duplicates are found by content."""

from __future__ import annotations

from .conftest import pref, write_jsonl


def test_an_input_source_field_does_not_hide_the_file_and_line(prepare, tmp_path):
    source = write_jsonl(tmp_path / "rows.jsonl", [pref("q1", source="ultrachat"), pref("q2")])
    rows = sorted(prepare("--source", source, "--kind", "preference").all_rows(), key=lambda r: r["metadata"]["source"])
    assert [r["metadata"] for r in rows] == [
        {"source": f"{source}:1", "input_source": "ultrachat"},
        {"source": f"{source}:2"},
    ]
