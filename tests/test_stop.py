"""A stop request that lands inside a finaliser is neither printed as a dropped traceback nor lost
(bench/stop.py): it is remembered there and the training loop's check raises it."""

import contextlib
import signal
import sys
import weakref

import pytest

from bench import stop


class _SignalledWhileCollected:
    """A finaliser that the signal handler interrupts, as SIGTERM interrupted the saved-tensor
    counter's `__del__` in CI."""

    def __init__(self, handler):
        self.handler = handler

    def __del__(self):
        self.handler(None, sys._getframe())


@pytest.mark.parametrize(
    "handler, raised", [(stop.on_sigterm, stop.Terminated), (stop.on_sigint, KeyboardInterrupt)]
)
def test_a_signal_inside_a_finaliser_is_not_dropped_but_raised_at_the_next_check(
    handler, raised, monkeypatch
):
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    previous = stop.install()
    try:
        stop.check()  # nothing requested: nothing raised
        _SignalledWhileCollected(handler)  # collected at once: its __del__ runs the handler
        assert dropped == []  # nothing raised inside the finaliser, so no traceback printed
        with pytest.raises(raised):
            stop.check()
    finally:
        stop.restore(previous)
    assert signal.getsignal(signal.SIGTERM) is previous[signal.SIGTERM]


def test_a_signal_inside_a_weakref_callback_is_remembered_too():
    class Thing:
        pass

    previous = stop.install()
    try:
        thing = Thing()
        weakref.finalize(thing, lambda: stop.on_sigterm(None, sys._getframe()))
        del thing
        with pytest.raises(stop.Terminated):
            stop.check()
    finally:
        stop.restore(previous)


def test_a_signal_outside_a_finaliser_raises_where_the_process_is():
    previous = stop.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            stop.on_sigint(signal.SIGINT, sys._getframe())
    finally:
        stop.restore(previous)


def test_install_forgets_an_earlier_request():
    previous = stop.install()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            stop.on_sigint(signal.SIGINT, None)
        with pytest.raises(KeyboardInterrupt):
            stop.check()
        stop.restore(stop.install())
        stop.check()
    finally:
        stop.restore(previous)
