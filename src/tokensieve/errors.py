"""Errors a user can cause and fix; the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """A mistake in the user's input (bad path, empty text, bad option value).

    Bugs raise anything else and may traceback; this one never reaches the user as a
    traceback: `tokensieve.cli` turns it into ``error: <message>`` and exit code 2.
    """


def first_line(message: object, default: str = "unknown error") -> str:
    """The first line of an exception or message: user errors are one line long."""
    lines = str(message).strip().splitlines()
    return lines[0] if lines else default
