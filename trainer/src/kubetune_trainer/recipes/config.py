"""`TrainConfig`: the one config a FineTuneJob's pods and `kubetune run` train from (contracts §7).

Flat and snake_case like TRL's configs. The operator renders it into a ConfigMap; the trainer reads
it from YAML or JSON. Unknown keys and bad values raise ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from kubetune_trainer import storage
from kubetune_trainer.configfile import read_config_file
from kubetune_trainer.errors import ConfigError, StorageError

SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)

_URI = re.compile(r"^(hf://[\w.-]+(/[\w.-]+)?|(?!hf://)\S+)$")

# The DPO losses whose `label_smoothing` means something: cDPO (sigmoid), robust, EXO and AOT.
SMOOTHED_LOSSES = ("sigmoid", "robust", "exo_pair", "aot", "aot_unpaired")
# The losses of TRL's DPOTrainer (1.16) that train from prompt/chosen/rejected pairs against a
# reference model; its "sft" loss is `sft_loss_weight`. Not discopop: at the paper's tau (0.05, which
# TRL's default is) its loss falls as a zero margin turns negative, so from a reference-equal start
# it first unlearns the preference (seen on the tiny model), and tau is one more knob to expose.
DpoLoss = Literal[
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "sigmoid_norm",
]
DPO_LOSSES = get_args(DpoLoss)
# Methods that train against a reference model (the true base, adapter disabled or a frozen copy).
WITH_REFERENCE = ("dpo", "kto")


@dataclass(config=ConfigDict(extra="forbid"))
class TrainConfig:
    method: Literal["sft", "dpo", "orpo", "simpo", "kto"]
    base_model: str
    dataset: str
    output: str
    dataset_fingerprint: str | None = None
    start_from: str | None = None

    peft: Literal["lora", "qlora", "full"] = "lora"
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], min_length=1)

    learning_rate: float = Field(1e-4, gt=0.0)
    num_train_epochs: float = Field(1.0, gt=0.0)
    max_steps: int = -1
    per_device_train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    cutoff_len: int = Field(1024, ge=8)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = Field(1.0, ge=0.0)
    seed: int = Field(42, ge=0)
    full_determinism: bool = False

    completion_only_loss: bool = True
    key_token_patterns: list[str] = Field(default_factory=list)
    key_token_weight: float = Field(1.0, gt=0.0)
    packing: bool = False

    beta: float = Field(0.1, gt=0.0)
    loss_type: DpoLoss = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    sft_loss_weight: float = Field(0.0, ge=0.0)
    precompute_ref_log_probs: bool = False
    padding_free: bool = False
    simpo_gamma: float = Field(0.5, ge=0.0)
    kto_loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"
    desirable_weight: float = Field(1.0, gt=0.0)
    undesirable_weight: float = Field(1.0, gt=0.0)

    report_to: list[Literal["mlflow", "tensorboard", "wandb"]] = Field(default_factory=list)
    run_name: str | None = Field(None, min_length=1, max_length=128)
    tracking_project: str | None = Field(None, min_length=1, max_length=128)

    save_steps: int = Field(100, ge=1)
    save_total_limit: int = Field(3, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    logging_steps: int = Field(10, ge=1)

    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    deepspeed_stage: Literal[0, 2, 3] = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "eager"] = "auto"
    merge_final: bool = False

    @field_validator("base_model", "dataset", "output", "start_from")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _URI.match(value):
            raise ValueError(f"{value!r} is not a URI (file://, s3://, hf://org/name or a path)")
        if not value.startswith("hf://"):
            try:
                storage.parse(value)
            except StorageError as exc:
                raise ValueError(exc.message) from exc
        return value

    @field_validator("dataset", "output", "start_from")
    @classmethod
    def _no_hub(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("hf://"):
            raise ValueError("hf:// is only allowed for base_model")
        return value

    @field_validator("max_steps")
    @classmethod
    def _max_steps(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be -1 (train num_train_epochs) or > 0")
        return value

    @field_validator("lr_scheduler_type")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        if value not in SCHEDULERS:
            raise ValueError(f"must be one of {', '.join(SCHEDULERS)}")
        return value

    @field_validator("key_token_patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"key_token_patterns[{index}]: {pattern!r} is not a regular expression: {exc}"
                ) from exc
        return value

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        if self.offload_params and self.deepspeed_stage != 3:
            raise ValueError("offload_params: needs deepspeed_stage: 3")
        if self.offload_optimizer and self.deepspeed_stage == 0:
            raise ValueError("offload_optimizer: needs deepspeed_stage: 2 or 3")
        if self.merge_final and self.peft == "full":
            raise ValueError("merge_final: a full fine-tune is already a merged model (use peft: lora)")
        if self.eval_steps and self.save_steps % self.eval_steps:
            raise ValueError(
                f"eval_steps: must divide save_steps ({self.save_steps}), so that every checkpoint has an eval loss"
            )
        if self.peft == "qlora" and self.deepspeed_stage == 3:
            raise ValueError("peft: qlora does not shard under deepspeed_stage: 3 (use 0 or 2)")
        if self.label_smoothing and (self.method != "dpo" or self.loss_type not in SMOOTHED_LOSSES):
            raise ValueError(f"label_smoothing: applies to method dpo with loss_type {', '.join(SMOOTHED_LOSSES)}")
        if self.method == "dpo" and self.loss_type == "exo_pair" and not self.label_smoothing:
            raise ValueError("label_smoothing: loss_type exo_pair needs it above 0 (the EXO paper uses 1e-3)")
        if self.precompute_ref_log_probs and self.method not in WITH_REFERENCE:
            raise ValueError(f"precompute_ref_log_probs: method {self.method} has no reference model")
        if (
            self.method == "kto"
            and self.kto_loss_type == "kto"
            and self.per_device_train_batch_size < 2
        ):
            # TRL's KTO estimates its KL term from the other completions of the same micro-batch.
            raise ValueError("per_device_train_batch_size: kto needs 2 or more (its KL term pairs answers in a batch)")
        if len(set(self.report_to)) != len(self.report_to):
            raise ValueError("report_to: names a tracker twice")
        return self

    @property
    def eval_interval(self) -> int:
        return self.eval_steps or self.save_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_of(error: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ()) if part != "__root__"]
    if not location:
        return ""
    head, *rest = location
    return head + "".join(f"[{part}]" for part in rest)


def _message(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = _field_of(error)
        text = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") in ("unexpected_keyword_argument", "extra_forbidden"):
            text = "unknown field (check the spelling; see docs/training.md)"
        elif error.get("type") in ("missing_argument", "missing"):
            text = "required"
        lines.append(f"{field}: {text}" if field and not text.startswith(field) else text)
    return "; ".join(lines)


def config_from_dict(data: Any, source: str = "config") -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of field: value, got {type(data).__name__}")
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_message(exc)}") from exc
    except TypeError as exc:
        # Non-string keys never reach pydantic's field checks.
        raise ConfigError(f"{source}: {exc}") from exc


def load_config(path: str | Path) -> TrainConfig:
    """Read a TrainConfig from a YAML or JSON file."""
    return config_from_dict(read_config_file(path), source=str(path))
