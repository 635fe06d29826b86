"""SFT: conversations tokenised with the base model's chat template, loss on the assistant turns.

Rows become input_ids, labels (assistant turns only, by default: tool calls are assistant turns, tool
results are not) and, with key_token_patterns or answers whose loss_weight is neither 0 nor 1,
per-token loss weights, which `WeightedCollator` lays out like the labels and `KubetuneSFTTrainer`
applies; an answer of loss_weight 0 is not trained. A row's tools go to the chat template. TRL's own
dataset preparation is skipped: the rows arrive tokenised (and packed).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import pad

from kubetune_trainer.errors import DataError
from kubetune_trainer.recipes.base import Recipe, Setup
from kubetune_trainer.recipes.chat import refused_by_template, render
from kubetune_trainer.recipes.config import TrainConfig
from kubetune_trainer.recipes.trainers import NaNGuard, NoStepPastTheEnd

log = logging.getLogger(__name__)

TOKEN_WEIGHTS = "token_weights"


class SFTRecipe(Recipe):
    method = "sft"
    rows = "sft"

    def arguments(self, common: dict[str, Any]) -> SFTConfig:
        return SFTConfig(
            **common,
            # Rows arrive tokenised and (with packing) packed by SFTTokenizer.
            dataset_kwargs={"skip_prepare_dataset": True},
            packing=False,
            padding_free=False,
        )

    def build(self, state: Setup, common: dict[str, Any]) -> KubetuneSFTTrainer:
        from transformers.trainer_utils import IntervalStrategy

        config = self.config
        encoder = SFTTokenizer(state.tokenizer, config)
        encoder.weighted |= weighted_answers(state.dataset.train + state.dataset.test)
        stats = {"train": TokenizeStats(), "test": TokenizeStats()}
        train = encoder.dataset(state.dataset.train, stats["train"], config.packing)
        test = (
            encoder.dataset(state.dataset.test, stats["test"], config.packing) if state.dataset.test else None
        )
        for split, split_stats in stats.items():
            report_drops(split_stats, split)
            state.data_stats[split] = split_stats.summary()
        if train is None:
            raise DataError(
                f"dataset: {state.dataset.uri}/train.jsonl: no row keeps an assistant token within "
                f"cutoff_len ({config.cutoff_len})"
            )
        if test is None and state.args.eval_strategy != IntervalStrategy.NO:
            log.warning("test split has no usable rows: training without evaluation")
            state.args.eval_strategy = IntervalStrategy.NO
            state.args.metric_for_best_model = None
        collator = WeightedCollator(pad_token_id=state.tokenizer.pad_token_id, padding_free=config.packing)
        return KubetuneSFTTrainer(train_dataset=train, eval_dataset=test, data_collator=collator, **common)


@dataclass
class TokenizeStats:
    rows: int = 0
    truncated: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, source: str) -> None:
        self.dropped.setdefault(reason, []).append(source)

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "truncated": self.truncated,
            "dropped": {reason: len(sources) for reason, sources in self.dropped.items()},
        }


def _shared_prefix(a: str, b: str) -> int:
    length = min(len(a), len(b))
    return next((i for i in range(length) if a[i] != b[i]), length)


def assistant_spans(
    tokenizer, messages: list[dict[str, Any]], text: str, tools: list[dict[str, Any]] | None = None
) -> list[tuple[int, int, float]]:
    """Character spans of the assistant turns in `text`, each through its end-of-turn token, with the
    turn's loss weight.

    Found by rendering each prefix of the conversation with the tokenizer's own template, so that
    it works for templates without `{% generation %}` markers (Qwen2.5's among them).
    """
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _shared_prefix(render(tokenizer, messages[:index], True, tools), text)
        end = _shared_prefix(render(tokenizer, messages[: index + 1], tools=tools), text)
        end = start + len(text[start:end].rstrip())
        if end > start:
            spans.append((start, end, message.get("loss_weight", 1.0)))
    return spans


def _overlaps(token: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(token[0] < span[1] and token[1] > span[0] for span in spans)


def _weight_of(token: tuple[int, int], spans: list[tuple[int, int, float]]) -> float:
    return next((span[2] for span in spans if token[0] < span[1] and token[1] > span[0]), 1.0)


def weighted_answers(rows: list[dict[str, Any]]) -> bool:
    """Whether some answer counts neither fully nor not at all, which needs per-token weights."""
    return any(m.get("loss_weight", 1.0) not in (0.0, 1.0) for row in rows for m in row["messages"])


class SFTTokenizer:
    """Turns conversations into input_ids, labels and (with key_token_patterns or weighted answers)
    token_weights."""

    def __init__(self, tokenizer, config: TrainConfig):
        self.tokenizer = tokenizer
        self.cutoff_len = config.cutoff_len
        self.completion_only = config.completion_only_loss
        self.patterns = [re.compile(p) for p in config.key_token_patterns]
        self.key_weight = config.key_token_weight
        self.weighted = bool(self.patterns)

    def encode(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> tuple[dict[str, list], int]:
        """The trainer row, cut to cutoff_len, and the length before the cut."""
        text = render(self.tokenizer, messages, tools=tools)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        spans = assistant_spans(self.tokenizer, messages, text, tools)
        answers = [span for span in spans if span[2] > 0]
        masked = [span for span in spans if span[2] == 0]
        if self.completion_only:
            labels = [t if _overlaps(o, answers) else -100 for t, o in zip(ids, offsets, strict=True)]
        else:
            # Every token is trained but the answers weighted 0.
            labels = [-100 if _overlaps(o, masked) else t for t, o in zip(ids, offsets, strict=True)]
        row: dict[str, list] = {"input_ids": ids[: self.cutoff_len], "labels": labels[: self.cutoff_len]}
        if self.weighted:
            keys = [m.span() for p in self.patterns for m in p.finditer(text) if m.end() > m.start()]
            weights = [
                (self.key_weight if _overlaps(o, keys) else 1.0) * _weight_of(o, answers) for o in offsets
            ]
            row["token_weights"] = weights[: self.cutoff_len]
        return row, len(ids)

    def dataset(self, rows: list[dict[str, Any]], stats: TokenizeStats, packing: bool):
        """A datasets.Dataset of tokenised rows; rows with nothing left to learn are dropped and counted."""
        from datasets import Dataset
        from jinja2 import TemplateError

        tokenised = []
        for row in rows:
            stats.rows += 1
            try:
                item, full_length = self.encode(row["messages"], row.get("tools"))
            except TemplateError as exc:
                raise refused_by_template(row["source"], exc) from exc
            if full_length > self.cutoff_len:
                stats.truncated += 1
            if all(label == -100 for label in item["labels"][1:]):
                stats.drop("no_trainable_tokens_within_cutoff_len", row["source"])
                continue
            tokenised.append(item)
        dataset = Dataset.from_list(tokenised) if tokenised else None
        if dataset is not None and packing:
            from trl import pack_dataset

            dataset = pack_dataset(dataset, self.cutoff_len, strategy="bfd")
        return dataset


def report_drops(stats: TokenizeStats, split: str) -> None:
    for reason, sources in stats.dropped.items():
        shown = ", ".join(sources[:5]) + (", ..." if len(sources) > 5 else "")
        log.warning("%s: dropped %d row(s) (%s): %s", split, len(sources), reason, shown)


@dataclass
class WeightedCollator(DataCollatorForLanguageModeling):
    """TRL's language-modelling collator, plus the per-token loss weights laid out like the labels."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if TOKEN_WEIGHTS not in examples[0]:
            return super().torch_call(examples)
        weights = [torch.tensor(example[TOKEN_WEIGHTS], dtype=torch.float32) for example in examples]
        output = super().torch_call([{k: v for k, v in e.items() if k != TOKEN_WEIGHTS} for e in examples])
        if self.padding_free:
            weights = [torch.cat(weights)]
        output[TOKEN_WEIGHTS] = pad(
            weights, padding_value=0.0, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of
        )
        return output


class KubetuneSFTTrainer(NaNGuard, NoStepPastTheEnd, SFTTrainer):
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if TOKEN_WEIGHTS not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, TOKEN_WEIGHTS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(TOKEN_WEIGHTS, None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Same normalisation as TRL's loss (per trainable token), so weight 1.0 everywhere is plain SFT.
        outputs = model(**inputs, use_cache=False, fused_lm_head=True)
        per_token = -outputs.log_probs * weights[:, 1:].to(outputs.log_probs.dtype)
        count = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = per_token.sum() / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
