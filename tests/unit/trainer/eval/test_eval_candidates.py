from __future__ import annotations

import json
import shutil

import pytest

from kubetune_trainer.artifacts.lineage import MergedAdapter, TrueBase
from kubetune_trainer.errors import AdapterBaseMismatch, BaseModelMissing, ConfigError, DataError
from kubetune_trainer.eval.candidates import build_base, resolve_candidate
from kubetune_trainer.eval.config import CandidateConfig
from kubetune_trainer.exitcodes import ExitCode


def resolve(**fields):
    return resolve_candidate(CandidateConfig(name="c", **fields), 0, baseline=False)


def test_a_base_model_runs_as_itself(lineage_models):
    candidate = resolve(model=str(lineage_models.base))
    assert candidate.kind == "model"
    assert candidate.base == TrueBase(f"file://{lineage_models.base}")


def test_an_adapter_without_model_runs_on_its_recorded_base(lineage_models):
    candidate = resolve(adapter=str(lineage_models.sft))
    assert candidate.kind == "adapter" and candidate.verified
    assert candidate.base == TrueBase(f"file://{lineage_models.base}")
    assert candidate.lineage["method"] == "sft"


def test_a_chain_adapter_without_model_runs_on_base_plus_chain(lineage_models):
    candidate = resolve(adapter=f"file://{lineage_models.dpo}")
    assert candidate.base.base_model == f"file://{lineage_models.base}"
    assert [a.uri for a in candidate.base.merged_adapters] == [f"file://{lineage_models.sft}"]
    assert candidate.base.merged_adapters[0].sha256 == lineage_models.sft_sha


def test_the_seed003_pitfall_is_refused(lineage_models):
    """A DPO adapter trained on base+SFT, put onto the original base, must not be evaluated."""
    with pytest.raises(AdapterBaseMismatch) as caught:
        resolve(adapter=str(lineage_models.dpo), model=str(lineage_models.base))
    assert caught.value.exit_code == ExitCode.ADAPTER_BASE_MISMATCH == 70
    message = caught.value.message
    assert f"was trained on file://{lineage_models.base} + file://{lineage_models.sft}" in message
    assert f"but `model` is file://{lineage_models.base}" in message
    assert "Omit `model`" in message


def test_an_adapter_on_another_model_is_refused(lineage_models, tmp_path):
    other = shutil.copytree(lineage_models.base, tmp_path / "other")
    with pytest.raises(AdapterBaseMismatch, match=f"was trained on file://{lineage_models.base}"):
        resolve(adapter=str(lineage_models.sft), model=str(other))


def test_a_jobs_merged_model_is_base_plus_its_chain_plus_its_adapter(lineage_models):
    # sft/merged is base + sft: exactly the DPO adapter's true base.
    candidate = resolve(adapter=str(lineage_models.dpo), model=str(lineage_models.merged))
    assert candidate.verified
    assert candidate.base == TrueBase(f"file://{lineage_models.merged}")
    merged_alone = resolve(model=str(lineage_models.merged))
    assert merged_alone.kind == "merged"
    assert merged_alone.base == TrueBase(f"file://{lineage_models.merged}")


def test_an_adapter_trained_on_a_merged_model_runs_on_that_model_when_named(lineage_models, tmp_path):
    # A job whose base_model was another job's merged/ output records that directory as its base.
    adapter = shutil.copytree(lineage_models.dpo, tmp_path / "final")
    merged_uri = f"file://{lineage_models.merged}"
    (adapter / "kubetune.json").write_text(
        json.dumps({"type": "adapter", "method": "dpo", "baseModel": merged_uri, "mergedAdapters": []})
    )
    candidate = resolve(adapter=str(adapter), model=str(lineage_models.merged))
    assert candidate.verified and candidate.base == TrueBase(merged_uri)
    assert resolve(adapter=str(adapter)).base == TrueBase(merged_uri)
    with pytest.raises(AdapterBaseMismatch):
        resolve(adapter=str(adapter), model=str(lineage_models.base))


def test_an_adapter_on_a_merged_model_that_already_holds_it_is_refused(lineage_models):
    # dpo/merged records the DPO job's lineage (base + sft) but also holds the DPO adapter itself.
    with pytest.raises(AdapterBaseMismatch) as caught:
        resolve(adapter=str(lineage_models.dpo), model=str(lineage_models.dpo_merged))
    assert f"+ file://{lineage_models.dpo}" in caught.value.message


def test_an_adapter_without_lineage_needs_model_and_is_marked_unverified(lineage_models):
    with pytest.raises(ConfigError, match=r"candidates\[0\] \(c\)\.model: adapter .* has no kubetune.json"):
        resolve(adapter=str(lineage_models.bare))
    candidate = resolve(adapter=str(lineage_models.bare), model=str(lineage_models.base))
    assert not candidate.verified
    assert "could not be verified" in candidate.warnings[0]
    assert str(lineage_models.base) in candidate.warnings[0]


def test_missing_models_and_adapters_are_named(lineage_models, tmp_path):
    with pytest.raises(BaseModelMissing, match="no model there"):
        resolve(model=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="no adapter at"):
        resolve(adapter=str(tmp_path / "nothing"))
    moved = shutil.copytree(lineage_models.sft, tmp_path / "sft")
    (moved / "kubetune.json").write_text(
        json.dumps({"type": "adapter", "baseModel": f"file://{tmp_path}/gone"})
    )
    with pytest.raises(BaseModelMissing, match="gone"):
        resolve(adapter=str(moved))
    (moved / "kubetune.json").write_text("{not json")
    with pytest.raises(DataError, match=r"kubetune\.json: not valid JSON"):
        resolve(adapter=str(moved))


def test_build_base_merges_the_chain_exactly_once(lineage_models, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    base = resolve(adapter=str(lineage_models.dpo)).base
    built = build_base(base, tmp_path)
    assert build_base(base, tmp_path) == built
    ours = AutoModelForCausalLM.from_pretrained(built).state_dict()
    reference = AutoModelForCausalLM.from_pretrained(lineage_models.merged).state_dict()
    assert ours.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(ours[name], tensor, msg=name)


def test_build_base_refuses_a_chain_adapter_that_changed(lineage_models, tmp_path):
    changed = TrueBase(
        f"file://{lineage_models.base}", (MergedAdapter(f"file://{lineage_models.sft}", "0" * 64),)
    )
    with pytest.raises(AdapterBaseMismatch, match="has changed since"):
        build_base(changed, tmp_path)


def test_a_missing_model_beside_an_adapter_is_named(lineage_models, tmp_path):
    with pytest.raises(BaseModelMissing, match="nothing: no model there"):
        resolve(adapter=str(lineage_models.bare), model=str(tmp_path / "nothing"))
