"""One FineTuneJob from TrainConfig to artifact: setup, data, train, save (contracts §5-§6).

Every rank runs this; rank 0 alone reports progress, writes lineage, manifest and the summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from kubetune_trainer import __version__, storage
from kubetune_trainer.errors import DataError, NaNLoss, OutOfMemory, Preempted
from kubetune_trainer.progress import ProgressReporter
from kubetune_trainer.recipes import checkpoints
from kubetune_trainer.recipes.callbacks import (
    METRICS_FILE,
    CheckpointPublisher,
    Preemption,
    ProgressCallback,
    write_metrics_history,
)
from kubetune_trainer.recipes.config import TrainConfig
from kubetune_trainer.recipes.data import (
    PreparedDataset,
    SFTTokenizer,
    TokenizeStats,
    check_pairs_render,
    load_prepared,
    report_drops,
)
from kubetune_trainer.recipes.distributed import (
    World,
    barrier,
    prepare_process_group,
    resolve_attention,
    resolve_precision,
)
from kubetune_trainer.recipes.lineage import TrueBase, chain_from, lineage_document, write_lineage
from kubetune_trainer.recipes.modeling import (
    build_true_base,
    load_model,
    load_tokenizer,
    lora_config,
    model_dtype,
    quantization,
    resolve_base,
    write_merged_model,
)
from kubetune_trainer.recipes.scratch import cache_dir, work_dir
from kubetune_trainer.recipes.trainers import (
    KubetuneDPOTrainer,
    KubetuneSFTTrainer,
    WeightedCollator,
    last_finite,
    training_arguments,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# `kubetune run --force` sets it: reuse neither a finished run nor checkpoints found in the output.
# Checked only after the dataset and base model resolve, so a job that cannot start loses nothing.
AFRESH_ENV = "KUBETUNE_TRAIN_AFRESH"
SUMMARY_KEYS = (
    "kind",
    "output",
    "artifact",
    "merged",
    "trueBase",
    "bestCheckpoint",
    "bestEvalLoss",
    "steps",
    "finalLoss",
    "resumedFrom",
    "timings",
)
# What write_termination_summary may leave out to fit the pod's 4096-byte termination message.
OPTIONAL_SUMMARY_KEYS = ("timings", "trueBase", "artifact")
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "tokenizers")


def library_versions() -> dict[str, str]:
    versions = {"kubetune-trainer": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class PhaseClock:
    """Wall-clock seconds per phase, each phase change reported to the operator."""

    def __init__(self, reporter: ProgressReporter):
        self.reporter = reporter
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.reporter.update(phase=name, force=True)
        self._current = (name, time.monotonic())
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - self._current[1]
            self._current = None

    def so_far(self) -> dict[str, float]:
        timings = dict(self.timings)
        if self._current:
            name, started = self._current
            timings[name] = timings.get(name, 0.0) + time.monotonic() - started
        return {name: round(seconds, 3) for name, seconds in timings.items()}


def reporter_for(world: World) -> ProgressReporter:
    """Rank 0 sends events; each node's first rank serves the pod's metrics; other ranks stay quiet."""
    env = dict(os.environ)
    if not world.is_main:
        env.pop("KUBETUNE_PROGRESS_URL", None)
        env.pop("KUBETUNE_PROGRESS_FILE", None)
    if not world.is_local_main:
        env["KUBETUNE_METRICS_PORT"] = "0"
    return ProgressReporter.from_env(env)


def oom_message(config: TrainConfig, exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "CUDA out of memory"
    return (
        f"{first_line}. Turn one of these down or on: per_device_train_batch_size (now "
        f"{config.per_device_train_batch_size}; raise gradient_accumulation_steps to keep the effective batch), "
        f"cutoff_len (now {config.cutoff_len}), gradient_checkpointing (now {str(config.gradient_checkpointing).lower()}), "
        f"deepspeed_stage (now {config.deepspeed_stage}; 3 shards the weights) with offload_optimizer/offload_params "
        f"(now {str(config.offload_optimizer).lower()}/{str(config.offload_params).lower()})"
    )


@dataclass
class Setup:
    args: Any
    model_path: str
    true_base: TrueBase
    tokenizer: Any
    dataset: PreparedDataset
    resume: checkpoints.Checkpoint | None
    resume_dir: Path | None
    lineage: dict[str, Any]
    run: str
    finished: dict[str, Any] | None = None
    data_stats: dict[str, Any] = field(default_factory=dict)
    attention: str = "sdpa"


def run_identity(config: TrainConfig, lineage: dict[str, Any]) -> str:
    """What makes two starts the same run: the config, the true base (with its adapters' sha256 and,
    for s3://, the base's content version: weights replaced under the same URI make another run)
    and the data."""
    document = json.dumps({"config": config.to_dict(), "lineage": lineage}, sort_keys=True)
    return "sha256:" + hashlib.sha256(document.encode()).hexdigest()


def finished_summary(output: str, run: str) -> dict[str, Any] | None:
    """The summary of this very run when `output` already holds it, finished (its manifest.json).

    A failing store raises rather than answer None: every rank must come to the same answer.
    """
    uri = storage.join(output, MANIFEST)
    if not storage.exists(uri):
        return None
    try:
        manifest = json.loads(storage.read_text(uri))
    except ValueError:
        return None
    if not isinstance(manifest, dict) or manifest.get("run") != run:
        return None
    return {key: manifest.get(key) for key in SUMMARY_KEYS} | {"_optional": list(OPTIONAL_SUMMARY_KEYS)}


def setup(config: TrainConfig, output: str, world: World, precision: str) -> Setup:
    attention = resolve_attention(config.attn_implementation, precision, quantized=config.peft == "qlora")
    dataset = load_prepared(config)
    prepare_process_group(config)
    work = work_dir(output)
    args = training_arguments(config, precision, str(work / "hf"), evaluate=bool(dataset.test))
    cache = cache_dir()
    with args.main_process_first(local=True, desc="downloads"):
        if world.is_local_main:
            # Leftovers of an earlier attempt on this node would mix with this run's checkpoints.
            shutil.rmtree(work / "hf", ignore_errors=True)
        base_path, base_version = resolve_base(config.base_model, cache)
        base_uri, chain = chain_from(config)
        model_path, true_base = build_true_base(base_path, base_uri, chain, cache, args)
        tokenizer = load_tokenizer(model_path, config.base_model)
        lineage = lineage_document(config, true_base, dataset.fingerprint, base_version)
        run = run_identity(config, lineage)
        afresh = os.environ.get(AFRESH_ENV) == "1"
        finished = None if afresh else finished_summary(output, run)
        latest = checkpoints.latest_complete(output)
        resume = latest if latest and not afresh and checkpoints.run_of(latest) == run else None
        resume_dir = checkpoints.download(resume, work / "hf") if resume and not finished else None
    # Every rank has read the output; only now may rank 0 change it.
    barrier()
    if world.is_main and not finished:
        # This run rewrites the output: an earlier run's manifest must not vouch for it meanwhile.
        storage.delete_file(storage.join(output, MANIFEST))
        if resume is None:
            if latest and afresh:
                log.warning("%s: starting afresh as asked (%s): deleting its checkpoints", output, AFRESH_ENV)
            elif latest:
                log.warning(
                    "%s holds checkpoints of another run (its config, base or dataset differ): "
                    "starting afresh and deleting them",
                    output,
                )
            checkpoints.delete_all(output)
    return Setup(args, model_path, true_base, tokenizer, dataset, resume, resume_dir, lineage, run, finished,
                 attention=attention)


def build_trainer(config: TrainConfig, state: Setup, precision: str, callbacks: list) -> Any:
    from datasets import Dataset
    from jinja2 import TemplateError
    from transformers.trainer_utils import IntervalStrategy

    model = load_model(
        state.model_path,
        config.base_model,
        model_dtype(config, precision),
        quantization(config, precision),
        attn_implementation=state.attention,
    )
    if config.peft == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    common = dict(
        model=model,
        args=state.args,
        processing_class=state.tokenizer,
        peft_config=lora_config(config),
        callbacks=callbacks,
    )
    if config.method == "sft":
        encoder = SFTTokenizer(state.tokenizer, config)
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

    def pairs(rows: list[dict[str, Any]]):
        return Dataset.from_list([{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows])

    test = pairs(state.dataset.test) if state.dataset.test else None
    try:
        trainer = KubetuneDPOTrainer(train_dataset=pairs(state.dataset.train), eval_dataset=test, **common)
    except TemplateError:
        check_pairs_render(state.tokenizer, state.dataset.train + state.dataset.test)
        raise
    # TRL drops pairs whose prompt alone fills max_length; say how many instead of losing them quietly.
    kept = {"train": len(trainer.train_dataset), "test": len(trainer.eval_dataset) if test is not None else 0}
    for split, rows in (("train", state.dataset.train), ("test", state.dataset.test)):
        dropped = len(rows) - kept[split]
        state.data_stats[split] = {
            "rows": len(rows),
            "dropped": {"prompt_fills_cutoff_len": dropped} if dropped else {},
        }
        if dropped:
            log.warning(
                "%s: dropped %d pair(s) whose prompt alone fills cutoff_len (%d)",
                split,
                dropped,
                config.cutoff_len,
            )
    if not len(trainer.train_dataset):
        raise DataError(
            f"dataset: {state.dataset.uri}/train.jsonl: every prompt fills cutoff_len ({config.cutoff_len})"
        )
    return trainer


def _best_checkpoint(output: str, history: list[dict[str, Any]]) -> tuple[str | None, float | None]:
    complete = [c.step for c in checkpoints.list_checkpoints(output) if c.complete]
    best = checkpoints.best_by_eval_loss(history, complete)
    if best is None:
        return None, None
    return checkpoints.checkpoint_uri(output, best[0]), best[1]


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the job; returns the termination summary (rank 0; other ranks get an empty dict)."""
    import torch

    world = World.from_env()
    reporter = reporter_for(world)
    clock = PhaseClock(reporter)
    preemption = Preemption()
    preemption.install()
    output = storage.parse(config.output).uri.rstrip("/")
    try:
        with clock.phase("setup"):
            precision = resolve_precision(config.precision)
            state = setup(config, output, world, precision)
        if state.finished:
            log.info("%s already holds this run, finished: nothing to train", output)
            reporter.update(
                phase="done", step=state.finished.get("steps"), message="already complete", force=True
            )
            return state.finished if world.is_main else {}
        callbacks = [
            preemption,
            CheckpointPublisher(output, world, config.save_total_limit, state.lineage, state.run, reporter),
            ProgressCallback(reporter),
        ]
        with clock.phase("data"):
            trainer = build_trainer(config, state, precision, callbacks)
        with clock.phase("train"):
            try:
                trainer.train(resume_from_checkpoint=str(state.resume_dir) if state.resume_dir else None)
            except NaNLoss as exc:
                good = checkpoints.latest_complete(output)
                raise NaNLoss(
                    f"{exc.message}; training stopped. Last good checkpoint: "
                    f"{good.uri if good else 'none (the NaN came before the first checkpoint)'}"
                ) from exc
        if preemption.stopped_at is not None:
            uri = checkpoints.checkpoint_uri(output, preemption.stopped_at)
            reporter.update(phase="train", checkpoint=uri, message="preempted", force=True)
            raise Preempted(f"SIGTERM: checkpoint {uri} written; a new start resumes from it")
        with clock.phase("save"):
            summary = save(config, output, world, trainer, state, clock, precision)
        reporter.update(phase="done", step=summary.get("steps"), message="completed", force=True)
        return summary
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(oom_message(config, exc)) from exc
    finally:
        preemption.uninstall()


def save(
    config: TrainConfig, output: str, world: World, trainer, state: Setup, clock: PhaseClock, precision: str
) -> dict[str, Any]:
    stage = work_dir(output) / "out"
    if world.is_main:
        shutil.rmtree(stage, ignore_errors=True)
    barrier()
    final_local = stage / "final"
    trainer.save_model(str(final_local))
    if not world.is_main:
        barrier()
        return {}
    write_lineage(final_local, state.lineage)
    merged_uri = None
    if config.merge_final:
        write_merged_model(state.model_path, final_local, stage / "merged", state.args)
        write_lineage(stage / "merged", {**state.lineage, "type": "merged"})
        merged_uri = storage.join(output, "merged")
    history = trainer.state.log_history
    write_metrics_history(history, stage / METRICS_FILE)
    final_uri = storage.join(output, "final")
    best_uri, best_loss = _best_checkpoint(output, history)
    summary = {
        "kind": "train",
        "output": output,
        "artifact": {
            "uri": final_uri,
            "type": state.lineage["type"],
            "sha256": storage.sha256_tree(final_local),
        },
        "merged": merged_uri,
        "trueBase": state.true_base.to_json(),
        "bestCheckpoint": best_uri,
        "bestEvalLoss": best_loss,
        "steps": trainer.state.global_step,
        "finalLoss": last_finite(history, "loss"),
        "resumedFrom": state.resume.uri if state.resume else None,
    }
    files = storage.sha256_tree(stage)
    summary["timings"] = clock.so_far()
    manifest = {
        **summary,
        "method": config.method,
        "files": files,
        "referenceModel": state.lineage["referenceModel"],
        "dataset": state.dataset.uri,
        "datasetFingerprint": state.dataset.fingerprint,
        "data": state.data_stats,
        "config": config.to_dict(),
        "run": state.run,
        "versions": library_versions(),
        "worldSize": world.world_size,
        "precision": precision,
        "attention": state.attention,
    }
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
    # final/ and merged/ must hold this run's files only, not also an earlier run's (a full model
    # beside an adapter, say).
    for name in ("final", "merged"):
        storage.delete_tree(storage.join(output, name))
    storage.upload_dir(stage, output)
    barrier()
    return {**summary, "_optional": list(OPTIONAL_SUMMARY_KEYS)}
