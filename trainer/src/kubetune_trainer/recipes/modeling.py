"""Base models, tokenizers, adapter chains and the LoRA config.

A chained job (`start_from`) trains on the true base its start point's lineage records plus that
adapter. The true base (base + every adapter of the chain merged in order) is built once per node into
the scratch directory and then loaded like any base model, so every later step (the DPO reference,
the final merge, QLoRA quantisation, ZeRO-3 partitioned loading) sees one ordinary model directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubetune_trainer import storage
from kubetune_trainer.artifacts.lineage import (
    ADAPTER_WEIGHTS,
    LINEAGE_FILE,
    MergedAdapter,
    TrueBase,
    normalize_model_uri,
)
from kubetune_trainer.artifacts.materialize import materialize_dir, materialize_versioned
from kubetune_trainer.artifacts.scratch import is_done, mark_done
from kubetune_trainer.errors import (
    AdapterBaseMismatch,
    BaseModelMissing,
    ConfigError,
    DataError,
    KubetuneError,
)
from kubetune_trainer.recipes.config import TrainConfig

log = logging.getLogger(__name__)


def resolve_base(uri: str, cache_dir: Path) -> tuple[str, str | None]:
    """What `from_pretrained` should load for `base_model` (a local directory or a hub id), and the
    content version of an s3:// base as downloaded (None otherwise), which the lineage records."""
    if uri.startswith("hf://"):
        return uri.removeprefix("hf://"), None
    loc = storage.parse(uri)
    if loc.scheme == "file" and not Path(loc.path, "config.json").is_file():
        raise BaseModelMissing(f"base_model: {uri}: no model there (no config.json)")
    if loc.scheme == "s3" and not storage.exists(storage.join(uri, "config.json")):
        raise BaseModelMissing(f"base_model: {uri}: no model there (no config.json)")
    path, version = materialize_versioned(uri, cache_dir, "base_model")
    return str(path), version


def read_lineage(final_uri: str) -> dict[str, Any]:
    uri = storage.join(final_uri, LINEAGE_FILE)
    try:
        text = storage.read_text(uri)
    except KubetuneError as exc:
        raise ConfigError(
            f"start_from: {final_uri} has no readable {LINEAGE_FILE} ({exc.message}); "
            "it must be the final/ output of a kubetune FineTuneJob"
        ) from exc
    try:
        lineage = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"start_from: {uri} is not JSON: {exc}") from exc
    if not isinstance(lineage, dict):
        raise ConfigError(f"start_from: {uri} must hold a JSON object")
    return lineage


def chain_from(config: TrainConfig) -> tuple[str, list[MergedAdapter]]:
    """`base_model` and the adapters to merge into it, in order, each with the sha256 on record.

    `start_from` itself comes last, with no sha256 yet: `verify_adapter` computes it on download.
    """
    base = normalize_model_uri(config.base_model)
    if not config.start_from:
        return base, []
    start = storage.parse(config.start_from).uri.rstrip("/")
    lineage = read_lineage(start)
    if lineage.get("type") != "adapter":
        raise ConfigError(
            f"start_from: {start} holds a {lineage.get('type', 'unknown')!r} model, not an adapter; "
            "use a full model as base_model instead"
        )
    try:
        recorded = TrueBase.from_json(lineage, f"{start}/{LINEAGE_FILE}")
    except DataError as exc:
        raise ConfigError(f"start_from: {exc.message}") from exc
    if recorded.base_model != base:
        raise AdapterBaseMismatch(
            f"start_from: {start} was trained on {recorded.base_model!r} (see its {LINEAGE_FILE}), "
            f"but base_model is {base!r}; chains must keep the base of the job they start from"
        )
    return base, [*recorded.merged_adapters, MergedAdapter(start)]


