import sys
from pathlib import Path

# Fake containers and resource documents live in tests/integration/harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
