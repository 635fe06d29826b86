"""kmock's KubernetesEmulator with what the operator relies on from a real API server.

kmock stores objects and streams watch events; this subclass adds, for the resources registered
here: uid, resourceVersion, generation (bumped on spec changes only), creationTimestamp, the
status subresource (a `/status` patch changes only status; a main patch never touches it), CRD
validation of kubetune resources on create and update (defaults, schema and CEL, like the API
server), label selectors on list and watch, `timeoutSeconds` on watches, `kind` on lists, and
garbage collection of dependents through ownerReferences. Everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import kmock
from aiohttp import web
from kmock._internal import dicts, enums, rendering

from kubetune_operator.api import KINDS
from kubetune_operator.api.resource import GROUP, VERSION
from kubetune_operator.api.validation import check

# (group/version/plural, Kind, has a status subresource, namespaced). kopf needs namespaces and
# CRDs to be served: it lists the namespaces it may watch and follows CRDs for new resources.
RESOURCES = [
    *[(f"{GROUP}/{VERSION}/{model.plural}", model.kind_name, True, True) for model in KINDS.values()],
    ("batch/v1/jobs", "Job", True, True),
    ("v1/pods", "Pod", True, True),
    ("v1/configmaps", "ConfigMap", False, True),
    ("v1/secrets", "Secret", False, True),
    ("v1/services", "Service", True, True),
    ("v1/events", "Event", False, True),
    ("v1/namespaces", "Namespace", False, False),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", True, False),
]
KUBETUNE_KINDS = {model.plural for model in KINDS.values()}
NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?/?$")
# The bearer token the operator's kubeconfig carries, so its requests can be told from the tests' and the kubelet's.
OPERATOR_TOKEN = "kubetune-operator"
SERVER_OWNED_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    # Validate kubetune resources like the API server (defaults, schema, CEL). The API server does
    # it in microseconds; here CEL costs milliseconds, which a benchmark would count as the operator's.
    validate: bool = True
    _revision: int = attrs.field(default=0, init=False)
    _writes: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _kinds: dict[str, tuple[str, bool]] = attrs.field(factory=dict, init=False)
    _cluster_scoped: set[str] = attrs.field(factory=set, init=False)
    _namespaces: dict[str, dict[str, Any]] = attrs.field(factory=dict, init=False)
    # When each object was admitted (monotonic clock), for latency measurements.
    created_at: dict[tuple[str, str | None, str], float] = attrs.field(factory=dict, init=False)
    # (method, path, watch?) of every request that presents OPERATOR_TOKEN: what the operator's RBAC must allow.
    operator_requests: list[tuple[str, str, bool]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, kind, status, namespaced in RESOURCES:
            plural = key.rsplit("/", 1)[1]
            self.resources[key] = kmock.ResourceInfo(
                kind=kind,
                singular=kind.lower(),
                namespaced=namespaced,
                verbs={"create", "get", "list", "watch", "patch", "delete"},
                subresources={"status"} if status else set(),
            )
            self._kinds[plural] = (kind, status)
            if not namespaced:
                self._cluster_scoped.add(plural)

    # --- namespaces: kmock's URL parser reads /api/v1/namespaces/X as a namespace, not an object ---

    async def __call__(self, raw_request: web.BaseRequest) -> web.StreamResponse:
        if raw_request.headers.get("Authorization") == f"Bearer {OPERATOR_TOKEN}":
            self.operator_requests.append((raw_request.method, raw_request.path, raw_request.query.get("watch") == "true"))
        match = NAMESPACE_PATH.match(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        name = match.group(1)
        if raw_request.method == "POST" and name is None:
            body = await raw_request.json()
            created = self._namespaces.setdefault(body["metadata"]["name"], _namespace(body["metadata"]["name"],
                                                                                        self._next_revision()))
            return web.json_response(created, status=201)
        if raw_request.method != "GET":
            return web.json_response({"kind": "Status", "code": 405, "message": "namespaces: create, get, list, watch"},
                                     status=405)
        if name is not None:
            if name not in self._namespaces:
                return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound",
                                          "message": f"namespaces {name!r} not found"}, status=404)
            return web.json_response(self._namespaces[name])
        if raw_request.query.get("watch") != "true":
            return web.json_response({"apiVersion": "v1", "kind": "NamespaceList",
                                      "metadata": {"resourceVersion": str(self._revision)},
                                      "items": list(self._namespaces.values())})
        # Namespaces are created before the operators that watch them: the stream only stays open.
        response = web.StreamResponse()
        await response.prepare(raw_request)
        await asyncio.sleep(float(raw_request.query.get("timeoutSeconds") or 300))
        await response.write_eof()
        return response

    # --- writes: admission, then kmock stores and streams the object --------------------------

    async def _handle(self, request: rendering.Request):
        try:
            return await self._admit_and_handle(request)
        finally:
            self._forget(request)

    def _forget(self, request: rendering.Request) -> None:
        """kmock records every request for assertions and finds the reaction for the next one by
        scanning that record, so each request would cost as much as all before it (and as much as
        all open watches). These tests assert on objects, never on requests: a request is forgotten
        once its reaction is found."""
        with contextlib.suppress(ValueError):
            self._requests.remove(request)
        for payload in self._payloads:
            with contextlib.suppress(ValueError, AttributeError):
                payload._requests.remove(request)

    async def _admit_and_handle(self, request: rendering.Request):
        if request.resource is None or request.action not in (
            enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE
        ):
            return await super()._handle(request)
        async with self._writes:
            # kmock matches its reactions by the identity of the recorded request, so the admitted
            # body replaces the data of that very (frozen) object rather than of a copy.
            if request.action == enums.action.CREATE:
                object.__setattr__(request, "data", self._admit_create(request))
            elif request.action == enums.action.UPDATE:
                object.__setattr__(request, "data", self._admit_update(request))
            else:
                uid = self._uid_of(request)
            response = await super()._handle(request)
            if request.action == enums.action.DELETE and response.status < 300 and uid:
                await self._collect_dependents({uid})
            return response

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _admit_create(self, request: rendering.Request) -> dict[str, Any]:
        obj = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if obj is None or not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
            raise kmock.KubernetesError(status=422, reason="Invalid", message="metadata.name: Required value")
        plural = request.resource.plural
        kind, has_status = self._kinds.get(plural, (None, False))
        if kind and obj.get("kind") not in (None, kind):
            raise kmock.KubernetesError(status=400, reason="BadRequest", message=f"kind {obj.get('kind')} != {kind}")
        if plural in KUBETUNE_KINDS and self.validate:
            self._validate(obj, None)
        meta = obj["metadata"]
        for field in SERVER_OWNED_METADATA:
            meta.pop(field, None)
        if plural in self._cluster_scoped:
            meta.pop("namespace", None)
        else:
            meta["namespace"] = request.namespace or meta.get("namespace") or "default"
        meta |= {
            "uid": str(uuid.uuid4()),
            "resourceVersion": self._next_revision(),
            "generation": 1,
            "creationTimestamp": _now(),
        }
        self.created_at[(plural, meta.get("namespace"), meta["name"])] = time.monotonic()
        if kind:
            obj["kind"] = kind
        if has_status:
            obj.pop("status", None)
        if plural == "secrets" and isinstance(obj.get("stringData"), dict):
            # The API server folds stringData into data; the kubelet reads data.
            data = dict(obj.get("data") or {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
        return obj

    def _admit_update(self, request: rendering.Request) -> dict[str, Any]:
        patch = request.data
        if not isinstance(patch, dict):
            raise kmock.KubernetesError(status=415, reason="UnsupportedMediaType",
                                        message="the emulator takes merge patches (a JSON object) only")
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        current = copy.deepcopy(self.objects[key].raw)
        _, has_status = self._kinds.get(request.resource.plural, (None, False))
        if request.subresource == "status":
            patch = {"status": patch.get("status")} if "status" in patch else {}
        elif has_status:
            patch = {k: v for k, v in patch.items() if k != "status"}
        patch = copy.deepcopy(patch)
        if isinstance(patch.get("metadata"), dict):
            for field in SERVER_OWNED_METADATA:
                patch["metadata"].pop(field, None)
        updated = dicts.merge_patch_dict(current, patch)
        if request.resource.plural in KUBETUNE_KINDS and request.subresource != "status" and self.validate:
            self._validate(dict(updated), current)
        meta = patch.setdefault("metadata", {})
        meta["resourceVersion"] = self._next_revision()
        if _body(updated) != _body(current):
            meta["generation"] = int(current["metadata"].get("generation") or 1) + 1
        return patch

    @staticmethod
    def _validate(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        errors = check(obj, old)
        if errors:
            message = "; ".join(str(e) for e in errors)
            raise kmock.KubernetesError(status=422, reason="Invalid", message=f"{obj.get('kind')} is invalid: {message}")

    def _uid_of(self, request: rendering.Request) -> str | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key].get("metadata", {}).get("uid")
        return None

    async def _collect_dependents(self, uids: set[str]) -> None:
        """Delete every object owned by one of `uids`, then what those owned, and so on."""
        while uids:
            doomed = []
            for (resource, _, _), obj in list(self.objects.items()):
                if obj.deleted:
                    continue
                owners = obj.get("metadata", {}).get("ownerReferences") or []
                if any(o.get("uid") in uids for o in owners):
                    doomed.append((resource, obj))
            uids = set()
            for resource, obj in doomed:
                raw = obj.raw
                obj.delete()
                uids.add(raw["metadata"].get("uid"))
                await self._buses[resource].put({"type": "DELETED", "object": raw})

    # --- reads: direct lookups, selectors, kind on lists, watch timeouts --------------------------

    async def _serve_fetch(self, request: rendering.Request) -> dict[str, Any]:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return self.objects[key].raw

    async def _serve_create(self, request: rendering.Request) -> dict[str, Any]:
        meta = request.data["metadata"]
        return self.objects[request.resource, request.namespace or meta.get("namespace"), meta["name"]].raw

    async def _serve_update(self, request: rendering.Request) -> dict[str, Any]:
        return self.objects[request.resource, request.namespace, request.name].last.raw

    async def _serve_list(self, request: rendering.Request) -> dict[str, Any]:
        listing = await super()._serve_list(request)
        selector = LabelSelector.parse(request.params.get("labelSelector", ""))
        kind = self._kinds.get(request.resource.plural, (request.resource.plural.capitalize(), False))[0]
        return {
            "apiVersion": "/".join(p for p in (request.resource.group, request.resource.version) if p),
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": [item for item in listing["items"] if selector.matches(item)],
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        """The current objects, then every change, with no gap between the two: kmock subscribes
        to changes only after sending the current objects, and loses what happens meanwhile."""
        yield b""  # the headers go out at once, as from a real API server
        self._forget(request)
        selector = LabelSelector.parse(request.params.get("labelSelector", ""))
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        bus = self._buses[request.resource]

        def wanted(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            return (request.namespace in (None, meta.get("namespace")) and request.name in (None, meta.get("name"))
                    and selector.matches(obj))

        async with self._lock:
            marker = await bus.mark()
            current = [obj.raw for (resource, _, _), obj in self.objects.items()
                       if resource == request.resource and not obj.deleted]
        changes = bus.stream(since=marker)
        try:
            for obj in current:
                if wanted(obj):
                    yield {"type": "ADDED", "object": obj}
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(anext(changes), remaining)
                except TimeoutError:
                    return
                if wanted(event.get("object") or {}):
                    yield event
        finally:
            await changes.aclose()
            await bus.unmark(marker)

def _namespace(name: str, revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": revision, "creationTimestamp": _now()},
        "status": {"phase": "Active"},
    }


def _body(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[A-Za-z0-9_.-]*))?\s*$"
)


@attrs.frozen
class LabelSelector:
    """Kubernetes label selector syntax: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        parts = [p for p in re.split(r",(?![^(]*\))", text) if p.strip()]
        requirements = []
        for part in parts:
            match = _REQUIREMENT.match(part)
            if match is None:
                raise kmock.KubernetesError(status=400, reason="BadRequest", message=f"bad label selector {part!r}")
            op = (match["op"] or "").strip()
            raw = match["value"] or ""
            values = frozenset(v.strip() for v in raw.strip("()").split(",")) if raw.startswith("(") else frozenset([raw])
            if match["neg"]:
                requirements.append((match["key"], "!", frozenset()))
            elif not op:
                requirements.append((match["key"], "exists", frozenset()))
            else:
                requirements.append((match["key"], {"=": "in", "==": "in", "!=": "notin"}.get(op, op), values))
        return cls(tuple(requirements))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for key, op, values in self.requirements:
            present = key in labels
            if op == "exists" and not present:
                return False
            if op == "!" and present:
                return False
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and present and labels.get(key) in values:
                return False
        return True
