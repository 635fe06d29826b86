import sys
from pathlib import Path

# Fake containers and resource documents live in tests/integration/harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.testing import crds, fake_pods, kube, kube_cluster, namespace, operator, release

__all__ = ["crds", "fake_pods", "kube", "kube_cluster", "namespace", "operator", "release"]
