"""Base models and chains: the scratch copies of an s3:// base and of a merged true base follow
what S3 holds, not just the URI."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from kubetune_trainer import storage
from kubetune_trainer.artifacts.lineage import MergedAdapter
from kubetune_trainer.recipes import modeling
from tests.unit.trainer.artifacts.test_materialize import count_downloads, upload_model


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
