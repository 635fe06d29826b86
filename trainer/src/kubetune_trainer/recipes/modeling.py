"""Base models, tokenizers, adapter chains and the LoRA config.

A chain's true base (base + every adapter of the chain merged in order) is built once per node into
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

from kubetune_trainer import storage
from kubetune_trainer.errors import BaseModelMissing, ConfigError
from kubetune_trainer.recipes.config import TrainConfig
from kubetune_trainer.recipes.lineage import MergedAdapter, TrueBase, verify_adapter
from kubetune_trainer.recipes.scratch import download_once, is_done, keep_only_version, mark_done

log = logging.getLogger(__name__)


def materialize_dir(uri: str, cache_dir: Path, field: str) -> Path:
    """A local directory holding `uri`: the path itself for file://, a download (once per node and
    content version) for s3://."""
    return materialize_versioned(uri, cache_dir, field)[0]


def materialize_versioned(uri: str, cache_dir: Path, field: str) -> tuple[Path, str | None]:
    """`materialize_dir`, with the content version (storage.s3_version) of what it downloaded;
    None for file://."""
    loc = storage.parse(uri)
    if loc.scheme == "file":
        return Path(loc.path), None
    key = Path(loc.path.rstrip("/"))
    version = storage.s3_version(uri)
    if version is None:
        raise BaseModelMissing(f"{field}: {uri}: no objects under this prefix")
    # Other storage errors stay StorageError: they may pass, and that exit code is retried.
    target = cache_dir / "downloads" / loc.bucket / key.parent / f"{key.name}@{version}"
    download_once(uri, target)
    keep_only_version(target)
    return target, version


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
