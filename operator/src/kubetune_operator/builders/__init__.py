"""Pure functions from a typed resource to the Kubernetes manifests that do its work.

No I/O and no cluster: the kopf handlers, `kubetune render` and `kubetune run` call the same
functions, and unit tests check their output directly.
"""
