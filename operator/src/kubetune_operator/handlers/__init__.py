"""kopf handlers, one module per kind; importing this package registers them (and the runtime's
startup, login and cleanup handlers)."""

from kubetune_operator.handlers import evalrun, finetunejob, preferencedataset
from kubetune_operator.runtime import operator

__all__ = ["evalrun", "finetunejob", "operator", "preferencedataset"]
