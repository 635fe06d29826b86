"""SFT -> DPO chains: the DPO job trains on base + SFT merged and its lineage says so."""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from kubetune_trainer import storage
from kubetune_trainer.artifacts.lineage import ADAPTER_WEIGHTS
from kubetune_trainer.errors import AdapterBaseMismatch, ConfigError
from kubetune_trainer.recipes import train


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def test_sft_then_dpo_records_and_uses_the_merged_base(make_config, trainer_env, tmp_path, tiny_model_dir):
    sft_out, dpo_out = tmp_path / "sft", tmp_path / "dpo"
    train(make_config("sft", output=str(sft_out), max_steps=3, save_steps=3, learning_rate=2e-2))
    sft_final = f"file://{sft_out}/final"
    summary = train(
        make_config(
            "dpo", output=str(dpo_out), start_from=sft_final, max_steps=3, save_steps=3, merge_final=True
        )
    )

    sft_sha = storage.sha256_file(sft_out / "final" / ADAPTER_WEIGHTS)
    lineage = json.loads((dpo_out / "final" / "kubetune.json").read_text())
    assert lineage["baseModel"] == f"file://{tiny_model_dir}"
    assert lineage["mergedAdapters"] == [{"uri": sft_final, "sha256": sft_sha}]
    assert lineage["referenceModel"] == "base + mergedAdapters, adapter disabled"
    assert summary["trueBase"] == {
        "baseModel": lineage["baseModel"],
        "mergedAdapters": lineage["mergedAdapters"],
    }
    checkpoint_lineage = json.loads(
        (dpo_out / "checkpoints" / "checkpoint-000003" / "kubetune.json").read_text()
    )
    assert checkpoint_lineage["mergedAdapters"] == lineage["mergedAdapters"]
    assert summary["merged"] == f"file://{dpo_out}/merged"
    assert json.loads((dpo_out / "merged" / "kubetune.json").read_text())["type"] == "merged"

    # merged/ is exactly base + SFT + DPO; the DPO adapter on the plain base is a different model.
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    true_base = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), sft_out / "final"
    )
    by_hand = PeftModel.from_pretrained(true_base.merge_and_unload(), dpo_out / "final").merge_and_unload()
    merged = AutoModelForCausalLM.from_pretrained(dpo_out / "merged")
    assert torch.allclose(logits(merged, ids), logits(by_hand, ids), atol=1e-5)
    wrong_base = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), dpo_out / "final"
    )
    assert not torch.allclose(logits(wrong_base, ids), logits(by_hand, ids), atol=1e-3)

    # A third link must keep the base, and finds out when a link of its chain was replaced.
    other_base = shutil.copytree(tiny_model_dir, tmp_path / "other-base")
    with pytest.raises(AdapterBaseMismatch, match=r"was trained on .* but base_model is"):
        train(
            make_config(
                "dpo",
                base_model=str(other_base),
                start_from=f"file://{dpo_out}/final",
                output=str(tmp_path / "x"),
            )
        )
    (sft_out / "final" / ADAPTER_WEIGHTS).write_bytes(b"replaced")
    with pytest.raises(
        AdapterBaseMismatch, match=f"{sft_final}/{ADAPTER_WEIGHTS} has sha256 .* chain recorded {sft_sha}"
    ):
        train(make_config("dpo", start_from=f"file://{dpo_out}/final", output=str(tmp_path / "y")))


def test_start_from_must_be_a_kubetune_adapter(make_config, trainer_env, tmp_path):
    with pytest.raises(ConfigError, match=r"start_from: .* has no readable kubetune.json"):
        train(make_config("dpo", start_from=str(tmp_path / "nowhere")))
