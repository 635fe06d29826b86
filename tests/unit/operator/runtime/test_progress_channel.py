"""Progress events → status.progress at a bounded rate; tokens are the resource's own."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from kubetune_operator.errors import UserError
from kubetune_operator.observability.metrics import OperatorMetrics
from kubetune_operator.runtime.progress import ProgressPatcher, progress_status
from kubetune_operator.runtime.settings import RuntimeSettings
from kubetune_operator.runtime.tokens import progress_token, token_matches


def test_event_fields_become_status_fields_and_bad_ones_are_dropped():
    status = progress_status({"phase": "train", "step": 3, "total_steps": 10, "percent": 130.0, "loss": "nan?",
                              "tokens_per_second": 99.5, "timestamp": "2026-01-01T00:00:00+00:00"})
    assert status == {"step": 3, "totalSteps": 10, "tokensPerSecond": 99.5, "updatedAt": "2026-01-01T00:00:00+00:00"}


def test_tokens_belong_to_one_uid_under_one_key():
    token = progress_token(b"k" * 16, "uid-1")
    assert token_matches(b"k" * 16, "uid-1", token)
    assert not token_matches(b"k" * 16, "uid-2", token)
    assert not token_matches(b"j" * 16, "uid-1", token)
    assert not token_matches(b"k" * 16, "uid-1", "ünïcode")


def test_the_operator_needs_a_progress_key():
    with pytest.raises(UserError, match="KUBETUNE_PROGRESS_KEY"):
        RuntimeSettings.from_env({})
    with pytest.raises(UserError, match="KUBETUNE_PROGRESS_PATCH_INTERVAL"):
        RuntimeSettings.from_env({"KUBETUNE_PROGRESS_KEY": "k" * 16, "KUBETUNE_PROGRESS_PATCH_INTERVAL": "-1"})
    assert RuntimeSettings.from_env({"KUBETUNE_PROGRESS_KEY": "k" * 16}).progress_patch_interval == 10.0


class RecordingApi:
    def __init__(self) -> None:
        self.patches: list[dict] = []

    async def patch(self, resource, namespace, name, patch, subresource=None):
        self.patches.append(patch["status"])
        return {}


class Runtime:
    def __init__(self, interval: float) -> None:
        self.api = RecordingApi()
        self.settings = RuntimeSettings(progress_key=b"k" * 16, progress_patch_interval=interval)
        self.metrics = OperatorMetrics(CollectorRegistry())

    def patcher(self) -> ProgressPatcher:
        return ProgressPatcher(self.api, self.metrics, self.settings.progress_patch_interval)


def test_a_burst_of_events_writes_the_first_and_the_newest_only():
    async def burst() -> list[dict]:
        runtime = Runtime(interval=0.2)
        patcher = runtime.patcher()
        key = ("finetunejobs", "ns", "x")
        for step in range(1, 6):
            patcher.submit(key, {"phase": "train", "step": step})
            await asyncio.sleep(0)
        while patcher._flushers:
            await asyncio.gather(*patcher._flushers.values())
        return runtime.api.patches

    patches = asyncio.run(burst())
    assert [p["progress"]["step"] for p in patches] == [1, 5]


def test_checkpoints_reach_last_checkpoint():
    async def one() -> list[dict]:
        runtime = Runtime(interval=0.01)
        patcher = runtime.patcher()
        patcher.submit(("finetunejobs", "ns", "x"), {"phase": "save", "checkpoint": "s3://b/c/checkpoint-000010"})
        await asyncio.gather(*patcher._flushers.values())
        return runtime.api.patches

    assert asyncio.run(one())[0]["lastCheckpoint"] == "s3://b/c/checkpoint-000010"


class FailingApi:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get(self, resource, namespace, name):
        raise self.error


def post_with_api_error(error: Exception) -> tuple[int, dict]:
    from aiohttp.test_utils import TestClient, TestServer

    from kubetune_operator.runtime.progress import progress_app

    async def post() -> tuple[int, dict]:
        runtime = Runtime(interval=1.0)
        runtime.api = FailingApi(error)
        async with TestClient(TestServer(progress_app(runtime.api, runtime.settings.progress_key, runtime.patcher()))) as client:
            answer = await client.post("/progress/ns/finetunejobs/x", json={"phase": "train"},
                                       headers={"Authorization": "Bearer t"})
            return answer.status, await answer.json()

    return asyncio.run(post())


def test_a_resource_the_operator_may_not_read_is_unknown_and_an_api_outage_asks_for_a_retry():
    from kubetune_operator.runtime.kube import ApiError

    status, body = post_with_api_error(ApiError(403, "GET", "/x", "forbidden"))
    assert status == 404 and "ns/x" in body["error"]
    status, body = post_with_api_error(ConnectionResetError("API server went away"))
    assert status == 503 and "retry" in body["error"]
