"""The Hugging Face transformers engine: batched `generate`, left padding, peft adapters by name.

Used on CPUs and as the fallback where vLLM is not installed. Requests are grouped by adapter
and sorted by prompt length so that batches carry little padding; answers come back in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kubetune_trainer.errors import OutOfMemory
from kubetune_trainer.eval.engines import (
    EngineOptions,
    Generation,
    ProgressCallback,
    Request,
    decode_answer,
    group_by_adapter,
    stop_token_ids,
)


def generation_config_kwargs(options: EngineOptions, stop_ids: list[int], pad_id: int) -> dict:
    """Decoding options for `GenerationConfig`, the same ones the vLLM engine maps to SamplingParams.

    Everything is set explicitly so that a model's own generation_config.json (sampling defaults,
    repetition penalties) cannot make the two engines decode differently.
    """
    kwargs = {
        "max_new_tokens": options.max_new_tokens,
        "num_beams": options.beam_width,
        "do_sample": options.temperature > 0,
        "eos_token_id": stop_ids,
        "pad_token_id": pad_id,
        "repetition_penalty": 1.0,
    }
    if options.temperature > 0:
        kwargs |= {"temperature": options.temperature, "top_p": options.top_p, "top_k": 0}
    return kwargs


class HFEngine:
    def __init__(self, model_path: str, adapters: Mapping[str, str], options: EngineOptions):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.options = options
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        self.stop_ids = stop_token_ids(self.tokenizer, model_path)
        if self.tokenizer.pad_token_id is None:
            # Llama- and Mistral-style tokenizers have none; padding sits left of the prompt, masked out.
            self.tokenizer.pad_token_id = self.stop_ids[0]
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        # peft names modules after adapters and refuses dots, which candidate names may hold.
        self.peft_names = {name: f"adapter{i}" for i, name in enumerate(adapters)}
        if adapters:
            from peft import PeftModel

            (first_name, first_path), *others = adapters.items()
            model = PeftModel.from_pretrained(model, first_path, adapter_name=self.peft_names[first_name])
            for name, path in others:
                model.load_adapter(path, adapter_name=self.peft_names[name])
        self.model = model.to(self.device).eval()
        self.generation_config = GenerationConfig(
            **generation_config_kwargs(options, self.stop_ids, self.tokenizer.pad_token_id)
        )

    def generate(
        self, requests: Sequence[Request], on_progress: ProgressCallback | None = None
    ) -> list[Generation]:
        import torch
        from transformers import set_seed

        set_seed(self.options.seed)
        results: list[Generation | None] = [None] * len(requests)
        for adapter, positions in group_by_adapter(requests).items():
            # Similar lengths batched together carry little padding.
            indices = sorted(positions, key=lambda i: len(requests[i].prompt_ids))
            for start in range(0, len(indices), self.options.batch_size):
                batch = indices[start : start + self.options.batch_size]
                try:
                    generations = self._generate_batch([requests[i].prompt_ids for i in batch], adapter)
                except torch.OutOfMemoryError as exc:
                    raise OutOfMemory(
                        f"out of memory while generating ({exc}); lower batch_size "
                        f"({self.options.batch_size}), max_new_tokens ({self.options.max_new_tokens}) "
                        f"or beam_width ({self.options.beam_width})"
                    ) from None
                for i, generation in zip(batch, generations, strict=True):
                    results[i] = generation
                if on_progress:
                    on_progress(len(batch), sum(g.new_tokens for g in generations))
        return [r for r in results if r is not None]

    def _generate_batch(self, prompts: list[list[int]], adapter: str | None) -> list[Generation]:
        import contextlib

        import torch

        batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        if adapter is not None:
            self.model.set_adapter(self.peft_names[adapter])
            context = contextlib.nullcontext()
        elif hasattr(self.model, "disable_adapter"):
            context = self.model.disable_adapter()
        else:
            context = contextlib.nullcontext()
        with context, torch.inference_mode():
            output = self.model.generate(**batch, generation_config=self.generation_config)
        generated = output[:, batch["input_ids"].shape[1] :].tolist()
        return [decode_answer(self.tokenizer, tokens, self.stop_ids) for tokens in generated]

    def close(self) -> None:
        import gc

        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
