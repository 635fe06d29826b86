"""kubetune data plane: runs inside pods (and under `kubetune run`)."""

__version__ = "0.1.0"
