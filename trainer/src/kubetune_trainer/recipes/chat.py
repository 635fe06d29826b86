"""Conversations rendered with the base model's own chat template, as TRL renders them."""

from __future__ import annotations

from kubetune_trainer.errors import DataError


def render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def refused_by_template(source: str, exc: Exception) -> DataError:
    return DataError(f"{source}: the base model's chat template refuses this conversation: {exc}")
