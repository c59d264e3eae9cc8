"""A stop request (Ctrl-C, SIGTERM) that cannot be lost.

The handlers raise where the process is, so that cleanup runs (temp files removed, the run folder's lock
released). An exception raised while Python runs a finaliser (`__del__`, such as the saved-tensor
counter's, or a weakref callback) is printed as a traceback and dropped, though, and the run would train
on. So a signal that lands inside a finaliser is only remembered, not raised, and the training loop's
`check()` raises it at the next step.
"""

from __future__ import annotations

import signal
import weakref


class Terminated(Exception):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where the process is so that cleanup runs."""


_requested: type[BaseException] | None = None


_FINALISER_FILES = {weakref.__file__}


def _inside_finaliser(frame) -> bool:
    """Whether `frame` or a caller of it is a finaliser, whose exceptions Python drops."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename in _FINALISER_FILES:
            return True
        frame = frame.f_back
    return False


def _request(stop: type[BaseException], frame) -> None:
    global _requested
    _requested = stop
    if not _inside_finaliser(frame):
        raise stop()


def on_sigterm(signum, frame) -> None:
    _request(Terminated, frame)


def on_sigint(signum, frame) -> None:
    _request(KeyboardInterrupt, frame)


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
    """Raise a stop that was requested inside a finaliser (and so only remembered there)."""
    if _requested is not None:
        raise _requested()
