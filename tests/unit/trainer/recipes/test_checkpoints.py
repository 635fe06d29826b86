import pytest

from kubetune_trainer import storage
from kubetune_trainer.errors import StorageError
from kubetune_trainer.recipes import checkpoints


@pytest.fixture(params=["file", "s3"])
def output(request, tmp_path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/job"
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/ns/finetunejobs/job"


def save(output, tmp_path, step, complete=True):
    local = tmp_path / f"local-{step}"
    (local / "global_step").mkdir(parents=True)
    (local / "adapter_model.safetensors").write_bytes(b"w" * step)
    (local / "global_step" / "zero_pp_rank_0.pt").write_bytes(b"z")
    uri = checkpoints.checkpoint_uri(output, step)
    checkpoints.upload_files(local, uri)
    if complete:
        checkpoints.mark_complete(uri, step, run="sha256:run")
    return uri


def test_names_are_zero_padded(output):
    assert checkpoints.checkpoint_uri(output, 100).endswith("/checkpoints/checkpoint-000100")


def test_only_checkpoints_with_their_marker_count(output, tmp_path):
    save(output, tmp_path, 100)
    save(output, tmp_path, 200, complete=False)  # a pod killed mid-upload
    found = checkpoints.list_checkpoints(output)
    assert [(c.step, c.complete) for c in found] == [(100, True), (200, False)]
    assert checkpoints.latest_complete(output).step == 100


def test_the_marker_names_the_run_that_completed_the_checkpoint(output, tmp_path):
    save(output, tmp_path, 100)
    save(output, tmp_path, 200)
    storage.write_text(storage.join(checkpoints.checkpoint_uri(output, 200), "COMPLETE"), "{broken")
    first, second = checkpoints.list_checkpoints(output)
    assert checkpoints.run_of(first) == "sha256:run"
    assert checkpoints.run_of(second) is None  # unreadable: belongs to no run, so never resumed
    assert checkpoints.delete_all(output) == [100, 200]
    assert checkpoints.list_checkpoints(output) == []


def test_a_marker_the_store_fails_to_read_fails_the_start(output, tmp_path, monkeypatch):
    """Not 'no run': one rank of many would then start afresh while the others resume."""
    save(output, tmp_path, 100)

    def unavailable(uri):
        raise StorageError(f"{uri}: SlowDown")

    monkeypatch.setattr(storage, "read_text", unavailable)
    with pytest.raises(StorageError, match="SlowDown"):
        checkpoints.run_of(checkpoints.latest_complete(output))


def test_nothing_to_resume_from_an_empty_output(output):
    assert checkpoints.latest_complete(output) is None


def test_prune_keeps_the_newest_and_the_best_and_drops_stale_partials(output, tmp_path):
    for step in (100, 300, 400, 500):
        save(output, tmp_path, step)
    save(output, tmp_path, 200, complete=False)
    save(output, tmp_path, 600, complete=False)
    deleted = checkpoints.prune(output, keep=2, protect=100)
    assert sorted(deleted) == [200, 300]
    assert [(c.step, c.complete) for c in checkpoints.list_checkpoints(output)] == [
        (100, True),
        (400, True),
        (500, True),
        (600, False),  # newer than any complete one: may still be uploading
    ]
    assert not storage.exists(
        storage.join(checkpoints.checkpoint_uri(output, 300), "adapter_model.safetensors")
    )


def test_download_restores_the_trainer_name(output, tmp_path):
    save(output, tmp_path, 7)
    local = checkpoints.download(checkpoints.latest_complete(output), tmp_path / "hf")
    assert local.name == "checkpoint-7"
    assert (local / "adapter_model.safetensors").read_bytes() == b"w" * 7
    assert (local / "global_step" / "zero_pp_rank_0.pt").is_file()


def test_best_by_eval_loss_only_among_saved_steps():
    history = [
        {"step": 50, "eval_loss": 0.1},
        {"step": 100, "loss": 0.9},
        {"step": 100, "eval_loss": 0.5},
        {"step": 200, "eval_loss": 0.4},
        {"step": 300, "eval_loss": float("nan")},
    ]
    assert checkpoints.best_by_eval_loss(history, [100, 200, 300]) == (200, 0.4)
    assert checkpoints.best_by_eval_loss(history, [300]) is None
