"""Exit codes of every `kubetune-trainer` command.

The operator maps them to condition reasons and to the Job's podFailurePolicy (see
kubetune_operator.exitcodes, kept equal by tests/unit/test_exitcodes.py). Codes in
PERMANENT fail the Job at once; any other non-zero code is retried up to the backoff limit.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # Something unexpected: retried, because it may be transient.
    INTERNAL = 1
    BAD_CONFIG = 64
    BAD_DATA = 65
    BASE_MODEL_MISSING = 66
    DATASET_FINGERPRINT_MISMATCH = 67
    CUDA_OOM = 68
    NAN_LOSS = 69
    ADAPTER_BASE_MISMATCH = 70
    STORAGE_ERROR = 71
    # SIGTERM (preemption): a checkpoint was written; the replacement pod resumes from it.
    PREEMPTED = 75


PERMANENT = frozenset(
    {
        ExitCode.BAD_CONFIG,
        ExitCode.BAD_DATA,
        ExitCode.BASE_MODEL_MISSING,
        ExitCode.DATASET_FINGERPRINT_MISMATCH,
        ExitCode.CUDA_OOM,
        ExitCode.NAN_LOSS,
        ExitCode.ADAPTER_BASE_MISMATCH,
    }
)

REASONS = {
    ExitCode.OK: "Completed",
    ExitCode.INTERNAL: "InternalError",
    ExitCode.BAD_CONFIG: "BadConfig",
    ExitCode.BAD_DATA: "BadData",
    ExitCode.BASE_MODEL_MISSING: "BaseModelMissing",
    ExitCode.DATASET_FINGERPRINT_MISMATCH: "DatasetFingerprintMismatch",
    ExitCode.CUDA_OOM: "OutOfMemory",
    ExitCode.NAN_LOSS: "NaNLoss",
    ExitCode.ADAPTER_BASE_MISMATCH: "AdapterBaseMismatch",
    ExitCode.STORAGE_ERROR: "StorageError",
    ExitCode.PREEMPTED: "Preempted",
}
