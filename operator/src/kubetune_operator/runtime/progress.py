"""The progress channel (docs/contracts.md §4): `POST /progress/<namespace>/<plural>/<name>` on :8080.

A pod presents the bearer token from its resource's `<name>-progress` Secret; the operator checks
it against HMAC(key, uid) of the resource it reads from the API server. Events count for the kinds
whose status has `progress` (FineTuneJob): the latest one goes into the training gauges at once and
into `status.progress` at most once per `progress_patch_interval` (the newest event wins; the last
one is always written).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from kubetune_operator.api import KINDS
from kubetune_operator.api.finetunejob import Progress
from kubetune_operator.observability.metrics import OperatorMetrics
from kubetune_operator.runtime.kube import CUSTOM_RESOURCES as RESOURCES
from kubetune_operator.runtime.kube import ApiError, KubeApi, ResourceKey
from kubetune_operator.runtime.status import TERMINAL_PHASES, now_rfc3339
from kubetune_operator.runtime.tokens import token_matches

log = logging.getLogger(__name__)

# An event is a few hundred bytes; anything near this is not a progress event.
MAX_BODY_BYTES = 64 * 1024
# Event keys (snake_case, contracts §4) → status.progress fields.
PROGRESS_FIELDS = (
    "step",
    "total_steps",
    "percent",
    "eta_seconds",
    "loss",
    "eval_loss",
    "reward_margin",
    "reward_accuracy",
    "tokens_per_second",
)
# The kinds whose status holds progress: their pods' events are taken; the others' are acknowledged.
REPORTING = frozenset(model.plural for model in KINDS.values() if "progress" in model.status_model().model_fields)


def progress_status(event: Mapping[str, Any]) -> dict[str, Any]:
    """status.progress from one event; fields of the wrong type are left out, never written."""
    fields: dict[str, Any] = {}
    for key in PROGRESS_FIELDS:
        value = event.get(key)
        if value is None:
            continue
        try:
            fields |= Progress.model_validate({key: value}).model_dump(exclude_none=True)
        except ValidationError:
            log.debug("progress field %s=%r ignored: not valid", key, value)
    timestamp = event.get("timestamp")
    fields["updated_at"] = timestamp if isinstance(timestamp, str) and len(timestamp) <= 64 else now_rfc3339()
    return Progress.model_validate(fields).to_wire()


class ProgressPatcher:
    """What an accepted event does: the training gauges at once, and the latest event per resource
    written to status.progress at a bounded rate (`interval` seconds)."""

    def __init__(self, api: KubeApi, metrics: OperatorMetrics, interval: float):
        self.api = api
        self.metrics = metrics
        self.interval = interval
        self._pending: dict[ResourceKey, dict[str, Any]] = {}
        self._last_write: dict[ResourceKey, float] = {}
        self._flushers: dict[ResourceKey, asyncio.Task] = {}

    def submit(self, key: ResourceKey, event: Mapping[str, Any]) -> None:
        _, namespace, name = key
        self.metrics.record_progress(namespace, name)
        patch: dict[str, Any] = {"progress": progress_status(event)}
        checkpoint = event.get("checkpoint")
        if isinstance(checkpoint, str) and len(checkpoint) <= 1024:
            patch["lastCheckpoint"] = checkpoint
        self._pending[key] = patch
        if key not in self._flushers:
            self._flushers[key] = asyncio.create_task(self._flush_later(key))

    async def _flush_later(self, key: ResourceKey) -> None:
        try:
            wait = self._last_write.get(key, 0.0) + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            patch = self._pending.pop(key, None)
            if patch is not None:
                self._last_write[key] = time.monotonic()
                plural, namespace, name = key
                try:
                    await self.api.patch(RESOURCES[plural], namespace, name, {"status": patch}, "status")
                except ApiError as exc:
                    log.info("progress of %s/%s/%s not written: %s", plural, namespace, name, exc)
        finally:
            if self._flushers.get(key) is asyncio.current_task():
                del self._flushers[key]
                if key in self._pending:
                    self._flushers[key] = asyncio.create_task(self._flush_later(key))

    def forget(self, key: ResourceKey) -> None:
        self._pending.pop(key, None)
        self._last_write.pop(key, None)
        task = self._flushers.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._flushers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def progress_app(api: KubeApi, progress_key: bytes, patcher: ProgressPatcher) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        namespace, plural, name = (request.match_info[k] for k in ("namespace", "plural", "name"))
        resource = RESOURCES.get(plural)
        if resource is None:
            return _error(404, f"unknown kind {plural!r}; expected one of {', '.join(RESOURCES)}")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(401, "missing bearer token")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"progress events are at most {MAX_BODY_BYTES} bytes")
        try:
            body = await api.get(resource, namespace, name)
        except ApiError as exc:
            if exc.status != 403:
                log.warning("progress for %s %s/%s: the API server answered %s", resource.kind, namespace, name, exc)
                return _error(503, "the operator cannot check the token now; retry later")
            # Outside the namespaces this operator may read: as unknown to it as a missing resource.
            body = None
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("progress for %s %s/%s: the API server is unreachable: %s", resource.kind, namespace, name, exc)
            return _error(503, "the operator cannot check the token now; retry later")
        if body is None:
            return _error(404, f"{resource.kind} {namespace}/{name} not found")
        if not token_matches(progress_key, body["metadata"].get("uid", ""), header[len("Bearer "):]):
            return _error(401, "token does not belong to this resource")
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body is not JSON: {exc}")
        if not isinstance(event, dict) or not isinstance(event.get("phase"), str):
            return _error(400, "a progress event is a JSON object with a string 'phase'")
        if (body.get("status") or {}).get("phase") in TERMINAL_PHASES:
            # A late event must not bring back gauges of a finished job.
            return web.json_response({"accepted": False, "reason": "resource has finished"}, status=202)
        if plural in REPORTING:
            patcher.submit((plural, namespace, name), event)
        return web.json_response({"accepted": True}, status=202)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/progress/{namespace}/{plural}/{name}", receive)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
