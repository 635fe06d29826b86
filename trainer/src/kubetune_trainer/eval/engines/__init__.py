"""Generation engines behind one interface: Hugging Face transformers (CPU/GPU) and vLLM (GPU).

An engine serves one base model and any number of LoRA adapters on it, registered by name.
Both engines take the same token ids (the tokenizer's chat template, rendered here once), use
the same decoding options and stop tokens, and report for every answer whether it ended at
end-of-sequence or ran into `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubetune_trainer.errors import ConfigError, DataError

# Called after each finished piece of work with (prompts done, tokens generated) since the last call.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class EngineOptions:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    beam_width: int = 1
    seed: int = 0
    batch_size: int = 8
    tensor_parallel: int = 1
    max_model_len: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> EngineOptions:
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Request:
    prompt_ids: list[int]
    adapter: str | None = None


@dataclass(frozen=True)
class Generation:
    text: str
    finished_by_eos: bool
    new_tokens: int


class Engine(Protocol):
    tokenizer: Any

    def generate(
        self, requests: Sequence[Request], on_progress: ProgressCallback | None = None
    ) -> list[Generation]: ...

    def close(self) -> None: ...


# (base model path, {adapter name: adapter path}, options) -> Engine
EngineFactory = Callable[[str, Mapping[str, str], EngineOptions], Engine]


def vllm_unavailable() -> str | None:
    """Why the vLLM engine cannot run on this machine, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def choose_engine(kind: str) -> tuple[EngineFactory, str | None]:
    """The engine for `kind`; where vLLM cannot run, the HF engine and a warning saying why.

    The fallback keeps an EvalRun written for a GPU cluster runnable on a laptop (`kubetune run`):
    the prompts and decoding options are the same, only the speed differs.
    """
    from kubetune_trainer.eval.engines.hf_engine import HFEngine

    if kind != "vllm":
        return HFEngine, None
    reason = vllm_unavailable()
    if reason is not None:
        return HFEngine, f"engine: vllm was asked for, but {reason}; the hf engine ran instead"
    from kubetune_trainer.eval.engines.vllm_engine import VllmEngine

    return VllmEngine, None


def group_by_adapter(requests: Sequence[Request]) -> dict[str | None, list[int]]:
    """Request positions per adapter (None: the base model), in first-seen order."""
    groups: dict[str | None, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.adapter, []).append(i)
    return groups


def render_prompt_ids(
    tokenizer: Any, messages: list[dict[str, str]], model: str, where: str = ""
) -> list[int]:
    """The prompt exactly as the model's chat template lays it out, ready for the answer.

    `where` (file:line of the row) goes into the error when the template refuses the messages,
    as templates do that raise on roles they do not support.
    """
    import jinja2

    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{model}: the tokenizer has no chat_template, so prompts cannot be rendered")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except jinja2.TemplateError as exc:
        raise DataError(
            f"{where or 'prompt'}: the chat template of {model} cannot render it: {exc}"
        ) from None
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer: Any, model_path: str) -> list[int]:
    """End-of-sequence ids: the tokenizer's plus the model's generation_config.json ones."""
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:
        configured = None
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if not ids:
        raise ConfigError(
            f"{model_path}: neither the tokenizer nor generation_config.json names an end-of-sequence token"
        )
    return sorted(ids)


def answer_tokens(generated: Sequence[int], stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """The answer's tokens up to and including the first stop token, and whether one was reached."""
    stops = set(stop_ids)
    for position, token in enumerate(generated):
        if token in stops:
            return list(generated[: position + 1]), True
    return list(generated), False


def decode_answer(tokenizer: Any, generated: Sequence[int], stop_ids: Sequence[int]) -> Generation:
    """An answer from the tokens generated after the prompt (anything past the first stop is padding)."""
    kept, finished = answer_tokens(generated, stop_ids)
    return Generation(
        text=tokenizer.decode(kept, skip_special_tokens=True), finished_by_eos=finished, new_tokens=len(kept)
    )
