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


def test_pods_sharing_a_model_cache_download_a_model_once(s3_bucket, tmp_path, monkeypatch):
    import threading

    shared = tmp_path / "model-cache"
    shared.mkdir()
    monkeypatch.setenv("KUBETUNE_MODEL_CACHE", str(shared))
    uri = f"s3://{s3_bucket}/base70b"
    upload_model(uri, b"weights")
    downloaded = count_downloads(monkeypatch)
    # Eight pods start together, each with its own scratch: one downloads, the others wait for it.
    found: list[Path] = []
    pods = [threading.Thread(target=lambda i=i: found.append(materialize_dir(uri, tmp_path / f"scratch{i}", "base_model")))
            for i in range(8)]
    for pod in pods:
        pod.start()
    for pod in pods:
        pod.join(timeout=120)
    assert len(found) == 8 and len(set(found)) == 1 and found[0].is_relative_to(shared)
    assert sorted(downloaded) == ["config.json", "model.safetensors"]
    assert not list(shared.rglob("*.lock"))
    assert not any((tmp_path / f"scratch{i}").exists() for i in range(8))


def test_a_read_only_model_cache_is_read_when_it_holds_the_model(s3_bucket, tmp_path, monkeypatch):
    shared = tmp_path / "model-cache"
    shared.mkdir()
    uri = f"s3://{s3_bucket}/base"
    upload_model(uri, b"weights")
    monkeypatch.setenv("KUBETUNE_MODEL_CACHE", str(shared))
    filled = materialize_dir(uri, tmp_path / "filler", "base_model")
    # spec.pod.modelCache.readOnly (the operator says so: a root process could write all the same).
    monkeypatch.setenv("KUBETUNE_MODEL_CACHE_READ_ONLY", "1")
    downloaded = count_downloads(monkeypatch)
    assert materialize_dir(uri, tmp_path / "pod", "base_model") == filled and downloaded == []
    # Another model is not in it, and the cache may not take it: the pod downloads into its scratch.
    upload_model(f"s3://{s3_bucket}/other", b"other")
    private = materialize_dir(f"s3://{s3_bucket}/other", tmp_path / "pod", "base_model")
    assert private.is_relative_to(tmp_path / "pod") and downloaded
    assert not (shared / s3_bucket / "other").exists() and not list(shared.glob(f"{s3_bucket}/other@*"))


def test_a_lock_left_by_a_dead_pod_is_taken_over(s3_bucket, tmp_path, monkeypatch):
    import os

    from kubetune_trainer.artifacts import materialize

    shared = tmp_path / "model-cache"
    shared.mkdir()
    monkeypatch.setenv("KUBETUNE_MODEL_CACHE", str(shared))
    monkeypatch.setattr(materialize, "SHARED_POLL_S", 0.01)
    uri = f"s3://{s3_bucket}/base"
    upload_model(uri, b"weights")
    version = storage.s3_version(uri)
    lock = shared / s3_bucket / f"base@{version}.lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    stale = lock.stat().st_mtime - materialize.SHARED_WAIT_S - 1
    os.utime(lock, (stale, stale))
    assert materialize_dir(uri, tmp_path / "pod", "base_model").is_relative_to(shared)
    assert not lock.exists()
