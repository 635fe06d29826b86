"""Preemption and resume: SIGTERM at step k writes a checkpoint, exits 75, and a new start finishes
with the same losses as a run that was never interrupted. A start into an output that already holds
a run resumes, or returns, only that very run."""

import json

import pytest
import torch
from safetensors.torch import load

from kubetune_trainer import storage
from kubetune_trainer.errors import DataError, Preempted, StorageError
from kubetune_trainer.recipes import train
from kubetune_trainer.recipes.base import finished_summary

from .conftest import losses, read_jsonl

STEPS = 6


def output_root(store: str, tmp_path, request) -> str:
    if store == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/ns/finetunejobs"
    return f"file://{tmp_path}"


def history(output: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(f"{output}/metrics.jsonl").splitlines()]


@pytest.mark.parametrize(("method", "store"), [("sft", "file"), ("dpo", "s3")])
def test_resume_after_sigterm_matches_an_uninterrupted_run(
    make_config, trainer_env, tmp_path, sigterm_at_step, request, method, store
):
    root = output_root(store, tmp_path, request)
    whole, split = f"{root}/whole", f"{root}/split"
    fields = {"max_steps": STEPS, "save_steps": 2, "lora_dropout": 0.1}
    train(make_config(method, output=whole, **fields))

    sigterm_at_step(3)
    with pytest.raises(Preempted, match=r"checkpoint .*/split/checkpoints/checkpoint-000003 written"):
        train(make_config(method, output=split, **fields))
    assert storage.exists(f"{split}/checkpoints/checkpoint-000003/COMPLETE")
    assert not storage.exists(f"{split}/final")
    progress = read_jsonl(trainer_env / "progress.jsonl")
    assert progress[-1]["message"] == "preempted"

    sigterm_at_step(None)
    summary = train(make_config(method, output=split, **fields))
    assert summary["resumedFrom"] == f"{split}/checkpoints/checkpoint-000003"
    assert summary["steps"] == STEPS

    keys = ["loss", "eval_loss"] + (["rewards/margins", "rewards/accuracies"] if method == "dpo" else [])
    for key in keys:
        expected, resumed = losses(history(whole), key), losses(history(split), key)
        assert len(resumed) == len(expected) == (STEPS if key != "eval_loss" else STEPS // 2), key
        assert resumed == pytest.approx(expected, rel=1e-5, abs=1e-6), key
    weights = load(storage.read_bytes(f"{whole}/final/adapter_model.safetensors"))
    for name, tensor in load(storage.read_bytes(f"{split}/final/adapter_model.safetensors")).items():
        assert torch.allclose(tensor, weights[name], atol=1e-6), name


def test_a_finished_job_started_again_trains_nothing_and_changes_nothing(
    make_config, trainer_env, s3_bucket, sigterm_at_step
):
    """An operator restart or a retried pod runs a finished job again: same result, same artifacts."""
    output = f"s3://{s3_bucket}/ns/finetunejobs/dpo"
    config = make_config("dpo", output=output, max_steps=2, save_steps=2)
    sigterm_at_step(2)  # in the last step: finishing is quicker than a retry
    first = train(config)
    sigterm_at_step(None)
    before = {uri: storage.read_bytes(uri) for uri in storage.list_files(output)}

    assert train(config) == first
    assert {uri: storage.read_bytes(uri) for uri in storage.list_files(output)} == before
    assert read_jsonl(trainer_env / "progress.jsonl")[-1]["message"] == "already complete"

    # A pod that died after its last checkpoint, before the manifest (say, uploading final/), is
    # retried: it resumes at max_steps, where transformers would train one step more.
    storage.delete_file(f"{output}/manifest.json")
    again = train(config)
    assert again["resumedFrom"] == f"{output}/checkpoints/checkpoint-000002" and again["steps"] == 2
    assert again["artifact"]["sha256"] == first["artifact"]["sha256"]
    assert len(losses(history(output))) == 2


def test_asked_to_start_afresh_a_finished_job_trains_again_but_only_once_its_inputs_resolve(
    make_config, trainer_env, tmp_path, monkeypatch
):
    """`kubetune run --force`: nothing of the output goes before the dataset and base are found."""
    output = tmp_path / "output"
    config = make_config("sft", max_steps=2, save_steps=1)
    first = train(config)
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    monkeypatch.setenv("KUBETUNE_TRAIN_AFRESH", "1")

    missing = make_config("sft", max_steps=2, save_steps=1, dataset=f"file://{tmp_path}/no-such-dataset")
    with pytest.raises(DataError):
        train(missing)
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before

    again = train(config)
    assert again["resumedFrom"] is None and again["steps"] == 2
    assert read_jsonl(trainer_env / "progress.jsonl")[-1]["message"] != "already complete"
    assert again["artifact"]["sha256"] == first["artifact"]["sha256"]


def test_another_job_in_the_same_output_starts_afresh(make_config, trainer_env, tmp_path):
    """Its checkpoints and final/ of an earlier config are never resumed from or mixed in."""
    output = tmp_path / "output"
    train(make_config("sft", peft="full", learning_rate=1e-3, max_steps=2, save_steps=2))

    summary = train(make_config("sft", max_steps=2, save_steps=2))
    assert summary["resumedFrom"] is None and summary["steps"] == 2
    assert "model.safetensors" not in {p.name for p in (output / "final").iterdir()}
    marker = json.loads((output / "checkpoints" / "checkpoint-000002" / "COMPLETE").read_text())
    assert marker["run"] == json.loads((output / "manifest.json").read_text())["run"]


def test_only_a_readable_manifest_of_this_run_means_finished(tmp_path, monkeypatch):
    output = f"file://{tmp_path}"
    assert finished_summary(output, "sha256:this") is None
    (tmp_path / "manifest.json").write_text('{"run": "sha256:other", "steps": 4}')
    assert finished_summary(output, "sha256:this") is None
    assert finished_summary(output, "sha256:other")["steps"] == 4
    (tmp_path / "manifest.json").write_text("{half a manif")
    assert finished_summary(output, "sha256:other") is None

    def unavailable(uri):
        raise StorageError(f"{uri}: SlowDown")

    # Not "unfinished": one rank of many would then train while the others return.
    monkeypatch.setattr(storage, "read_text", unavailable)
    with pytest.raises(StorageError, match="SlowDown"):
        finished_summary(output, "sha256:other")


def test_new_weights_under_the_same_base_uri_make_another_run(make_config, trainer_env, s3_bucket, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    base = f"s3://{s3_bucket}/models/tiny"
    storage.upload_dir(tiny_model_dir, base)
    output = f"s3://{s3_bucket}/ns/finetunejobs/sft"
    config = make_config("sft", base_model=base, output=output, max_steps=2, save_steps=2)
    first = train(config)
    lineage = json.loads(storage.read_text(f"{output}/final/kubetune.json"))
    assert lineage["baseModelVersion"] == storage.s3_version(base)  # evaluation checks it

    weights = load_file(tiny_model_dir / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    storage.upload_file(tmp_path / "model.safetensors", f"{base}/model.safetensors")

    again = train(config)
    assert again["resumedFrom"] is None and again["steps"] == 2
    assert again["artifact"]["sha256"]["adapter_model.safetensors"] != first["artifact"]["sha256"]["adapter_model.safetensors"]
    assert read_jsonl(trainer_env / "progress.jsonl")[-1].get("message") != "already complete"
