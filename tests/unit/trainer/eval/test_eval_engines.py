from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from kubetune_trainer.errors import ConfigError, DataError
from kubetune_trainer.eval.engines import (
    EngineOptions,
    Request,
    answer_tokens,
    choose_engine,
    render_prompt_ids,
    stop_token_ids,
)
from kubetune_trainer.eval.engines.hf_engine import HFEngine, generation_config_kwargs

PROMPTS = [
    [{"role": "user", "content": "case-0: 天气?"}],
    [
        {"role": "system", "content": "你是客服。"},
        {"role": "user", "content": "Your parcel left the warehouse?"},
    ],
    [{"role": "user", "content": "退款"}],
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompts_are_the_chat_template_with_the_generation_prompt(tokenizer, tiny_model_dir):
    ids = render_prompt_ids(tokenizer, PROMPTS[0], "tiny")
    text = tokenizer.decode(ids)
    assert text == "<|im_start|>user\ncase-0: 天气?<|im_end|>\n<|im_start|>assistant\n"
    tokenizer_without = type(tokenizer).from_pretrained(tiny_model_dir)
    tokenizer_without.chat_template = None
    with pytest.raises(ConfigError, match="tiny: the tokenizer has no chat_template"):
        render_prompt_ids(tokenizer_without, PROMPTS[0], "tiny")


def test_stop_tokens_join_the_tokenizer_and_generation_config(tokenizer, tiny_model_dir, tmp_path):
    assert stop_token_ids(tokenizer, str(tiny_model_dir)) == [tokenizer.eos_token_id]
    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    config = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps(config | {"eos_token_id": [2, 0]}))
    assert stop_token_ids(tokenizer, str(model)) == sorted({0, 2, tokenizer.eos_token_id})


def test_answer_tokens_stop_at_the_first_stop_token():
    assert answer_tokens([5, 6, 2, 0, 0], [2]) == ([5, 6, 2], True)
    assert answer_tokens([5, 6, 7], [2]) == ([5, 6, 7], False)
    assert answer_tokens([], [2]) == ([], False)


def test_decoding_options_are_explicit_for_greedy_and_sampling():
    greedy = generation_config_kwargs(EngineOptions(max_new_tokens=9), [2], 0)
    assert greedy == {
        "max_new_tokens": 9,
        "num_beams": 1,
        "do_sample": False,
        "eos_token_id": [2],
        "pad_token_id": 0,
        "repetition_penalty": 1.0,
    }
    sampled = generation_config_kwargs(EngineOptions(temperature=0.7, top_p=0.9, beam_width=3), [2], 0)
    assert (
        sampled.items()
        >= {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "num_beams": 3}.items()
    )


def direct_greedy(model, tokenizer, ids, max_new_tokens):
    import torch

    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=[tokenizer.eos_token_id],
            pad_token_id=tokenizer.pad_token_id,
        )
    return out[0, len(ids) :].tolist()


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(lineage_models, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    options = EngineOptions(max_new_tokens=6, batch_size=2)
    # Adapters go by candidate name, and candidate names may hold dots, which peft refuses.
    engine = HFEngine(str(lineage_models.base), {"sft.v1": str(lineage_models.sft)}, options)
    ids = [render_prompt_ids(engine.tokenizer, p, "tiny") for p in PROMPTS]
    requests = [Request(i, adapter) for adapter in (None, "sft.v1") for i in ids]
    progress = []
    generations = engine.generate(requests, lambda prompts, tokens: progress.append((prompts, tokens)))
    engine.close()
    assert sum(p for p, _ in progress) == len(requests)
    assert sum(t for _, t in progress) == sum(g.new_tokens for g in generations)

    base = AutoModelForCausalLM.from_pretrained(lineage_models.base)
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(lineage_models.base), lineage_models.sft
    )
    expected = [direct_greedy(base, tokenizer, i, 6) for i in ids] + [
        direct_greedy(adapted, tokenizer, i, 6) for i in ids
    ]
    for generation, tokens in zip(generations, expected, strict=True):
        kept, finished = answer_tokens(tokens, [tokenizer.eos_token_id])
        assert generation.text == tokenizer.decode(kept, skip_special_tokens=True)
        assert (generation.finished_by_eos, generation.new_tokens) == (finished, len(kept))
    assert [g.text for g in generations[:3]] != [g.text for g in generations[3:]]


def test_answers_end_at_a_generation_config_stop_token(tiny_model_dir, tokenizer, tmp_path):
    """A model whose every next token is id 0, with 0 among its stop tokens, ends every answer at once."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight.zero_()  # all logits 0: greedy picks id 0
    model.generation_config.eos_token_id = [2, 0]
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    engine = HFEngine(str(tmp_path / "m"), {}, EngineOptions(max_new_tokens=5))
    [generation] = engine.generate([Request(render_prompt_ids(engine.tokenizer, PROMPTS[0], "m"))])
    assert (generation.text, generation.finished_by_eos, generation.new_tokens) == ("", True, 1)


def test_a_tokenizer_without_a_pad_token_pads_with_its_stop_token(tiny_model_dir, tmp_path):
    """Llama- and Mistral-style tokenizers have no pad token; batches still need one."""
    from transformers import AutoTokenizer

    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(model)
    engine = HFEngine(str(model), {}, EngineOptions(max_new_tokens=2, batch_size=3))
    assert engine.tokenizer.pad_token_id == engine.stop_ids[0]
    ids = [render_prompt_ids(engine.tokenizer, p, "m") for p in PROMPTS]
    assert len(engine.generate([Request(i) for i in ids])) == 3


def test_beam_search_and_seeded_sampling(tiny_model_dir):
    beams = HFEngine(str(tiny_model_dir), {}, EngineOptions(max_new_tokens=4, beam_width=3))
    ids = [render_prompt_ids(beams.tokenizer, p, "tiny") for p in PROMPTS]
    assert len(beams.generate([Request(i) for i in ids])) == 3
    sampler = HFEngine(str(tiny_model_dir), {}, EngineOptions(max_new_tokens=8, temperature=1.0, seed=3))
    first = sampler.generate([Request(i) for i in ids])
    assert sampler.generate([Request(i) for i in ids]) == first


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_without_vllm_the_hf_engine_runs_and_says_why():
    factory, warning = choose_engine("vllm")
    assert factory is HFEngine
    assert warning == "engine: vllm was asked for, but vLLM is not installed; the hf engine ran instead"
    assert choose_engine("hf") == (HFEngine, None)


def test_the_vllm_engine_itself_refuses_to_start_without_vllm(tiny_model_dir, monkeypatch):
    import sys

    from kubetune_trainer.eval.engines.vllm_engine import VllmEngine

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match="vllm is not installed"):
        VllmEngine(str(tiny_model_dir), {}, EngineOptions())


def test_a_template_that_refuses_the_messages_names_the_row(tiny_model_dir):
    from transformers import AutoTokenizer

    strict = AutoTokenizer.from_pretrained(tiny_model_dir)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(
        DataError, match=r"test\.json:6: the chat template of tiny cannot render it: System role"
    ):
        render_prompt_ids(strict, PROMPTS[1], "tiny", "test.json:6")
