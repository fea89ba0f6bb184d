"""Errors a user can cause and fix; the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """A mistake in the user's input (bad path, empty text, bad option value).

    Bugs raise anything else and may traceback; this one never reaches the user as a
    traceback: `tokensieve.cli` turns it into ``error: <message>`` and exit code 2.
    """
