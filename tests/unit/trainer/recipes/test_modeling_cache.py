"""The scratch cache of s3:// models follows what S3 holds, not just the URI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubetune_trainer import storage
from kubetune_trainer.errors import BaseModelMissing, StorageError
from kubetune_trainer.recipes import modeling
from kubetune_trainer.recipes.lineage import MergedAdapter


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


def test_an_unchanged_s3_model_is_downloaded_once_and_an_overwritten_one_again(s3_bucket, tmp_path, monkeypatch):
    uri = f"s3://{s3_bucket}/models/base"
    cache = tmp_path / "cache"
    downloaded = count_downloads(monkeypatch)
    upload_model(uri, b"old weights")

    first = Path(modeling.resolve_base(uri, cache)[0])
    assert (first / "model.safetensors").read_bytes() == b"old weights"
    assert sorted(downloaded) == ["config.json", "model.safetensors"]

    downloaded.clear()
    assert Path(modeling.resolve_base(uri, cache)[0]) == first
    assert downloaded == []

    # New weights of the very same size under the same key: only the ETag tells them apart.
    storage.write_bytes(storage.join(uri, "model.safetensors"), b"new weights")
    second = Path(modeling.resolve_base(uri, cache)[0])
    assert (second / "model.safetensors").read_bytes() == b"new weights"
    assert sorted(downloaded) == ["config.json", "model.safetensors"]
    assert not first.exists(), "the stale copy is left behind in scratch"


def test_an_s3_prefix_with_nothing_under_it_is_a_missing_model(s3_bucket, tmp_path):
    with pytest.raises(BaseModelMissing, match="start_from: s3://"):
        modeling.materialize_dir(f"s3://{s3_bucket}/adapters/none", tmp_path, "start_from")


def test_the_merged_true_base_is_rebuilt_when_the_s3_base_changes(s3_bucket, tmp_path, monkeypatch):
    uri = f"s3://{s3_bucket}/models/base"
    cache = tmp_path / "cache"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    merged_from: list[bytes] = []

    class Saved:
        def __init__(self, name: str, content: bytes) -> None:
            self.name, self.content = name, content

        def save_pretrained(self, target: Path) -> None:
            Path(target).mkdir(parents=True, exist_ok=True)
            Path(target, self.name).write_bytes(self.content)

    def load_model(path: str, uri: str, dtype):
        merged_from.append(Path(path, "model.safetensors").read_bytes())
        return Saved("model.safetensors", merged_from[-1])

    monkeypatch.setattr(modeling, "load_model", load_model)
    monkeypatch.setattr(modeling, "merge_adapters", lambda model, dirs: model)
    monkeypatch.setattr(modeling, "load_tokenizer", lambda path, uri: Saved("tokenizer.json", b"{}"))
    monkeypatch.setattr(modeling, "verify_adapter", lambda directory, uri, sha256: sha256)
    chain = [MergedAdapter(f"file://{adapter}", "sha")]
    args = SimpleNamespace()

    def true_base() -> bytes:
        path, _ = modeling.build_true_base(modeling.resolve_base(uri, cache)[0], uri, chain, cache, args)
        return Path(path, "model.safetensors").read_bytes()

    upload_model(uri, b"old weights")
    assert true_base() == b"old weights"
    assert true_base() == b"old weights"
    assert merged_from == [b"old weights"]
    storage.write_bytes(storage.join(uri, "model.safetensors"), b"new weights")
    assert true_base() == b"new weights"
    assert merged_from == [b"old weights", b"new weights"]


def test_replacing_a_stale_copy_leaves_other_models_alone(s3_bucket, tmp_path):
    cache = tmp_path / "cache"
    models = {name: f"s3://{s3_bucket}/{name}" for name in ("base", "base@2", "base/sub")}
    for uri in models.values():
        upload_model(uri, b"weights")
    kept = {name: modeling.materialize_dir(uri, cache, "base_model") for name, uri in models.items()}
    storage.write_bytes(storage.join(models["base"], "model.safetensors"), b"changed")
    modeling.materialize_dir(models["base"], cache, "base_model")
    assert not kept["base"].exists()
    assert all((kept[name] / "model.safetensors").read_bytes() == b"weights" for name in ("base@2", "base/sub"))


def test_an_s3_failure_is_a_storage_error_to_retry_not_a_missing_model(tmp_path, monkeypatch):
    class Unreachable:
        def get_paginator(self, _):
            raise ConnectionError("could not connect to the endpoint URL")

    monkeypatch.setattr(storage, "_s3", lambda: Unreachable())
    with pytest.raises(StorageError, match="could not connect") as raised:
        modeling.materialize_dir("s3://models/base", tmp_path, "base_model")
    assert not isinstance(raised.value, BaseModelMissing)
