"""The vLLM engine: one `LLM` for the base model, one `LoRARequest` per adapter, tensor parallel.

vLLM is imported only when this engine is opened, so CPU installs never need it. Everything
that decides what vLLM is asked to do lives in pure functions below (`llm_kwargs`,
`sampling_kwargs`, `beam_search_kwargs`, `lora_requests_args`), unit-tested without vLLM.
Beam width > 1 goes through vLLM's `LLM.beam_search` with `BeamSearchParams`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubetune_trainer.errors import ConfigError, OutOfMemory
from kubetune_trainer.eval.engines import (
    EngineOptions,
    Generation,
    ProgressCallback,
    Request,
    decode_answer,
    group_by_adapter,
    stop_token_ids,
)

# vLLM accepts only these values for max_lora_rank.
SUPPORTED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Prompts per call, so that progress is reported while vLLM still batches freely inside a call.
CHUNK = 512


def adapter_rank(adapter_path: str) -> int:
    try:
        config = json.loads((Path(adapter_path) / "adapter_config.json").read_text(encoding="utf-8"))
        return int(config["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{adapter_path}: cannot read the LoRA rank `r` from adapter_config.json ({exc})"
        ) from None


def max_lora_rank(ranks: Sequence[int]) -> int:
    largest = max(ranks)
    for supported in SUPPORTED_LORA_RANKS:
        if supported >= largest:
            return supported
    raise ConfigError(
        f"LoRA rank {largest} is above the largest rank vLLM serves ({SUPPORTED_LORA_RANKS[-1]})"
    )


def llm_kwargs(model_path: str, adapter_ranks: Mapping[str, int], options: EngineOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": model_path,
        "tokenizer": model_path,
        "tensor_parallel_size": options.tensor_parallel,
        "seed": options.seed,
        # Decoding follows the EvalRun's options only, never the model's generation_config.json defaults.
        "generation_config": "vllm",
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if adapter_ranks:
        kwargs |= {
            "enable_lora": True,
            "max_lora_rank": max_lora_rank(list(adapter_ranks.values())),
            "max_loras": len(adapter_ranks),
        }
    return kwargs


def sampling_kwargs(options: EngineOptions, stop_ids: Sequence[int]) -> dict[str, Any]:
    """SamplingParams for beam width 1: greedy at temperature 0, else nucleus sampling."""
    return {
        "n": 1,
        "temperature": options.temperature,
        "top_p": options.top_p if options.temperature > 0 else 1.0,
        "top_k": 0,
        "max_tokens": options.max_new_tokens,
        "seed": options.seed,
        "stop_token_ids": list(stop_ids),
        "repetition_penalty": 1.0,
        "skip_special_tokens": True,
    }


def beam_search_kwargs(options: EngineOptions) -> dict[str, Any]:
    return {
        "beam_width": options.beam_width,
        "max_tokens": options.max_new_tokens,
        "temperature": options.temperature,
        "length_penalty": 1.0,
        "ignore_eos": False,
    }


def lora_requests_args(adapters: Mapping[str, str]) -> dict[str, tuple[str, int, str]]:
    """LoRARequest(lora_name, lora_int_id, lora_path) per adapter; ids start at 1 (0 means none)."""
    return {
        name: (name, number, str(path))
        for number, (name, path) in enumerate(sorted(adapters.items()), start=1)
    }


def prompt_inputs(requests: Sequence[Request]) -> list[dict[str, list[int]]]:
    """Token prompts: the chat template was rendered once, so vLLM must not add tokens of its own."""
    return [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]


class VllmEngine:
    def __init__(self, model_path: str, adapters: Mapping[str, str], options: EngineOptions):
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise ConfigError("engine: vllm is not installed in this image; use engine: hf") from None
        from transformers import AutoTokenizer

        self.options = options
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.stop_ids = stop_token_ids(self.tokenizer, model_path)
        ranks = {name: adapter_rank(path) for name, path in adapters.items()}
        self.llm = LLM(**llm_kwargs(model_path, ranks, options))
        self.lora = {name: LoRARequest(*args) for name, args in lora_requests_args(adapters).items()}

    def generate(
        self, requests: Sequence[Request], on_progress: ProgressCallback | None = None
    ) -> list[Generation]:
        import torch

        results: list[Generation] = []
        for start in range(0, len(requests), CHUNK):
            chunk = requests[start : start + CHUNK]
            try:
                generations = self._generate_chunk(chunk)
            except torch.OutOfMemoryError as exc:
                raise OutOfMemory(
                    f"out of GPU memory in vLLM ({exc}); lower max_model_len, raise tensor_parallel "
                    f"({self.options.tensor_parallel}) or lower beam_width ({self.options.beam_width})"
                ) from None
            results.extend(generations)
            if on_progress:
                on_progress(len(chunk), sum(g.new_tokens for g in generations))
        return results

    def _generate_chunk(self, requests: Sequence[Request]) -> list[Generation]:
        if self.options.beam_width > 1:
            return self._beam_search(requests)
        from vllm import SamplingParams

        params = SamplingParams(**sampling_kwargs(self.options, self.stop_ids))
        loras = [self.lora[r.adapter] if r.adapter else None for r in requests]
        outputs = self.llm.generate(prompt_inputs(requests), params, lora_request=loras, use_tqdm=False)
        return [decode_answer(self.tokenizer, list(o.outputs[0].token_ids), self.stop_ids) for o in outputs]

    def _beam_search(self, requests: Sequence[Request]) -> list[Generation]:
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(**beam_search_kwargs(self.options))
        results: dict[int, Generation] = {}
        # beam_search takes a single LoRA request for all of its prompts, so it runs once per adapter.
        for adapter, indices in group_by_adapter(requests).items():
            group = [requests[i] for i in indices]
            lora = self.lora[adapter] if adapter else None
            outputs = self.llm.beam_search(prompt_inputs(group), params, lora_request=lora)
            for i, request, output in zip(indices, group, outputs, strict=True):
                # Beam sequences hold the prompt too; the answer is what follows it.
                answer = output.sequences[0].tokens[len(request.prompt_ids) :]
                results[i] = decode_answer(self.tokenizer, answer, self.stop_ids)
        return [results[i] for i in range(len(requests))]

    def close(self) -> None:
        import gc

        import torch

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
