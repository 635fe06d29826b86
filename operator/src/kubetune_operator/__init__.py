"""kubetune control plane: CRD models, builders, kopf handlers, local runner, CLI."""

__version__ = "0.1.0"
