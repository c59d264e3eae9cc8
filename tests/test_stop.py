"""A stop request that lands inside a finaliser is neither printed as a dropped traceback nor lost
(bench/run/stop.py): it is remembered and the training loop's check raises it."""

import contextlib
import signal
import sys
import weakref

import pytest

from bench.run import stop


class _SignalledWhileCollected:
    """A finaliser that the signal handler interrupts, as SIGTERM interrupted the saved-tensor
    counter's `__del__` in CI."""

    def __init__(self, handler):
        self.handler = handler

    def __del__(self):
        self.handler(None, None)


@pytest.fixture
def dropped(monkeypatch):
    """What reaches the hook Python prints dropped exceptions with (installed before bench.run.stop's)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    previous = stop.install()
    yield seen
    stop.restore(previous)
    assert sys.unraisablehook == seen.append  # the hook put back


@pytest.mark.parametrize(
    "handler, raised", [(stop.on_sigterm, stop.Terminated), (stop.on_sigint, KeyboardInterrupt)]
)
def test_a_signal_inside_a_finaliser_is_not_printed_but_raised_at_the_next_check(
    handler, raised, dropped
):
    stop.check()  # nothing requested: nothing raised
    _SignalledWhileCollected(handler)  # collected at once: its __del__ runs the handler
    assert dropped == []  # Python dropped the stop: no traceback printed
    with pytest.raises(raised):
        stop.check()


def test_a_signal_inside_a_weakref_callback_is_remembered_too(dropped):
    class Thing:
        pass

    thing = Thing()
    keep = weakref.ref(thing, lambda _: stop.on_sigterm(None, None))
    del thing
    assert dropped == [] and keep() is None
    with pytest.raises(stop.Terminated):
        stop.check()


def test_another_dropped_exception_is_still_printed(dropped):
    class Broken:
        def __del__(self):
            raise RuntimeError("a finaliser's own bug")

    Broken()
    assert [type(u.exc_value) for u in dropped] == [RuntimeError]
    stop.check()  # no stop requested


def test_a_signal_outside_a_finaliser_raises_where_the_process_is(dropped):
    with pytest.raises(KeyboardInterrupt):
        stop.on_sigint(signal.SIGINT, None)


def test_restore_forgets_a_request_and_install_starts_clean():
    previous = stop.install()
    with contextlib.suppress(KeyboardInterrupt):
        stop.on_sigint(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        stop.check()
    stop.restore(previous)
    stop.check()
    assert signal.getsignal(signal.SIGTERM) is previous[signal.SIGTERM]
