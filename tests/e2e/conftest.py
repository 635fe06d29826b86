from tests.cluster.testing import crds, kube, kube_cluster, namespace, operator, release

__all__ = ["crds", "kube", "kube_cluster", "namespace", "operator", "release"]
