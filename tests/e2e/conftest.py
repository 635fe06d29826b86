import sys
from pathlib import Path

# The emulated cluster, kubelet and operator runner live in tests/integration/harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness.fixtures import cluster, namespace, operator

__all__ = ["cluster", "namespace", "operator"]
