"""What every method's recipe shares, in torchtune's shape: setup, resume, train, save.

One FineTuneJob from TrainConfig to artifact (contracts §5-§6). A method (sft.py, dpo.py) says only
which rows it reads, the TRL config and trainer it builds from them, and which reference model its
lineage names; downloads, chains, checkpoints, preemption, lineage, manifest and the summary are
here. Every rank runs a recipe; rank 0 alone reports progress, writes lineage, manifest and summary.
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
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from kubetune_trainer import __version__, storage
from kubetune_trainer.artifacts.lineage import Lineage, TrueBase
from kubetune_trainer.artifacts.scratch import cache_dir, work_dir
from kubetune_trainer.data.prepared import PreparedDataset, RowKind, load_prepared
from kubetune_trainer.errors import NaNLoss, OutOfMemory, Preempted
from kubetune_trainer.progress import ProgressReporter
from kubetune_trainer.recipes import checkpoints, tracking
from kubetune_trainer.recipes.callbacks import (
    METRICS_FILE,
    CheckpointPublisher,
    Preemption,
    ProgressCallback,
    write_metrics_history,
)
from kubetune_trainer.recipes.config import TrainConfig
from kubetune_trainer.recipes.distributed import (
    World,
    barrier,
    prepare_process_group,
    resolve_attention,
    resolve_precision,
)
from kubetune_trainer.recipes.modeling import (
    build_true_base,
    chain_from,
    load_model,
    load_tokenizer,
    lora_config,
    model_dtype,
    quantization,
    resolve_base,
    write_merged_model,
)
from kubetune_trainer.recipes.trainers import common_arguments, last_finite

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
    "plots",
    "tracking",
)
# What write_termination_summary may leave out to fit the pod's 4096-byte termination message, the
# last first.
OPTIONAL_SUMMARY_KEYS = ("timings", "trueBase", "artifact", "tracking", "plots")
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


def job_of_pod() -> dict[str, str | None]:
    """The FineTuneJob this process trains for (contracts §3)."""
    return {"namespace": os.environ.get("KUBETUNE_NAMESPACE"), "name": os.environ.get("KUBETUNE_NAME")}


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
class Resume:
    """Where a start picks up: `finished` (the summary of this very run, already done), or the newest
    complete checkpoint of this run (`checkpoint`, downloaded to `local`, with the ids of the tracker
    runs it logged to in `tracking`), or step 0. `latest` is the newest complete checkpoint of any
    run, which a fresh start deletes; `afresh`: asked to start so."""

    finished: dict[str, Any] | None
    latest: checkpoints.Checkpoint | None
    checkpoint: checkpoints.Checkpoint | None
    local: Path | None
    afresh: bool = False
    tracking: dict[str, str] = field(default_factory=dict)


@dataclass
class Setup:
    args: Any
    model_path: str
    true_base: TrueBase
    tokenizer: Any
    dataset: PreparedDataset
    resume: Resume
    lineage: Lineage
    run: str
    data_stats: dict[str, Any] = field(default_factory=dict)
    attention: str = "sdpa"


def run_identity(config: TrainConfig, lineage: Lineage) -> str:
    """What makes two starts the same run: the config, the true base (with its adapters' sha256 and,
    for s3://, the base's content version: weights replaced under the same URI make another run)
    and the data."""
    document = json.dumps({"config": config.to_dict(), "lineage": lineage.to_json()}, sort_keys=True)
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


def best_checkpoint(output: str, history: list[dict[str, Any]]) -> tuple[str | None, float | None]:
    complete = [c.step for c in checkpoints.list_checkpoints(output) if c.complete]
    best = checkpoints.best_by_eval_loss(history, complete)
    if best is None:
        return None, None
    return checkpoints.checkpoint_uri(output, best[0]), best[1]


class Recipe:
    """A training method. Subclasses set `method` and `rows` and implement `arguments` and `build`;
    `reference_model` when the method trains against one."""

    method: ClassVar[str]
    # Which canonical rows of the prepared dataset the method trains on.
    rows: ClassVar[RowKind]

    def __init__(self, config: TrainConfig):
        self.config = config
        self.world = World.from_env()
        self.output = storage.parse(config.output).uri.rstrip("/")
        self.tracked = tracking.TrackedRuns(config.report_to)

    # What a method says.

    def arguments(self, common: dict[str, Any]) -> Any:
        """This method's TRL config, given the TrainingArguments every method shares."""
        raise NotImplementedError

    def build(self, state: Setup, common: dict[str, Any]) -> Any:
        """This method's TRL trainer over `state.dataset`, given the trainer arguments every method
        shares (model, args, processing_class, peft_config, callbacks). Records in `state.data_stats`
        what it kept and dropped of each split; DataError when nothing is left to train on."""
        raise NotImplementedError

    def reference_model(self) -> str | None:
        """What the lineage names as the reference model; None for a method without one."""
        return None

    # The shared shape.

    def training_arguments(self, precision: str, output_dir: str, evaluate: bool) -> Any:
        return self.arguments(common_arguments(self.config, precision, output_dir, evaluate))

    def lineage(self, true_base: TrueBase, fingerprint: str, base_version: str | None) -> Lineage:
        return Lineage(
            type="full" if self.config.peft == "full" else "adapter",
            method=self.config.method,
            true_base=true_base,
            base_model_version=base_version,
            reference_model=self.reference_model(),
            dataset_fingerprint=fingerprint,
            job=job_of_pod(),
        )

    def run(self) -> dict[str, Any]:
        """Train and save; returns the termination summary (rank 0; other ranks get an empty dict)."""
        import torch

        config, output, world = self.config, self.output, self.world
        reporter = reporter_for(world)
        clock = PhaseClock(reporter)
        preemption = Preemption()
        preemption.install()
        try:
            with clock.phase("setup"):
                precision = resolve_precision(config.precision)
                state = self.setup(precision)
            if state.resume.finished:
                log.info("%s already holds this run, finished: nothing to train", output)
                reporter.update(
                    phase="done", step=state.resume.finished.get("steps"), message="already complete", force=True
                )
                return state.resume.finished if world.is_main else {}
            callbacks = [
                preemption,
                CheckpointPublisher(
                    output, world, config.save_total_limit, state.lineage, state.run, reporter, self.tensorboard,
                    self.tracked,
                ),
                ProgressCallback(reporter),
                self.tracked,
            ]
            with tracking.continuing(config.report_to, state.resume.tracking, world.is_main):
                with clock.phase("data"):
                    trainer = self.trainer(state, precision, callbacks)
                with clock.phase("train"):
                    self.train(trainer, state)
                if preemption.stopped_at is not None:
                    uri = checkpoints.checkpoint_uri(output, preemption.stopped_at)
                    reporter.update(phase="train", checkpoint=uri, message="preempted", force=True)
                    raise Preempted(f"SIGTERM: checkpoint {uri} written; a new start resumes from it")
            with clock.phase("save"):
                summary = self.save(trainer, state, clock, precision)
            reporter.update(phase="done", step=summary.get("steps"), message="completed", force=True)
            return summary
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(oom_message(config, exc)) from exc
        finally:
            preemption.uninstall()

    @property
    def tensorboard(self) -> Path | None:
        """Where TensorBoard's event files are written, when it is a tracker."""
        return work_dir(self.output) / tracking.TENSORBOARD_DIR if "tensorboard" in self.config.report_to else None

    def setup(self, precision: str) -> Setup:
        config, output, world = self.config, self.output, self.world
        attention = resolve_attention(config.attn_implementation, precision, quantized=config.peft == "qlora")
        dataset = load_prepared(config.dataset, self.rows, config.dataset_fingerprint)
        prepare_process_group(config)
        work = work_dir(output)
        tracking.prepare(config, work, job_of_pod())
        args = self.training_arguments(precision, str(work / "hf"), evaluate=bool(dataset.test))
        cache = cache_dir()
        with args.main_process_first(local=True, desc="downloads"):
            if world.is_local_main:
                # Leftovers of an earlier attempt on this node would mix with this run's checkpoints.
                shutil.rmtree(work / "hf", ignore_errors=True)
                shutil.rmtree(work / tracking.TENSORBOARD_DIR, ignore_errors=True)
            base_path, base_version = resolve_base(config.base_model, cache)
            base_uri, chain = chain_from(config)
            model_path, true_base = build_true_base(base_path, base_uri, chain, cache, args)
            tokenizer = load_tokenizer(model_path, config.base_model)
            lineage = self.lineage(true_base, dataset.fingerprint, base_version)
            run = run_identity(config, lineage)
            resume = self.resume(run, work)
        # Every rank has read the output; only now may rank 0 change it.
        barrier()
        if world.is_main and not resume.finished:
            # This run rewrites the output: an earlier run's manifest must not vouch for it meanwhile.
            storage.delete_file(storage.join(output, MANIFEST))
            if resume.checkpoint is None:
                if resume.latest and resume.afresh:
                    log.warning("%s: starting afresh as asked (%s): deleting its checkpoints", output, AFRESH_ENV)
                elif resume.latest:
                    log.warning(
                        "%s holds checkpoints of another run (its config, base or dataset differ): "
                        "starting afresh and deleting them",
                        output,
                    )
                checkpoints.delete_all(output)
                # Another run's curves do not belong beside this one's.
                storage.delete_tree(storage.join(output, tracking.TENSORBOARD_DIR))
        return Setup(args, model_path, true_base, tokenizer, dataset, resume, lineage, run, attention=attention)

    def resume(self, run: str, work: Path) -> Resume:
        """This run finished already, or its newest complete checkpoint (downloaded, with the event
        files TensorBoard published), or nothing; always nothing when asked to start afresh."""
        afresh = os.environ.get(AFRESH_ENV) == "1"
        finished = None if afresh else finished_summary(self.output, run)
        latest = checkpoints.latest_complete(self.output)
        marker = checkpoints.marker_of(latest) if latest and not afresh else {}
        checkpoint = latest if marker.get("run") == run else None
        local = checkpoints.download(checkpoint, work / "hf") if checkpoint and not finished else None
        if local and self.world.is_main and self.tensorboard is not None:
            tracking.restore_tensorboard(self.output, self.tensorboard)
        ids = tracking.resumed_ids(marker) if checkpoint else {}
        return Resume(finished, latest, checkpoint, local, afresh, ids)

    def trainer(self, state: Setup, precision: str, callbacks: list) -> Any:
        """The model loaded (and prepared for QLoRA) and handed to the method's `build`."""
        config = self.config
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
        return self.build(state, common)

    def train(self, trainer: Any, state: Setup) -> None:
        local = state.resume.local
        try:
            trainer.train(resume_from_checkpoint=str(local) if local else None)
        except NaNLoss as exc:
            good = checkpoints.latest_complete(self.output)
            raise NaNLoss(
                f"{exc.message}; training stopped. Last good checkpoint: "
                f"{good.uri if good else 'none (the NaN came before the first checkpoint)'}"
            ) from exc

    def save(self, trainer: Any, state: Setup, clock: PhaseClock, precision: str) -> dict[str, Any]:
        config, output, world = self.config, self.output, self.world
        stage = work_dir(output) / "out"
        if world.is_main:
            shutil.rmtree(stage, ignore_errors=True)
        barrier()
        final_local = stage / "final"
        trainer.save_model(str(final_local))
        if not world.is_main:
            barrier()
            return {}
        state.lineage.write(final_local)
        merged_uri = None
        if config.merge_final:
            write_merged_model(state.model_path, final_local, stage / "merged", state.args)
            replace(state.lineage, type="merged").write(stage / "merged")
            merged_uri = storage.join(output, "merged")
        history = trainer.state.log_history
        write_metrics_history(history, stage / METRICS_FILE)
        plots = tracking.plot_curves(history, stage / tracking.PLOTS_DIR)
        runs = dict(self.tracked.runs)
        if self.tensorboard is not None and self.tensorboard.is_dir():
            shutil.copytree(self.tensorboard, stage / tracking.TENSORBOARD_DIR)
            runs["tensorboard"] = storage.join(output, tracking.TENSORBOARD_DIR)
        final_uri = storage.join(output, "final")
        best_uri, best_loss = best_checkpoint(output, history)
        summary = {
            "kind": "train",
            "output": output,
            "artifact": {
                "uri": final_uri,
                "type": state.lineage.type,
                "sha256": storage.sha256_tree(final_local),
            },
            "merged": merged_uri,
            "trueBase": state.true_base.to_json(),
            "bestCheckpoint": best_uri,
            "bestEvalLoss": best_loss,
            "steps": trainer.state.global_step,
            "finalLoss": last_finite(history, "loss"),
            "resumedFrom": state.resume.checkpoint.uri if state.resume.checkpoint else None,
            "plots": {name: storage.join(output, tracking.PLOTS_DIR, f"{name}.png") for name in plots},
            "tracking": runs,
        }
        files = storage.sha256_tree(stage)
        summary["timings"] = clock.so_far()
        manifest = {
            **summary,
            "method": config.method,
            "files": files,
            "referenceModel": state.lineage.reference_model,
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
