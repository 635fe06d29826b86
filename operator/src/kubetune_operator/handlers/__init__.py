"""kopf handlers: one module per kind (preferencedataset, finetunejob, evalrun) says everything about
its kind and registers it; the rest names no kind: the reconcile loop (reconcile.py, driven by each
kind's `Kind`, kind.py), what kopf calls (watch.py), children (children.py), a Job's outcome
(job_outcome.py), inputs from other resources (dependencies.py) and the status patch with its
Events and metrics (publish.py). Importing this package registers the kinds (and the runtime's
startup, login and cleanup handlers)."""

from kubetune_operator.handlers import evalrun, finetunejob, preferencedataset
from kubetune_operator.runtime import operator

__all__ = ["evalrun", "finetunejob", "operator", "preferencedataset"]
