"""Readers: JSON arrays streamed with their line numbers, JSON lines, CSV, Parquet, gzip; source resolution."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubetune_trainer.data import sources
from kubetune_trainer.data.validate import RowError
from kubetune_trainer.errors import ConfigError, DataError


def read(path, tmp_path) -> list[tuple[int, object]]:
    return list(sources.records(f"file://{path}", tmp_path))


@pytest.mark.parametrize("chunk", [3, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_elements_stream_with_their_start_lines(tmp_path, monkeypatch, chunk, indent):
    monkeypatch.setattr(sources, "CHUNK", chunk)
    items = [{"text": f"问题 {i} \"quoted\" ]}}\n", "n": i, "nested": {"a": [1, {"b": "}"}]}} for i in range(25)]
    parts = [json.dumps(item, ensure_ascii=False, indent=indent) for item in items]
    path = tmp_path / "items.json"
    path.write_text("[\n" + ",\n".join(parts) + "\n]\n", encoding="utf-8")
    starts = [2 + sum(part.count("\n") + 1 for part in parts[:k]) for k in range(len(parts))]
    assert read(path, tmp_path) == list(zip(starts, items, strict=True))


def test_a_long_string_across_many_chunks_is_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK", 5)
    path = tmp_path / "long.json"
    path.write_text(json.dumps([{"text": "x" * 1000}, {"text": "y"}]))
    assert [v["text"][:1] for _, v in read(path, tmp_path)] == ["x", "y"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"a": 1},\n{"a": 2}', "2: the array is not closed with ]"),
        ('[{"a": 1}\n{"a": 2}]', "2: expected , or ] after an element, found '{'"),
        ('[{"a": 1}]\ntrailing', "2: unexpected text after the closing ]"),
        ('[\n{"a": 1},\n{"a": nope}]', "3: not valid JSON: Expecting value"),
    ],
)
def test_a_broken_array_names_the_line(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match=f"bad.json:{message}"):
        read(path, tmp_path)


def test_empty_array_and_empty_file_hold_no_records(tmp_path):
    (tmp_path / "empty.json").write_text(" [ ]\n")
    (tmp_path / "nothing.jsonl").write_text("")
    assert read(tmp_path / "empty.json", tmp_path) == []
    assert read(tmp_path / "nothing.jsonl", tmp_path) == []


def test_one_object_per_json_file_is_one_record(tmp_path):
    path = tmp_path / "record.json"
    path.write_text('\ufeff{\n "instruction": [{"subtype": "x"}],\n "input": {}\n}\n', encoding="utf-8")
    assert read(path, tmp_path) == [(1, {"instruction": [{"subtype": "x"}], "input": {}})]


def test_a_broken_single_document_is_one_broken_record(tmp_path):
    path = tmp_path / "record.json"
    path.write_text('{\n "a": 1,\n "b": \n}\n')
    [(line, error)] = read(path, tmp_path)
    assert line == 1 and isinstance(error, RowError) and error.reason == "broken_json"


def test_json_lines_under_a_json_name_and_blank_lines(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('\n{"a": 1}\n\n{"a": 2}\n{"a": \n')
    records = read(path, tmp_path)
    assert records[:2] == [(2, {"a": 1}), (4, {"a": 2})]
    assert records[2][0] == 5 and records[2][1].reason == "broken_json"


def test_bom_and_crlf_in_json_lines(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n')
    assert read(path, tmp_path) == [(1, {"a": 1}), (2, {"a": 2})]


def test_invalid_utf8_line_is_a_broken_row(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"a": "caf\xe9"}\n{"a": 1}\n')
    records = read(path, tmp_path)
    assert records[0][1].reason == "broken_json" and records[1] == (2, {"a": 1})


def test_gzip_is_recognised_by_name_or_by_its_magic(tmp_path):
    payload = b'{"a": 1}\n{"a": 2}\n'
    (tmp_path / "named.jsonl.gz").write_bytes(gzip.compress(payload))
    (tmp_path / "sniffed.jsonl").write_bytes(gzip.compress(payload))
    for name in ("named.jsonl.gz", "sniffed.jsonl"):
        assert read(tmp_path / name, tmp_path) == [(1, {"a": 1}), (2, {"a": 2})]


def test_csv_rows_carry_their_start_line_and_json_cells_are_decoded(tmp_path):
    path = tmp_path / "rows.csv"
    messages = json.dumps([{"role": "user", "content": "hi, there"}])
    path.write_text(
        "text,subtype\n"
        f'"{messages.replace(chr(34), chr(34) * 2)}",a\n'
        '"multi\nline",b\n'
        "[not json,c\n",
        encoding="utf-8",
    )
    assert read(path, tmp_path) == [
        (2, {"text": [{"role": "user", "content": "hi, there"}], "subtype": "a"}),
        (3, {"text": "multi\nline", "subtype": "b"}),
        (5, {"text": "[not json", "subtype": "c"}),
    ]


def test_parquet_rows_are_numbered(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    assert read(tmp_path / "rows.parquet", tmp_path) == list(enumerate(rows, 1))


def test_a_corrupt_parquet_file_is_a_data_error(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        read(tmp_path / "bad.parquet", tmp_path)


def test_directories_and_globs_resolve_to_data_files_in_order(tmp_path):
    for name in ("b.jsonl", "a.json", "sub/c.csv.gz", "sub/d.parquet", "dataset_info.json", "README.md", ".hidden.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    names = [uri.rsplit("/", 1)[1] for uri in sources.resolve([str(tmp_path)])]
    assert names == ["a.json", "b.jsonl", "c.csv.gz", "d.parquet"]
    globbed = sources.resolve([f"{tmp_path}/**/*.jsonl", f"file://{tmp_path}/b.jsonl"])
    assert globbed == [f"file://{tmp_path}/b.jsonl"]


def test_a_source_that_matches_nothing_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--source .*missing\.jsonl: no such file or directory"):
        sources.resolve([str(tmp_path / "missing.jsonl")])
    with pytest.raises(ConfigError, match=r"--source .*\*.parquet: no data file matches"):
        sources.resolve([f"{tmp_path}/*.parquet"])


def test_file_names_with_glob_and_uri_characters_are_read_as_given(tmp_path):
    folder = tmp_path / "数据 [v2]"
    folder.mkdir()
    for name in ("a [1].jsonl", "b%20c#d.jsonl"):
        (folder / name).write_text('{"a": 1}\n')
    for name in ("a [1].jsonl", "b%20c#d.jsonl"):
        [uri] = sources.resolve([str(folder / name)])
        assert sources.display(uri) == str(folder / name)
        assert list(sources.records(uri, tmp_path)) == [(1, {"a": 1})]
    listed = [sources.display(uri) for uri in sources.resolve([str(folder)])]
    assert listed == [str(folder / "a [1].jsonl"), str(folder / "b%20c#d.jsonl")]


def test_files_under_hidden_directories_are_skipped(tmp_path):
    for name in ("data.jsonl", ".ipynb_checkpoints/data-checkpoint.jsonl", "sub/.cache/x.jsonl", "sub/y.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    names = [sources.display(uri) for uri in sources.resolve([str(tmp_path)])]
    assert names == [str(tmp_path / "data.jsonl"), str(tmp_path / "sub/y.jsonl")]


def test_a_csv_header_naming_a_column_twice_is_an_error(tmp_path):
    (tmp_path / "dup.csv").write_text("prompt,chosen,chosen\nq,a,b\n")
    with pytest.raises(DataError, match=r"dup\.csv:1: the header names chosen twice"):
        read(tmp_path / "dup.csv", tmp_path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_text_is_an_error_that_says_so(tmp_path, encoding):
    path = tmp_path / "wide.jsonl"
    path.write_bytes(("\ufeff" if encoding.endswith("be") else "").encode(encoding) + '{"a": 1}\n'.encode(encoding))
    with pytest.raises(DataError, match=r"wide\.jsonl: UTF-16 text \(it starts with a UTF-16 byte-order mark\)"):
        read(path, tmp_path)


def test_json_lines_under_a_json_name_with_a_broken_first_line_keep_the_rest(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('{"a": "cut\n\n{"a": 2}\n{"a": 3}\n')
    records = read(path, tmp_path)
    assert records[0][0] == 1 and records[0][1].reason == "broken_json"
    assert records[1:] == [(3, {"a": 2}), (4, {"a": 3})]


def test_nan_in_a_parquet_row_is_a_counted_drop_not_a_null(tmp_path):
    rows = [{"text": "a", "score": 0.5, "tags": []}, {"text": "b", "score": float("nan"), "tags": []},
            {"text": "c", "score": 1.0, "tags": [{"w": 2.0}, {"w": float("-inf")}]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    found = read(tmp_path / "rows.parquet", tmp_path)
    assert found[0] == (1, rows[0])
    assert [(line, e.reason, e.detail) for line, e in found[1:]] == [
        (2, "unsupported_field", "score is nan, which JSON cannot hold"),
        (3, "unsupported_field", "tags[1].w is -inf, which JSON cannot hold"),
    ]


def test_a_linked_folder_is_read_each_real_folder_once(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "b.jsonl").write_text('{"b": 1}\n')
    (tmp_path / "src" / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "src" / "loop").symlink_to(tmp_path / "src", target_is_directory=True)
    names = [sources.display(uri) for uri in sources.resolve([str(tmp_path / "src")])]
    # Named where the rows really are.
    assert names == [str(tmp_path / "src" / "b.jsonl"), str(tmp_path / "real" / "a.jsonl")]


@pytest.mark.parametrize("given", ["folder", "glob", "file"])
def test_a_link_to_nothing_is_an_error_naming_it(tmp_path, given):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "b.jsonl").write_text('{"b": 1}\n')
    (tmp_path / "src" / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")
    spec = {"folder": tmp_path / "src", "glob": tmp_path / "src" / "*.jsonl", "file": tmp_path / "src" / "gone.jsonl"}[given]
    with pytest.raises(DataError, match=rf"gone.jsonl: a symbolic link to {tmp_path}/deleted.jsonl, which does not exist"):
        sources.resolve([str(spec)])


def test_a_link_to_nothing_that_holds_no_rows_is_left_out_like_other_such_files(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"b": 1}\n')
    (tmp_path / "README.md").symlink_to(tmp_path / "deleted.md")
    assert [sources.display(uri) for uri in sources.resolve([str(tmp_path)])] == [str(tmp_path / "b.jsonl")]
