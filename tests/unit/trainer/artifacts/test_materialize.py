"""The scratch copy of an s3:// model follows what S3 holds, not just the URI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_trainer import storage
from kubetune_trainer.artifacts.materialize import materialize_dir
from kubetune_trainer.errors import BaseModelMissing, StorageError


def upload_model(uri: str, weights: bytes) -> None:
    storage.write_text(storage.join(uri, "config.json"), json.dumps({"model_type": "llama"}))
    storage.write_bytes(storage.join(uri, "model.safetensors"), weights)


def count_downloads(monkeypatch) -> list[str]:
    downloaded: list[str] = []
    real = storage.download_file

    def download_file(uri: str, local: Path) -> Path:
        downloaded.append(uri.rsplit("/", 1)[1])
        return real(uri, local)

    monkeypatch.setattr(storage, "download_file", download_file)
    return downloaded


def test_an_s3_prefix_with_nothing_under_it_is_a_missing_model(s3_bucket, tmp_path):
    with pytest.raises(BaseModelMissing, match="start_from: s3://"):
        materialize_dir(f"s3://{s3_bucket}/adapters/none", tmp_path, "start_from")


def test_replacing_a_stale_copy_leaves_other_models_alone(s3_bucket, tmp_path):
    cache = tmp_path / "cache"
    models = {name: f"s3://{s3_bucket}/{name}" for name in ("base", "base@2", "base/sub")}
    for uri in models.values():
        upload_model(uri, b"weights")
    kept = {name: materialize_dir(uri, cache, "base_model") for name, uri in models.items()}
    storage.write_bytes(storage.join(models["base"], "model.safetensors"), b"changed")
    materialize_dir(models["base"], cache, "base_model")
    assert not kept["base"].exists()
    assert all((kept[name] / "model.safetensors").read_bytes() == b"weights" for name in ("base@2", "base/sub"))


def test_an_s3_failure_is_a_storage_error_to_retry_not_a_missing_model(tmp_path, monkeypatch):
    class Unreachable:
        def get_paginator(self, _):
            raise ConnectionError("could not connect to the endpoint URL")

    monkeypatch.setattr(storage, "_s3", lambda: Unreachable())
    with pytest.raises(StorageError, match="could not connect") as raised:
        materialize_dir("s3://models/base", tmp_path, "base_model")
    assert not isinstance(raised.value, BaseModelMissing)
