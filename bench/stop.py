"""A stop request (Ctrl-C, SIGTERM) that cannot be lost.

The handlers raise where the process is, so that cleanup runs (temp files removed, the run folder's lock
released). An exception raised while Python runs a finaliser (`__del__`, such as the saved-tensor
counter's) is printed and dropped, though, and the run would train on; so the request is also
remembered, and the training loop's `check()` raises it again at the next step.
"""

from __future__ import annotations

import signal


class Terminated(Exception):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where the process is so that cleanup runs."""


_requested: type[BaseException] | None = None


def _request(stop: type[BaseException]) -> None:
    global _requested
    _requested = stop
    raise stop()


def on_sigterm(signum, frame) -> None:
    _request(Terminated)


def on_sigint(signum, frame) -> None:
    _request(KeyboardInterrupt)


def install() -> dict:
    """Install both handlers (main thread only); the previous ones, for `restore`."""
    global _requested
    _requested = None
    return {
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
        signal.SIGINT: signal.signal(signal.SIGINT, on_sigint),
    }


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def check() -> None:
    """Raise a stop that was requested but lost on the way (dropped inside a finaliser)."""
    if _requested is not None:
        raise _requested()
