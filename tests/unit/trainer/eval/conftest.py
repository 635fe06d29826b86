"""Fixtures for the evaluation tests: adapters with lineage, built with peft on the tiny model.

The training side writes `final/kubetune.json`; these tests write it themselves, in the shape
docs/contracts.md §6 fixes, so that lineage checks are tested on their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubetune_trainer import storage


def write_lineage(directory: Path, **fields) -> None:
    (directory / "kubetune.json").write_text(json.dumps(fields), encoding="utf-8")


def make_adapter(model_dir: Path, output: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) weights, so that it changes the model's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(output)
    return output


def merge(model_dir: Path, adapter_dir: Path, output: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir)
    model.merge_and_unload().save_pretrained(output)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(output)
    return output


@pytest.fixture(scope="session")
def lineage_models(tiny_model_dir, tmp_path_factory) -> SimpleNamespace:
    """Two chained jobs laid out as training writes them (contracts §6), plus an adapter without lineage.

    sft/final: adapter on base; sft/merged: base + sft; dpo/final: adapter trained on base + sft;
    dpo/merged: base + sft + dpo; bare: an adapter with no kubetune.json.
    """
    root = tmp_path_factory.mktemp("lineage")
    base = tiny_model_dir
    base_uri = f"file://{base}"
    sft = make_adapter(base, root / "sft" / "final", seed=1)
    sft_lineage = {"type": "adapter", "method": "sft", "baseModel": base_uri, "mergedAdapters": []}
    write_lineage(sft, **sft_lineage)
    sft_sha = storage.sha256_file(sft / "adapter_model.safetensors")
    merged = merge(base, sft, root / "sft" / "merged")
    write_lineage(merged, **(sft_lineage | {"type": "merged"}))
    dpo = make_adapter(merged, root / "dpo" / "final", seed=2)
    dpo_lineage = {
        "type": "adapter",
        "method": "dpo",
        "baseModel": base_uri,
        "mergedAdapters": [{"uri": f"file://{sft}", "sha256": sft_sha}],
    }
    write_lineage(dpo, **dpo_lineage)
    dpo_merged = merge(merged, dpo, root / "dpo" / "merged")
    write_lineage(dpo_merged, **(dpo_lineage | {"type": "merged"}))
    bare = make_adapter(base, root / "bare", seed=3)
    return SimpleNamespace(
        base=base, sft=sft, merged=merged, dpo=dpo, dpo_merged=dpo_merged, bare=bare, sft_sha=sft_sha
    )


class ScriptedEngine:
    """An engine whose answers the test decides, through the same interface as the real ones.

    `script(prompt_text, adapter, model_path) -> (answer, ended_at_eos)`; the tokenizer is the
    model's own, so prompts are rendered exactly as for a real engine.
    """

    def __init__(self, model_path, adapters, options, script):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model_path = model_path
        self.adapters = dict(adapters)
        self.options = options
        self.script = script
        self.closed = False

    def generate(self, requests, on_progress=None):
        from kubetune_trainer.eval.engines import Generation

        generations = []
        for request in requests:
            prompt = self.tokenizer.decode(request.prompt_ids)
            text, eos = self.script(prompt, request.adapter, self.model_path)
            tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + int(eos)
            generations.append(Generation(text=text, finished_by_eos=eos, new_tokens=tokens))
        if on_progress:
            on_progress(len(requests), sum(g.new_tokens for g in generations))
        return generations

    def close(self):
        self.closed = True


@pytest.fixture(scope="session")
def scripted():
    """`scripted(script)` -> an engine factory; the engines it opened are in `factory.opened`."""

    def make(script):
        def factory(model_path, adapters, options):
            engine = ScriptedEngine(model_path, adapters, options, script)
            factory.opened.append(engine)
            return engine

        factory.opened = []
        return factory

    return make
