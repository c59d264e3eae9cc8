"""A stop request (Ctrl-C, SIGTERM) that cannot be lost.

The handlers raise where the process is, so that cleanup runs (temp files removed, the run folder's lock
released). An exception raised while Python runs a finaliser (`__del__`, such as the saved-tensor
counter's, or a weakref callback) is dropped, though: Python hands it to `sys.unraisablehook`, which
prints a traceback, and the run would train on. So the request is also remembered, the hook installed
here drops such a stop silently, and `check()` (after every training step and epoch, and before the
command line exits 0) raises it again.
"""

from __future__ import annotations

import signal
import sys


class Terminated(BaseException):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where the process is so that cleanup runs.

    A BaseException, as KeyboardInterrupt is: a stop is not an error, so no `except Exception` that turns
    a failure into a message or a null measure (a download's advice, an unmeasured end-of-run measure)
    swallows it, and a measure need not know this module."""


STOPS = (KeyboardInterrupt, Terminated)
_requested: type[BaseException] | None = None
_previous_hook = sys.unraisablehook


def _request(stop: type[BaseException]) -> None:
    global _requested
    _requested = stop
    raise stop()


def on_sigterm(signum, frame) -> None:
    _request(Terminated)


def on_sigint(signum, frame) -> None:
    _request(KeyboardInterrupt)


def _drop_a_remembered_stop(unraisable) -> None:
    """sys.unraisablehook: a stop dropped inside a finaliser is remembered (check() raises it), so its
    traceback is not printed; anything else goes to the previous hook."""
    if _requested is not None and isinstance(unraisable.exc_value, STOPS):
        return
    _previous_hook(unraisable)


def install() -> dict:
    """Install both handlers and the hook (main thread only); the previous ones, for `restore`."""
    global _requested, _previous_hook
    _requested = None
    _previous_hook = sys.unraisablehook
    sys.unraisablehook = _drop_a_remembered_stop
    return {
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
        signal.SIGINT: signal.signal(signal.SIGINT, on_sigint),
    }


def restore(previous: dict) -> None:
    """Put back the handlers and the hook `install` replaced, and forget any request."""
    global _requested
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    sys.unraisablehook = _previous_hook
    _requested = None


def check() -> None:
    """Raise a stop that was requested, in case it was dropped inside a finaliser."""
    if _requested is not None:
        raise _requested()
