"""One model of `kubetune.json`: what training writes is what evaluation reads back."""

from __future__ import annotations

import json

import pytest

from kubetune_trainer.artifacts.lineage import LINEAGE_FILE, Lineage, MergedAdapter, TrueBase
from kubetune_trainer.errors import DataError

SFT = MergedAdapter("s3://art/ns/finetunejobs/sft/final", "a" * 64)


def test_a_written_lineage_reads_back_as_the_same_true_base(tmp_path):
    true_base = TrueBase("s3://models/qwen", (SFT,))
    Lineage(
        type="adapter",
        method="dpo",
        true_base=true_base,
        base_model_version="0123456789abcdef",
        reference_model="base + mergedAdapters, adapter disabled",
        dataset_fingerprint="sha256:f",
        job={"namespace": "team", "name": "dpo"},
    ).write(tmp_path)
    document = json.loads((tmp_path / LINEAGE_FILE).read_text())
    # The field names of docs/contracts.md §6.
    assert document == {
        "type": "adapter",
        "method": "dpo",
        "baseModel": "s3://models/qwen",
        "mergedAdapters": [{"uri": SFT.uri, "sha256": SFT.sha256}],
        "baseModelVersion": "0123456789abcdef",
        "referenceModel": "base + mergedAdapters, adapter disabled",
        "datasetFingerprint": "sha256:f",
        "job": {"namespace": "team", "name": "dpo"},
    }
    assert TrueBase.from_json(document, "kubetune.json") == true_base


def test_reading_normalizes_uris_so_that_one_location_compares_equal(tmp_path):
    document = {"baseModel": str(tmp_path), "mergedAdapters": [{"uri": f"{tmp_path}/sft/final/"}]}
    read = TrueBase.from_json(document, "kubetune.json")
    assert read == TrueBase(f"file://{tmp_path}", (MergedAdapter(f"file://{tmp_path}/sft/final"),))
    assert read.same_as(TrueBase(f"file://{tmp_path}", (MergedAdapter(f"file://{tmp_path}/sft/final", "b"),)))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"mergedAdapters": []}, "`baseModel` is missing"),
        ({"baseModel": "s3://m", "mergedAdapters": [{"sha256": "x"}]}, "`mergedAdapters` must be a list"),
        ({"baseModel": "s3://m", "mergedAdapters": "s3://a"}, "`mergedAdapters` must be a list"),
    ],
)
def test_a_malformed_lineage_names_the_file_and_field(document, message):
    with pytest.raises(DataError, match=f"^final/kubetune.json: {message}"):
        TrueBase.from_json(document, "final/kubetune.json")