def verify_adapter(directory: Path, uri: str, expected_sha256: str | None) -> str:
    """sha256 of an adapter's weights; AdapterBaseMismatch when it changed since the chain recorded it."""
    weights = Path(directory) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"start_from: {uri} has no {ADAPTER_WEIGHTS}; only LoRA adapters can be chained")
    digest = storage.sha256_file(weights)
    if expected_sha256 and digest != expected_sha256:
        raise AdapterBaseMismatch(
            f"{uri}/{ADAPTER_WEIGHTS} has sha256 {digest}, but the chain recorded {expected_sha256}: "
            "the adapter was replaced after a later job was trained on it"
        )
    return digest


def load_tokenizer(path: str, uri: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise BaseModelMissing(f"base_model: {uri}: no tokenizer could be loaded ({exc})") from exc
    if not tokenizer.chat_template:
        raise ConfigError(
            f"base_model: {uri}: the tokenizer has no chat template; kubetune renders conversations "
            "only with the model's own template (add one to tokenizer_config.json)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, uri: str, dtype, quantization_config=None, attn_implementation: str | None = None):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, quantization_config=quantization_config, attn_implementation=attn_implementation
        )
    except OSError as exc:
        raise BaseModelMissing(f"base_model: {uri}: {exc}") from exc


@contextmanager
def zero3_init_paused(args) -> Iterator[None]:
    """Load a whole model on one rank while ZeRO-3 is configured (zero.Init would wait for all ranks)."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    config = getattr(args, "hf_deepspeed_config", None)
    if config is None:
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(config)


def merge_adapters(model, adapter_dirs: list[Path]):
    from peft import PeftModel

    for directory in adapter_dirs:
        model = PeftModel.from_pretrained(model, str(directory)).merge_and_unload()
    return model


def build_true_base(
    base_path: str, base_uri: str, chain: list[MergedAdapter], cache_dir: Path, args
) -> tuple[str, TrueBase]:
    """The directory holding base + chain merged (the base itself when there is no chain)."""
    if not chain:
        return base_path, TrueBase(base_uri)
    verified = []
    adapter_dirs = []
    for adapter in chain:
        directory = materialize_dir(adapter.uri, cache_dir, "start_from")
        verified.append(MergedAdapter(adapter.uri, verify_adapter(directory, adapter.uri, adapter.sha256)))
        adapter_dirs.append(directory)
    true_base = TrueBase(base_uri, tuple(verified))
    # base_path, not only base_uri: an s3:// base overwritten in place downloads to a new path.
    identity = {"trueBase": true_base.to_json(), "basePath": base_path}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    target = cache_dir / "true-base" / key
    if is_done(target):
        return str(target), true_base
    log.info("merging %d adapter(s) into %s -> %s", len(chain), base_uri, target)
    with zero3_init_paused(args):
        model = merge_adapters(load_model(base_path, base_uri, "auto"), adapter_dirs)
    model.save_pretrained(target)
    load_tokenizer(base_path, base_uri).save_pretrained(target)
    mark_done(target)
    return str(target), true_base


def model_dtype(config: TrainConfig, precision: str):
    """LoRA keeps the frozen base in the training precision; full fine-tunes keep fp32 master weights."""
    import torch

    if config.peft == "full" or precision == "fp32":
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def quantization(config: TrainConfig, precision: str):
    if config.peft != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        # bitsandbytes quantizes on CPU too (slowly), so a laptop can try a QLoRA config.
        raise ConfigError("peft: qlora needs bitsandbytes (install kubetune-trainer[gpu])") from exc
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        # bf16 only where the device has it: a V100 or a CPU computes in fp16/fp32 instead.
        bnb_4bit_compute_dtype=model_dtype(config, precision),
    )


def lora_config(config: TrainConfig):
    if config.peft == "full":
        return None
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def write_merged_model(true_base_path: str, adapter_dir: Path, target: Path, args) -> None:
    """base + chain + the trained adapter as one full model, in the base's own dtype."""
    with zero3_init_paused(args):
        model = merge_adapters(load_model(true_base_path, true_base_path, "auto"), [adapter_dir])
    model.save_pretrained(target)
    load_tokenizer(str(adapter_dir), str(adapter_dir)).save_pretrained(target)
