"""The scratch copies evaluation loads follow what S3 holds, not just the URIs (as training's do)."""

from __future__ import annotations

from pathlib import Path

from kubetune_trainer import storage
from kubetune_trainer.eval.candidates import MergedAdapter, TrueBase, build_base
from tests.unit.trainer.recipes.test_modeling_cache import count_downloads

WEIGHTS = "model.safetensors"


def test_an_s3_base_is_downloaded_once_per_version(lineage_models, s3_bucket, tmp_path, monkeypatch):
    uri = f"s3://{s3_bucket}/models/base"
    storage.upload_dir(lineage_models.base, uri)
    downloaded = count_downloads(monkeypatch)

    first = Path(build_base(TrueBase(uri), tmp_path))
    assert WEIGHTS in downloaded
    downloaded.clear()
    assert Path(build_base(TrueBase(uri), tmp_path)) == first
    assert downloaded == []

    storage.upload_file(lineage_models.merged / WEIGHTS, storage.join(uri, WEIGHTS))
    second = Path(build_base(TrueBase(uri), tmp_path))
    assert (second / WEIGHTS).read_bytes() == (lineage_models.merged / WEIGHTS).read_bytes()
    assert not first.exists()


def test_the_merged_base_is_rebuilt_when_the_s3_base_is_overwritten(lineage_models, s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket}/models/base"
    storage.upload_dir(lineage_models.base, uri)
    base = TrueBase(uri, (MergedAdapter(f"file://{lineage_models.sft}", lineage_models.sft_sha),))

    first = Path(build_base(base, tmp_path))
    old = (first / WEIGHTS).read_bytes()
    assert Path(build_base(base, tmp_path)) == first

    # Other weights of the same shape at the same URI (the base with the SFT adapter merged in).
    storage.upload_file(lineage_models.merged / WEIGHTS, storage.join(uri, WEIGHTS))
    second = Path(build_base(base, tmp_path))
    assert second != first
    assert (second / WEIGHTS).read_bytes() != old, "the merge of the old base weights was reused"
    assert not first.exists(), "the stale merged base is left behind in scratch"
    assert [p.name for p in (tmp_path / "merged-bases").iterdir()] == [second.name]
