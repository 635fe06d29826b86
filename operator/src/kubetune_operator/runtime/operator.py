"""The kopf process: login, settings, the progress and metrics servers, and their shutdown.

kopf runs standalone (no peering): the chart deploys one replica with the Recreate strategy, so
two operators never run at once (docs/operator.md says why). Handlers live in
`kubetune_operator.handlers`; they find everything they share in `memo.runtime`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import kopf
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.observability.metrics import operator_metrics
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.kube import KubeApi
from kubetune_operator.runtime.progress import progress_app
from kubetune_operator.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

MANAGED = "app.kubernetes.io/managed-by=kubetune"
# A watch request ends server-side after this long and kopf opens the next one; the client gives
# up a little later, so a silently dropped connection is noticed too.
WATCH_SERVER_TIMEOUT = 300
WATCH_CLIENT_TIMEOUT = 330
CONNECT_TIMEOUT = 10
REQUEST_TIMEOUT = 60


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(env: Mapping[str, str] | None = None, folder: Path = SERVICE_ACCOUNT_DIR) -> kopf.ConnectionInfo | None:
    """The pod's service account, found as client-go's InClusterConfig finds it: the API server at
    KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT (which the kubelet always sets), the token and
    CA in the service account folder. kopf's own login goes to https://kubernetes.default.svc
    instead, which needs cluster DNS and port 443: a pod on the host network or with another DNS
    policy cannot resolve it. None outside a pod."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = folder / "token"
    if not host or not port or not token.exists():
        return None
    namespace = folder / "namespace"
    ca = folder / "ca.crt"
    return kopf.ConnectionInfo(
        server=f"https://{f'[{host}]' if ':' in host else host}:{port}",
        ca_path=str(ca) if ca.exists() else None,
        # Read at each login: kopf logs in again on a 401, and the kubelet rotates bound tokens.
        token=token.read_text(encoding="utf-8").strip() or None,
        default_namespace=namespace.read_text(encoding="utf-8").strip() if namespace.exists() else None,
    )


def connection_info() -> kopf.ConnectionInfo:
    """In a pod: the service account; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    settings = kopf.OperatorSettings()
    try:
        info = in_cluster() or kopf.login_with_kubeconfig(settings=settings)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        # kopf reads the file itself and lets these through; say which file, without a traceback.
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise kopf.LoginError(f"cannot log in with the kubeconfig {where}: {type(exc).__name__}: {exc}") from None
    if info is None:
        raise kopf.LoginError("no service account token and no kubeconfig: cannot reach the API server")
    return info


def configure(settings: kopf.OperatorSettings, exact_namespaces: bool = False) -> None:
    """kopf's settings. With `exact_namespaces` (`--namespace` names, no patterns) kopf does not
    list namespaces nor watch CRDs cluster-wide: the chart's namespaced Roles do not allow it, and
    kopf would warn about missing permissions at every start."""
    settings.peering.standalone = True
    settings.scanning.disabled = exact_namespaces
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.networking.request_timeout = REQUEST_TIMEOUT
    # Only kubetune's own Jobs reach the operator; other workloads are filtered by the API server.
    settings.watching.label_selectors["batch", "v1", "jobs"] = MANAGED
    # Events are posted explicitly on transitions; handler log lines stay in the log.
    settings.posting.loggers = False


@kopf.on.login()
def login(**_) -> kopf.ConnectionInfo:
    return connection_info()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    configure(settings, exact_namespaces=getattr(memo, "exact_namespaces", False))
    # `kubetune operator` passes its flags in the memo; under a plain `kopf run -m
    # kubetune_operator.handlers` the defaults and the environment apply.
    runtime_settings: RuntimeSettings = getattr(memo, "runtime_settings", None) or RuntimeSettings.from_env()
    runtime = Runtime(
        api=KubeApi(connection_info),
        operator_settings=OperatorSettings.from_env(),
        settings=runtime_settings,
        metrics=operator_metrics(),
    )
    memo.runtime = runtime
    memo.servers = [
        await _serve(progress_app(runtime.api, runtime_settings.progress_key, runtime.progress), runtime_settings.progress_port),
        await _serve(metrics_app(), runtime_settings.metrics_port),
    ]


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_) -> None:
    for runner in getattr(memo, "servers", []):
        await runner.cleanup()
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.progress.close()
        await runtime.api.close()


def metrics_app() -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    log.info("listening on port %d", port)
    return runner
