from tests.cluster.testing import crds, kube, kube_cluster, namespace

__all__ = ["crds", "kube", "kube_cluster", "namespace"]
