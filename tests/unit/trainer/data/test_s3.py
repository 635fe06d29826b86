"""S3 round trip against a moto server on 127.0.0.1: prefixes, globs, gzip and Parquet in; a dataset out."""

from __future__ import annotations

import gzip
import hashlib
import io
import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

from kubetune_trainer import storage
from kubetune_trainer.data import sources as sources_module

from .conftest import pref


def put(bucket: str, key: str, body: bytes) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def test_s3_sources_to_an_s3_dataset(prepare, s3_bucket, monkeypatch):
    put(s3_bucket, "in/part-1.jsonl", jsonl([pref(f"q{i}") for i in range(10)]))
    put(s3_bucket, "in/part-2.jsonl.gz", gzip.compress(jsonl([pref(f"r{i}") for i in range(10)])))
    put(s3_bucket, "in/part-3.parquet", parquet([pref(f"s{i}") for i in range(10)]))
    put(s3_bucket, "in/README.md", b"not data")
    put(s3_bucket, "in/.staging-x/train.jsonl", jsonl([pref("hidden")]))
    output = f"s3://{s3_bucket}/out/ds"
    put(s3_bucket, "out/ds/manifest.json", b'{"stale": true}')

    uploads = []
    real_upload = storage.upload_file

    def watched(local, uri):
        uploads.append((uri.rsplit("/", 1)[1], storage.exists(f"{output}/manifest.json")))
        real_upload(local, uri)

    monkeypatch.setattr(storage, "upload_file", watched)
    result = prepare("--source", f"s3://{s3_bucket}/in/", "--kind", "preference", "--test-fraction", "0.2",
                     output=output)
    assert result.rc == 0
    assert uploads == [("test.jsonl", False), ("train.jsonl", False), ("manifest.json", False)]

    manifest = json.loads(storage.read_text(f"{output}/manifest.json"))
    assert manifest["counts"] == {"train": 24, "test": 6, "read": 30, "kept": 30, "dropped": 0}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256(storage.read_bytes(f"{output}/{name}")).hexdigest() == sha
    rows = [json.loads(line) for line in storage.read_text(f"{output}/train.jsonl").splitlines()]
    sources = {row["metadata"]["source"].rsplit(":", 1)[0] for row in rows}
    assert sources == {f"s3://{s3_bucket}/in/part-{n}" + ext for n, ext in ((1, ".jsonl"), (2, ".jsonl.gz"), (3, ".parquet"))}
    assert result.termination["output"] == output


def test_s3_globs_and_dataset_info_beside_the_data(prepare, s3_bucket, tmp_path):
    put(s3_bucket, "lf/dataset_info.json", json.dumps({"d": {
        "file_name": "data/pairs.json", "ranking": True,
        "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
    }}).encode())
    pairs = [{"instruction": f"i{n}", "input": "x", "chosen": "a", "rejected": "b"} for n in range(8)]
    put(s3_bucket, "lf/data/pairs.json", json.dumps(pairs, indent=1).encode())
    result = prepare("--dataset-info", f"s3://{s3_bucket}/lf/dataset_info.json", "--dataset", "d",
                     "--kind", "preference", output=tmp_path / "local-out")
    assert result.rc == 0
    assert result.manifest["counts"]["kept"] == 8
    assert result.all_rows()[0]["metadata"]["source"].startswith(f"s3://{s3_bucket}/lf/data/pairs.json:")

    put(s3_bucket, "many/a-1.jsonl", jsonl([pref("x1"), pref("x2")]))
    put(s3_bucket, "many/a-2.jsonl", jsonl([pref("y1")]))
    put(s3_bucket, "many/b-1.jsonl", jsonl([pref("z1")]))
    put(s3_bucket, "many/a-old/a-3.jsonl", jsonl([pref("w1")]))
    put(s3_bucket, "many/.hidden/a-4.jsonl", jsonl([pref("w2")]))
    globbed = prepare("--source", f"s3://{s3_bucket}/many/a-*.jsonl", "--kind", "preference")
    assert [s["source"].rsplit("/", 1)[1] for s in globbed.manifest["sources"]] == ["a-1.jsonl", "a-2.jsonl"]
    # As glob.glob matches local paths: * stays within a segment, ** spans them, hidden names need a dot.
    recursive = sources_module.resolve([f"s3://{s3_bucket}/many/**/a-*.jsonl"])
    assert [uri.split("/many/")[1] for uri in recursive] == ["a-1.jsonl", "a-2.jsonl", "a-old/a-3.jsonl"]


def test_a_missing_s3_source_is_a_config_error(prepare, s3_bucket, capsys):
    result = prepare("--source", f"s3://{s3_bucket}/nothing/here.jsonl", "--kind", "sft")
    assert result.rc == 64
    assert f"--source s3://{s3_bucket}/nothing/here.jsonl: no such object or prefix" in capsys.readouterr().err
