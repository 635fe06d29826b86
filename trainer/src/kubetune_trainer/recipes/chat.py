"""Conversations rendered with the base model's own chat template, as TRL renders them."""

from __future__ import annotations

from typing import Any

from kubetune_trainer.errors import DataError


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as a chat template reads them: a turn's loss_weight is kubetune's, not the template's."""
    return [{k: v for k, v in m.items() if k != "loss_weight"} for m in messages]


def render(
    tokenizer,
    messages: list[dict[str, Any]],
    generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    return tokenizer.apply_chat_template(
        template_messages(messages),
        tools=tools or None,
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )


def refused_by_template(source: str, exc: Exception) -> DataError:
    return DataError(f"{source}: the base model's chat template refuses this conversation: {exc}")
