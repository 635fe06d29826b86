"""What a kubelet makes of a pod before it starts the container: volumes as host folders, the
environment, the argv, and the names the pod may resolve (Services, the API server).

Volumes: emptyDir, configMap, secret, downwardAPI and projected (serviceAccountToken from the
TokenRequest API, configMap, secret, downwardAPI), which is how the ServiceAccount admission
plugin gives pods their API token. Env: envFrom, then env (`value` with `$(VAR)`, secretKeyRef,
configMapKeyRef, fieldRef), then KUBERNETES_SERVICE_HOST/PORT. A source that does not exist yet is
a `NotReady` (the kubelet's CreateContainerConfigError), retried.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubetune_operator.localrun.pod import PodSpecError, container_env, expand
from kubetune_operator.runtime.kube import ApiError, KubeApi
from tests.cluster.node.runtime import ContainerSpec

TOKEN_SECONDS = 3607  # what a kubelet asks for


class NotReady(Exception):
    """A ConfigMap, Secret or ServiceAccount the pod needs is missing; the message names it."""


def fields(pod: Mapping[str, Any]) -> dict[str, str]:
    """fieldRef values the kubelet knows for this pod."""
    meta, spec = pod["metadata"], pod["spec"]
    known = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    for key, value in (meta.get("labels") or {}).items():
        known[f"metadata.labels['{key}']"] = value
    for key, value in (meta.get("annotations") or {}).items():
        known[f"metadata.annotations['{key}']"] = value
    return known


class PodResolver:
    """Reads what a pod refers to from the API server, as the node's kubelet."""

    def __init__(self, api: KubeApi, api_port: int):
        self.api = api
        self.api_port = api_port

    async def _data(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        try:
            obj = await self.api.request("GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            if optional:
                return None
            raise NotReady(f'{"secret" if kind == "secrets" else "configmap"} "{name}" not found') from None
        if kind == "secrets":
            return {k: base64.b64decode(v).decode("utf-8") for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    async def _token(self, pod: Mapping[str, Any], source: Mapping[str, Any]) -> str:
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {"expirationSeconds": source.get("expirationSeconds") or TOKEN_SECONDS,
                                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                                   "uid": meta["uid"]}}
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        try:
            answer = await self.api.request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        except ApiError as exc:
            if exc.status == 404:
                raise NotReady(f'serviceaccount "{account}" not found') from None
            raise
        return answer["status"]["token"]

    async def _write(self, folder: Path, source: Mapping[str, Any], data: Mapping[str, str] | None,
                     what: str) -> None:
        if data is None:
            return
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise NotReady(f"{what} has no key {item['key']!r}")
            _put(folder / item["path"], data[item["key"]])

    async def _projected(self, pod, folder: Path, projected: Mapping[str, Any], known: Mapping[str, str]) -> None:
        namespace = pod["metadata"]["namespace"]
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                token = source["serviceAccountToken"]
                _put(folder / token["path"], await self._token(pod, token))
            elif "configMap" in source:
                ref = source["configMap"]
                await self._write(folder, ref, await self._data("configmaps", namespace, ref["name"],
                                                                bool(ref.get("optional"))), f"configmap {ref['name']!r}")
            elif "secret" in source:
                ref = source["secret"]
                await self._write(folder, ref, await self._data("secrets", namespace, ref["name"],
                                                                bool(ref.get("optional"))), f"secret {ref['name']!r}")
            elif "downwardAPI" in source:
                _downward(folder, source["downwardAPI"], known)
            else:
                raise PodSpecError(f"projected source {', '.join(source)} is not supported by the node agent")

    async def volumes(self, pod: Mapping[str, Any], workdir: Path) -> dict[str, Path]:
        """Volume name → host folder with what the volume holds."""
        namespace, known = pod["metadata"]["namespace"], fields(pod)
        found: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            folder = workdir / "volumes" / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                ref = volume["configMap"]
                data = await self._data("configmaps", namespace, ref["name"], bool(ref.get("optional")))
                await self._write(folder, ref, data, f"configmap {ref['name']!r}")
            elif "secret" in volume:
                ref = volume["secret"]
                data = await self._data("secrets", namespace, ref["secretName"], bool(ref.get("optional")))
                await self._write(folder, ref, data, f"secret {ref['secretName']!r}")
            elif "projected" in volume:
                await self._projected(pod, folder, volume["projected"], known)
            elif "downwardAPI" in volume:
                _downward(folder, volume["downwardAPI"], known)
            elif "emptyDir" in volume:
                folder.chmod(0o777)  # as the kubelet makes an emptyDir: writable by the pod's (non-root) user
            else:
                kinds = ", ".join(k for k in volume if k != "name")
                raise PodSpecError(f"volume {volume['name']}: {kinds} is not supported by the node agent")
            found[volume["name"]] = folder
        return found

    async def env(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
        """The container's environment as the kubelet builds it."""
        namespace = pod["metadata"]["namespace"]
        entries: list[dict[str, Any]] = []
        config_maps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, str]] = {}
        # envFrom first, as entries of their own, so that later `env` entries override them and
        # `$(VAR)` sees them.
        for source in container.get("envFrom") or []:
            for kind, store, ref_key in (("configMapRef", config_maps, "configMapKeyRef"),
                                         ("secretRef", secrets, "secretKeyRef")):
                if kind not in source:
                    continue
                ref = source[kind]
                data = await self._data("configmaps" if store is config_maps else "secrets", namespace,
                                        ref["name"], bool(ref.get("optional")))
                if data is None:
                    continue
                store[ref["name"]] = data
                entries += [{"name": source.get("prefix", "") + key,
                             "valueFrom": {ref_key: {"name": ref["name"], "key": key}}} for key in data]
        for entry in container.get("env") or []:
            ref = entry.get("valueFrom") or {}
            for key, store, kind in (("configMapKeyRef", config_maps, "configmaps"),
                                     ("secretKeyRef", secrets, "secrets")):
                if key in ref and ref[key]["name"] not in store:
                    data = await self._data(kind, namespace, ref[key]["name"], bool(ref[key].get("optional")))
                    if data is not None:
                        store[ref[key]["name"]] = data
            entries.append(entry)
        try:
            env = container_env({**container, "env": entries}, config_maps, secrets, fields(pod))
        except PodSpecError as exc:
            if "not found" in str(exc):
                raise NotReady(str(exc)) from None
            raise
        return env | {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.api_port),
                      "KUBERNETES_SERVICE_PORT_HTTPS": str(self.api_port)}

    async def hosts(self, pod: Mapping[str, Any]) -> dict[str, str]:
        """Every Service's DNS names → 127.0.0.1: pods share this machine's network, so a Service
        whose port is its target port is reached there (the operator's progress endpoint)."""
        services = await self.api.request("GET", "/api/v1/services")
        names: dict[str, str] = {}
        for service in services.get("items") or []:
            name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
            for suffix in ("svc", "svc.cluster.local"):
                names[f"{name}.{namespace}.{suffix}"] = "127.0.0.1"
            if namespace == pod["metadata"]["namespace"]:
                names[name] = "127.0.0.1"
        return names

    async def container(self, pod: Mapping[str, Any], workdir: Path) -> ContainerSpec:
        """Everything needed to start the pod's container (the first: kubetune's pods have one)."""
        spec = pod["spec"]
        if len(spec["containers"]) != 1 or spec.get("initContainers"):
            raise PodSpecError("the node agent runs pods of one container and no init containers")
        container = spec["containers"][0]
        volumes = await self.volumes(pod, workdir)
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                raise PodSpecError(f"container {container['name']}: volumeMount {mount['name']!r} names no volume")
            mounts[mount["mountPath"]] = volumes[mount["name"]] / mount.get("subPath", "")
        env = await self.env(pod, container)
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        if not command:
            raise PodSpecError(f"container {container['name']}: no command (the node agent has no image entrypoints)")
        meta = pod["metadata"]
        return ContainerSpec(
            pod=f"{meta['namespace']}/{meta['name']}", name=container["name"], image=container.get("image", ""),
            argv=[expand(str(a), env) for a in command], env=env, mounts=mounts, workdir=workdir,
            termination_message_path=container.get("terminationMessagePath") or "/dev/termination-log",
            fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
            hosts=await self.hosts(pod), working_dir=container.get("workingDir"), **_security(pod, container),
        )


def _security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The user and root filesystem the securityContexts ask for (the container's over the pod's)."""
    merged = (pod["spec"].get("securityContext") or {}) | (container.get("securityContext") or {})
    user = None
    if merged.get("runAsUser") is not None:
        user = (int(merged["runAsUser"]), int(merged.get("runAsGroup", merged["runAsUser"])))
    return {"user": user, "read_only_root": bool(merged.get("readOnlyRootFilesystem"))}


def _put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _downward(folder: Path, source: Mapping[str, Any], known: Mapping[str, str]) -> None:
    for item in source.get("items") or []:
        if "fieldRef" not in item:
            raise PodSpecError(f"downwardAPI item {item.get('path')}: only fieldRef is supported by the node agent")
        path = item["fieldRef"]["fieldPath"]
        if path not in known:
            raise PodSpecError(f"downwardAPI item {item.get('path')}: fieldRef {path!r} is not known to the node agent")
        _put(folder / item["path"], known[path])
