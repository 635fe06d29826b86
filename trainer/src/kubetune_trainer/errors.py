"""Errors a user can act on. The CLI prints their message (no traceback) and exits with their code."""

from kubetune_trainer.exitcodes import ExitCode
from kubetune_trainer.redact import redact


class KubetuneError(Exception):
    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str):
        # Messages reach the status and logs: an endpoint URL's password must not.
        message = redact(message)
        super().__init__(message)
        self.message = message


class ConfigError(KubetuneError):
    """A config file or flag is invalid. The message names the field."""

    exit_code = ExitCode.BAD_CONFIG


class DataError(KubetuneError):
    """Input data is unusable. The message names the file and line."""

    exit_code = ExitCode.BAD_DATA


class BaseModelMissing(KubetuneError):
    exit_code = ExitCode.BASE_MODEL_MISSING


class FingerprintMismatch(KubetuneError):
    exit_code = ExitCode.DATASET_FINGERPRINT_MISMATCH


class OutOfMemory(KubetuneError):
    exit_code = ExitCode.CUDA_OOM


class NaNLoss(KubetuneError):
    exit_code = ExitCode.NAN_LOSS


class AdapterBaseMismatch(KubetuneError):
    exit_code = ExitCode.ADAPTER_BASE_MISMATCH


class StorageError(KubetuneError):
    exit_code = ExitCode.STORAGE_ERROR


class Preempted(KubetuneError):
    exit_code = ExitCode.PREEMPTED
