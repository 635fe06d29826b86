"""vLLM request building, checked without vLLM; and one real run where a GPU and vLLM exist."""

from __future__ import annotations

import importlib.util

import pytest

from kubetune_trainer.errors import ConfigError
from kubetune_trainer.eval.engines import EngineOptions, Request, group_by_adapter, render_prompt_ids
from kubetune_trainer.eval.engines.vllm_engine import (
    adapter_rank,
    beam_search_kwargs,
    llm_kwargs,
    lora_requests_args,
    max_lora_rank,
    prompt_inputs,
    sampling_kwargs,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_one_llm_serves_the_base_and_every_adapter():
    options = EngineOptions(tensor_parallel=4, max_model_len=4096, seed=7)
    kwargs = llm_kwargs("/models/base", {"sft": 16, "dpo": 8}, options)
    assert kwargs == {
        "model": "/models/base",
        "tokenizer": "/models/base",
        "tensor_parallel_size": 4,
        "seed": 7,
        "generation_config": "vllm",
        "max_model_len": 4096,
        "enable_lora": True,
        "max_lora_rank": 16,
        "max_loras": 2,
    }
    plain = llm_kwargs("/models/base", {}, EngineOptions())
    assert "enable_lora" not in plain and "max_model_len" not in plain


@pytest.mark.parametrize(("ranks", "expected"), [([4], 8), ([8, 32], 32), ([33], 64), ([1], 1), ([300], 320)])
def test_max_lora_rank_rounds_up_to_what_vllm_serves(ranks, expected):
    assert max_lora_rank(ranks) == expected


def test_a_rank_vllm_cannot_serve_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="LoRA rank 1024"):
        max_lora_rank([1024])
    (tmp_path / "adapter_config.json").write_text('{"r": 12}')
    assert adapter_rank(str(tmp_path)) == 12
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="cannot read the LoRA rank"):
        adapter_rank(str(tmp_path))


def test_greedy_and_sampling_parameters():
    greedy = sampling_kwargs(EngineOptions(max_new_tokens=64, top_p=0.5), [151645, 151643])
    assert greedy == {
        "n": 1,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_tokens": 64,
        "seed": 0,
        "stop_token_ids": [151645, 151643],
        "repetition_penalty": 1.0,
        "skip_special_tokens": True,
    }
    sampled = sampling_kwargs(EngineOptions(temperature=0.8, top_p=0.9, seed=3), [2])
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.8, 0.9, 3)


def test_beam_search_parameters_match_the_seed000_replay():
    # seed 000: use_beam_search=True, best_of=5, temperature=0, max_tokens=4096
    assert beam_search_kwargs(EngineOptions(beam_width=5, max_new_tokens=4096)) == {
        "beam_width": 5,
        "max_tokens": 4096,
        "temperature": 0.0,
        "length_penalty": 1.0,
        "ignore_eos": False,
    }


def test_lora_requests_have_stable_positive_ids():
    args = lora_requests_args({"sft": "/a/sft", "dpo": "/a/dpo"})
    assert args == {"dpo": ("dpo", 1, "/a/dpo"), "sft": ("sft", 2, "/a/sft")}


def test_prompts_go_as_token_ids_and_group_by_adapter():
    requests = [Request([1, 2], "a"), Request([3], None), Request([4, 5, 6], "a")]
    assert prompt_inputs(requests) == [
        {"prompt_token_ids": [1, 2]},
        {"prompt_token_ids": [3]},
        {"prompt_token_ids": [4, 5, 6]},
    ]
    assert group_by_adapter(requests) == {"a": [0, 2], None: [1]}


@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM, not a GPU: `make test-vllm-api` runs it")
def test_the_installed_vllm_accepts_every_request_we_build():
    # Constructing vLLM's own parameter objects checks names and values without a GPU.
    from vllm import SamplingParams
    from vllm.engine.arg_utils import EngineArgs
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import BeamSearchParams

    options = EngineOptions(tensor_parallel=2, max_model_len=2048, seed=7, beam_width=4, max_new_tokens=32)
    engine_args = EngineArgs(**llm_kwargs("/models/base", {"sft": 12, "dpo": 8}, options))
    assert (engine_args.max_lora_rank, engine_args.max_loras, engine_args.enable_lora) == (16, 2, True)
    assert engine_args.generation_config == "vllm"
    greedy = SamplingParams(**sampling_kwargs(options, [7, 9]))
    assert (greedy.temperature, greedy.max_tokens, greedy.stop_token_ids) == (0.0, 32, [7, 9])
    beams = BeamSearchParams(**beam_search_kwargs(options))
    assert (beams.beam_width, beams.max_tokens) == (4, 32)
    lora = [LoRARequest(*args) for args in lora_requests_args({"sft": "/a/sft", "dpo": "/a/dpo"}).values()]
    assert [(r.lora_name, r.lora_int_id, r.lora_path) for r in lora] == [("dpo", 1, "/a/dpo"), ("sft", 2, "/a/sft")]


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_VLLM and has_gpu()), reason="needs a CUDA GPU and vLLM")
def test_real_vllm_run_serves_base_and_adapter(lineage_models):
    from kubetune_trainer.eval.engines.vllm_engine import VllmEngine

    prompts = [[{"role": "user", "content": "case-0: 天气?"}], [{"role": "user", "content": "退款"}]]
    for beam_width in (1, 2):
        engine = VllmEngine(
            str(lineage_models.base),
            {"sft": str(lineage_models.sft)},
            EngineOptions(max_new_tokens=8, beam_width=beam_width, max_model_len=512),
        )
        try:
            ids = [render_prompt_ids(engine.tokenizer, p, "tiny") for p in prompts]
            generations = engine.generate([Request(i, a) for a in (None, "sft") for i in ids])
        finally:
            engine.close()
        assert len(generations) == 4
        assert all(0 < g.new_tokens <= 8 for g in generations)
        # An answer that did not end at a stop token used up max_new_tokens.
        assert all(g.finished_by_eos or g.new_tokens == 8 for g in generations)
