"""Promotion failures, each with the exit code the promote Job's policy needs (contracts §2)."""

from kubetune_operator.errors import UserError


class PromotionRefused(UserError):
    """The record, the arguments or the repository's content forbid this promotion: retrying cannot help."""

    exit_code = 64


class RepositoryError(UserError):
    """The repository could not be reached, refused the credentials or kept rejecting the push: the Job retries."""

    exit_code = 71
