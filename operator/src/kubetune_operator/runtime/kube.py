"""A small asyncio client for the Kubernetes REST API, sharing kopf's login.

The operator creates, reads and patches a handful of resource types. kopf already logs in (service
account in a cluster, kubeconfig elsewhere) and its `ConnectionInfo` knows how to build headers and
TLS; this client reuses exactly that, so there is one way to authenticate and one HTTP stack.
On a 401 it logs in again once (service-account tokens rotate).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf

from kubetune_operator.api import KINDS
from kubetune_operator.api.resource import GROUP, VERSION

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"

ResourceKey = tuple[str, str, str]  # (plural, namespace, name)


@dataclass(frozen=True)
class ApiResource:
    """A namespaced resource type and the URL paths of its objects."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{root}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


JOBS = ApiResource("batch", "v1", "jobs", "Job")
PODS = ApiResource("", "v1", "pods", "Pod")
CONFIG_MAPS = ApiResource("", "v1", "configmaps", "ConfigMap")
SECRETS = ApiResource("", "v1", "secrets", "Secret")
SERVICES = ApiResource("", "v1", "services", "Service")
EVENTS = ApiResource("", "v1", "events", "Event")
CORE_RESOURCES = {r.kind: r for r in (JOBS, PODS, CONFIG_MAPS, SECRETS, SERVICES, EVENTS)}
# kubetune's own kinds, by plural.
CUSTOM_RESOURCES = {
    model.plural: ApiResource(GROUP, VERSION, model.plural, model.kind_name) for model in KINDS.values()
}


class ApiError(Exception):
    """A non-2xx answer from the API server, with its status code and Status message."""

    def __init__(self, status: int, method: str, path: str, message: str):
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.message = message


def resource_for(manifest: Mapping[str, Any]) -> ApiResource:
    """The ApiResource of a child manifest, by its kind."""
    resource = CORE_RESOURCES.get(manifest.get("kind"))
    if resource is None:
        raise ValueError(f"no API resource known for kind {manifest.get('kind')!r}")
    return resource


class KubeApi:
    """create/get/list/patch/delete over one aiohttp session; `login` returns a kopf.ConnectionInfo."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo], timeout: float = 30.0):
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _ensure_session(self, relogin: bool = False) -> tuple[aiohttp.ClientSession, str]:
        async with self._lock:
            if relogin or self._session is None or self._info is None:
                if self._session is not None:
                    await self._session.close()
                self._info = self._login()
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, ssl=self._info.as_ssl_context()),
                    headers=self._info.as_http_headers(),
                    timeout=self._timeout,
                )
            return self._session, self._info.server.rstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        url_path = path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        for attempt in range(2):
            session, server = await self._ensure_session(relogin=attempt > 0)
            async with session.request(method, server + url_path, data=data, headers=headers) as response:
                text = await response.text()
                if response.status == 401 and attempt == 0:
                    continue
                if response.status >= 400:
                    raise ApiError(response.status, method, path, _status_message(text))
                return json.loads(text) if text else None
        raise AssertionError("unreachable: the second attempt always returns or raises")

    async def watch(
        self, resource: ApiResource, namespace: str, timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (`{"type", "object"}`) of one resource type in a namespace, from the current
        objects on, until the server ends the stream."""
        session, server = await self._ensure_session()
        params = urlencode({"watch": "true", "timeoutSeconds": str(timeout_seconds)})
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with session.get(f"{server}{resource.path(namespace)}?{params}", timeout=timeout) as response:
            if response.status >= 400:
                raise ApiError(response.status, "GET", resource.path(namespace), _status_message(await response.text()))
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)

    async def get(self, resource: ApiResource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", resource.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, resource: ApiResource, namespace: str, label_selector: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in label_selector.items())} if label_selector else None
        answer = await self.request("GET", resource.path(namespace), params=params)
        return list(answer.get("items") or [])

    async def create(
        self, resource: ApiResource, namespace: str, body: Mapping[str, Any], fetch_existing: bool = True
    ) -> tuple[dict[str, Any] | None, bool]:
        """Create the object; on 409 return the existing one (None without `fetch_existing`: the
        operator may create Secrets but not read them). The flag says whether this call created it."""
        try:
            return await self.request("POST", resource.path(namespace), body=body), True
        except ApiError as exc:
            if exc.status != 409:
                raise
        if not fetch_existing:
            return None, False
        name = body["metadata"]["name"]
        existing = await self.get(resource, namespace, name)
        if existing is None:
            # Deleted between our create and our read: the next reconcile creates it again.
            raise ApiError(409, "POST", resource.path(namespace), f"{resource.kind} {name} exists and vanished")
        return existing, False

    async def patch(
        self,
        resource: ApiResource,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH", resource.path(namespace, name, subresource), body=patch, content_type=MERGE_PATCH
        )

    async def delete(self, resource: ApiResource, namespace: str, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            await self.request(
                "DELETE", resource.path(namespace, name), body={"propagationPolicy": "Background"}
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _status_message(text: str) -> str:
    try:
        status = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])[:500]
    return text[:500]
