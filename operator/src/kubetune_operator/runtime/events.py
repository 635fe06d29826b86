"""Kubernetes Events on a resource's transitions, posted through the API like any other object.

kopf can post events only from inside its per-object handlers; reconciles here also run from the
resync loop, so the operator writes core/v1 Events itself. Losing an Event never fails a reconcile.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from typing import Any

from kubetune_operator.runtime.kube import EVENTS, ApiError, KubeApi
from kubetune_operator.runtime.status import clip, now_rfc3339

log = logging.getLogger(__name__)

COMPONENT = "kubetune-operator"


def event_manifest(body: Mapping[str, Any], type: str, reason: str, message: str, now: str) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type,
        "reason": reason,
        "message": clip(message, 1024),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
    }


async def post_event(api: KubeApi, body: Mapping[str, Any], type: str, reason: str, message: str) -> None:
    try:
        await api.create(EVENTS, body["metadata"]["namespace"], event_manifest(body, type, reason, message, now_rfc3339()),
                         fetch_existing=False)
    except ApiError as exc:
        log.warning("event %s on %s not posted: %s", reason, body["metadata"].get("name"), exc)
