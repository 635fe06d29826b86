import sys
from pathlib import Path

# The harness is shared with tests/e2e; it lives beside this directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.fixtures import cluster, fake_pods, kubelet, namespace, operator, operator_env

__all__ = ["cluster", "fake_pods", "kubelet", "namespace", "operator", "operator_env"]
