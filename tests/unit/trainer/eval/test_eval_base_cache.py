"""The scratch copies evaluation loads follow what S3 holds, not just the URIs (as training's do)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_trainer import storage
from kubetune_trainer.artifacts.lineage import MergedAdapter, TrueBase
from kubetune_trainer.errors import AdapterBaseMismatch
from kubetune_trainer.eval.candidates import build_base, resolve_candidate
from kubetune_trainer.eval.config import CandidateConfig
from tests.unit.trainer.artifacts.test_materialize import count_downloads

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


def test_an_adapter_whose_s3_base_changed_since_training_is_refused(lineage_models, s3_bucket):
    base = f"s3://{s3_bucket}/models/base"
    storage.upload_dir(lineage_models.base, base)
    adapter = f"s3://{s3_bucket}/jobs/sft/final"
    storage.upload_dir(lineage_models.sft, adapter)
    lineage = {"type": "adapter", "method": "sft", "baseModel": base, "mergedAdapters": [],
               "baseModelVersion": storage.s3_version(base)}
    storage.write_text(storage.join(adapter, "kubetune.json"), json.dumps(lineage))
    config = CandidateConfig(name="sft", adapter=adapter)
    assert resolve_candidate(config, 0, baseline=False).base == TrueBase(base)

    storage.upload_file(lineage_models.merged / WEIGHTS, storage.join(base, WEIGHTS))
    with pytest.raises(AdapterBaseMismatch, match=f"trained on {base} as it was then .* have changed since"):
        resolve_candidate(config, 0, baseline=False)
