"""Errors a user can cause and fix; the CLI prints them as one line and exits 2."""

from __future__ import annotations

import contextlib
import signal
import threading


class UserError(ValueError):
    """A mistake in the user's input (bad path, empty text, bad option value).

    A `ValueError`, so library callers may catch it as one. Bugs raise anything else and
    may traceback; this one never reaches the user as a traceback: `tokensieve.cli`
    turns it into ``error: <message>`` and exit code 2. Messages name a parameter in
    backquotes (`max_tokens`); the command line prints it as its flag (--max-tokens).
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: unwinds like Ctrl-C, so every ``finally`` that
    removes a staging directory runs (the default action would kill the process first)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def termination_unwinds():
    """While inside, SIGTERM and SIGHUP raise `Terminated` instead of killing the process.

    Only handlers still at their default are replaced (a host program's own handler is
    left alone), and only on the main thread, where Python delivers signals.
    """
    replaced = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:
                replaced[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, previous in replaced.items():
            signal.signal(signum, previous)


def first_line(message: object, default: str = "unknown error") -> str:
    """The first line of an exception or message: user errors are one line long."""
    lines = str(message).strip().splitlines()
    return lines[0] if lines else default


def check_seed(seed: int) -> None:
    """A seed every generator we seed accepts (NumPy's, which TRL and transformers seed
    too, takes 0 to 2**32 - 1)."""
    if not 0 <= seed < 2**32:
        raise UserError(f"`seed` must be 0 to 2**32 - 1, got {seed}")


def check_sampling(temperature: float, top_p: float = 1.0) -> None:
    """Sampling options a sampler can use: temperature ≥ 0 (0 is greedy), top-p in (0, 1]."""
    import math

    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"`temperature` must be a number ≥ 0 (0 is greedy), got {temperature}")
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise UserError(f"`top_p` must be in (0, 1], got {top_p}")
