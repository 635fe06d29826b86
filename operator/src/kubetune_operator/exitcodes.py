"""The trainer's exit codes as the operator sees them (docs/contracts.md §2).

The operator cannot import the trainer, so the table is repeated here;
tests/unit/contracts/test_exitcodes.py keeps the two equal.
"""

REASONS: dict[int, str] = {
    0: "Completed",
    1: "InternalError",
    64: "BadConfig",
    65: "BadData",
    66: "BaseModelMissing",
    67: "DatasetFingerprintMismatch",
    68: "OutOfMemory",
    69: "NaNLoss",
    70: "AdapterBaseMismatch",
    71: "StorageError",
    75: "Preempted",
}

# Exit codes that fail a Job at once: retrying cannot help.
PERMANENT: frozenset[int] = frozenset({64, 65, 66, 67, 68, 69, 70})


def reason(code: int | None) -> str:
    if code is None:
        return "Unknown"
    return REASONS.get(code, f"ExitCode{code}")
