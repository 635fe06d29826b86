"""Errors a user can act on: printed as one line by the CLI, never as a traceback."""


class UserError(Exception):
    exit_code = 2


class ValidationFailed(UserError):
    """A resource document does not match its schema; the message names document and field."""


# What a message quotes of a value the user gave: a 50 MB string must not come back whole.
SHOWN_CHARS = 80


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """Text cut to `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"


def clip(value: object, limit: int = SHOWN_CHARS) -> str:
    """A value quoted in a message (its repr), cut short."""
    return shorten(repr(value), limit)
