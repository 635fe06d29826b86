"""Errors a user can act on: printed as one line by the CLI, never as a traceback."""


class UserError(Exception):
    exit_code = 2


class ValidationFailed(UserError):
    """A resource document does not match its schema; the message names document and field."""
