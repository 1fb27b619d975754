"""The compile's short switch interval is process-wide: overlapping compiles must put back the original."""

import sys
import threading

import pytest

from model.inference.compiled_step import SWITCH_INTERVAL_S, short_switch_interval


def test_overlapping_compiles_restore_the_interval_that_was_there_before_the_first():
    before = sys.getswitchinterval()
    first_in, second_out = threading.Event(), threading.Event()

    def first() -> None:
        with short_switch_interval:
            first_in.set()
            second_out.wait(5)  # the second compile ends first

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with short_switch_interval:
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)  # the first is still compiling
    second_out.set()
    thread.join(5)
    assert sys.getswitchinterval() == before
