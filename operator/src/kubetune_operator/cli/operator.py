"""`kubetune operator`: run the control plane (kopf, standalone) against the current cluster."""

from __future__ import annotations

import argparse
import dataclasses

from kubetune_operator.errors import UserError
from kubetune_operator.runtime import settings as runtime_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the operator: watch PreferenceDatasets, FineTuneJobs and EvalRuns and run their Jobs",
        description=(
            "Runs the kopf operator in standalone mode (one replica; the chart uses the Recreate strategy). "
            "Logs in with the pod's service account, or with KUBECONFIG outside a cluster. Environment: "
            "KUBETUNE_PROGRESS_KEY (required), KUBETUNE_ARTIFACT_ROOT, KUBETUNE_*_IMAGE, "
            "KUBETUNE_PROGRESS_BASE_URL, KUBETUNE_S3_SECRET (docs/contracts.md §10)."
        ),
    )
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces", metavar="NS",
                       help="watch this namespace (repeatable; globs such as team-* need RBAC to list namespaces)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    parser.add_argument("--progress-port", type=_port, default=runtime_settings.DEFAULT_PROGRESS_PORT,
                        help="port of the progress endpoint pods POST to (default %(default)s)")
    parser.add_argument("--metrics-port", type=_port, default=runtime_settings.DEFAULT_METRICS_PORT,
                        help="port of /metrics (default %(default)s)")
    parser.add_argument("--health-port", type=_port, default=runtime_settings.DEFAULT_HEALTH_PORT,
                        help="port of the /healthz liveness endpoint (default %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="kopf's verbose logging, prefixed with the resource (overrides --log-level)")
    parser.set_defaults(func=run)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1..65535)")
    return port


def run(args: argparse.Namespace) -> int:
    import kopf

    import kubetune_operator.handlers  # noqa: F401  (registers the handlers)
    from kubetune_operator.runtime.operator import connection_info

    settings = dataclasses.replace(
        runtime_settings.RuntimeSettings.from_env(),
        progress_port=args.progress_port,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
    )
    try:
        # kopf would retry a failed login every minute with a traceback; a missing or broken
        # kubeconfig does not heal by waiting.
        connection_info()
    except kopf.LoginError as exc:
        raise UserError(str(exc)) from None
    if args.verbose:
        kopf.configure(verbose=True, log_prefix=True)
    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=args.namespaces or (),
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(runtime_settings=settings, exact_namespaces=not args.all_namespaces and not any(
            pattern in namespace for namespace in args.namespaces for pattern in "!*?,")),
    )
    return 0
