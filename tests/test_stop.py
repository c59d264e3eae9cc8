"""A stop request that lands inside a finaliser is not lost (bench/stop.py): the training loop's check
raises it again."""

import contextlib
import os
import signal
import time

import pytest

from bench import stop


class _KillsItselfWhenCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)


# The finaliser's dropped exception is the point of the test: pytest would report it as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_dropped_inside_a_finaliser_is_raised_at_the_next_check():
    previous = stop.install()
    try:
        stop.check()  # nothing requested: nothing raised
        with contextlib.suppress(
            stop.Terminated
        ):  # raised here or dropped by the finaliser machinery
            _KillsItselfWhenCollected()
            time.sleep(0.05)
        with pytest.raises(stop.Terminated):
            stop.check()
    finally:
        stop.restore(previous)
    assert signal.getsignal(signal.SIGTERM) is previous[signal.SIGTERM]


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
