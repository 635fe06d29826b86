"""Tiny random-weight Qwen2-style models with a tokenizer trained on the caller's text.

No machine here downloads weights, so tests, benchmarks and the demo build their base model in
code: a byte-level BPE tokenizer trained on the data at hand (Chinese and English alike) with a
ChatML template, and a Qwen2 config with a few layers. Same seed, same texts: same files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from kubetune_trainer.errors import ConfigError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, as Qwen2 uses it. `generation` marks assistant turns so that
# `return_assistant_tokens_mask` works for completion-only losses. With `tools`, a system turn lists
# them first (after the system message, if any) and an assistant's calls follow its text as
# `<tool_call>{...}</tool_call>`, in the manner of Qwen2.5's template; tool results are `tool` turns.
# A conversation without tools renders exactly as plain ChatML.
CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ '# Tools\n' }}{% for tool in tools %}{{ tool | tojson }}{{ '\n' }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if tools and loop.first and message['role'] == 'system' %}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] }}"
    "{% for call in message.tool_calls or [] %}{{ '<tool_call>' }}{{ call.function | tojson }}{{ '</tool_call>' }}{% endfor %}"
    "{{ '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def iter_strings(value) -> Iterator[str]:
    """Every string inside a JSON value, depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_strings(item)


def corpus_from_files(paths: Iterable[Path]) -> list[str]:
    """Strings from JSON / JSONL files (every string value), for tokenizer training."""
    texts: list[str] = []
    for path in paths:
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        try:
            texts.extend(iter_strings(json.loads(raw)))
            continue
        except json.JSONDecodeError:
            pass
        for line in raw.splitlines():
            try:
                texts.extend(iter_strings(json.loads(line)))
            except json.JSONDecodeError:
                texts.append(line)
    return texts


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts) + ["<|im_start|>user\n<|im_end|>"], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(
    vocab_size: int,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    max_positions: int = 2048,
    seed: int = 0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    embedding_std: float | None = None,
):
    """A random-weight Qwen2 model. `embedding_std` redraws the (tied) embeddings at that scale.

    At the default initialisation (std 0.02) a logit, the final hidden state (norm sqrt(hidden))
    times an embedding row (norm 0.02 sqrt(hidden)), stays below about 0.02 × hidden: 1.3 for 64
    dimensions, while LoRA trains neither the embeddings nor the final norm. Such a model can never
    be confident: its greedy answers turn on logit gaps of hundredths, which float rounding decides.
    A trained model's output layer is far larger; std 0.2 lets logits reach about 13 at 64 dimensions.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if embedding_std is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, embedding_std)
    return model


def write_tiny_model(
    output: Path,
    texts: Iterable[str],
    vocab_size: int = 512,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    embedding_std: float | None = None,
) -> Path:
    """Write a tokenizer + random-weight model directory that `from_pretrained` loads."""
    from transformers.utils import logging as transformers_logging

    # A few megabytes: a progress bar for writing them is noise.
    transformers_logging.disable_progress_bar()
    output = Path(output)
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    model = build_model(
        vocab_size=len(tokenizer),
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        seed=seed,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        embedding_std=embedding_std,
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
