"""The watchdog that cuts trickling bodies: deadlines fire, extend and disarm; finished timers do not pile up."""

from __future__ import annotations

import threading
import time

from bpfs.remote.watchdog import COMPACT_AT, Watchdog


def test_a_timer_fires_once_its_deadline_passes():
    dog, fired = Watchdog(), threading.Event()
    dog.arm(time.monotonic() + 0.05, fired.set)
    assert fired.wait(2)


def test_an_extended_timer_fires_at_its_new_deadline_only():
    dog, fired = Watchdog(), []
    start = time.monotonic()
    timer = dog.arm(start + 0.1, lambda: fired.append(time.monotonic() - start))
    for _ in range(8):  # progress keeps extending it, as a body that keeps arriving does
        time.sleep(0.05)
        timer.extend(time.monotonic() + 0.1)
    assert fired == []
    deadline = time.monotonic() + 2
    while not fired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fired) == 1 and fired[0] >= 0.5


def test_a_disarmed_timer_never_fires():
    dog, fired = Watchdog(), []
    timer = dog.arm(time.monotonic() + 0.05, lambda: fired.append(1))
    dog.disarm(timer)
    time.sleep(0.2)
    assert fired == []


def test_an_earlier_deadline_wakes_the_watchdog():
    dog, fired = Watchdog(), threading.Event()
    dog.arm(time.monotonic() + 60, lambda: None)
    time.sleep(0.05)  # the thread now sleeps until the 60 s deadline
    dog.arm(time.monotonic() + 0.05, fired.set)
    assert fired.wait(2)


def test_finished_timers_do_not_pile_up():
    dog = Watchdog()
    for _ in range(3 * COMPACT_AT):
        dog.disarm(dog.arm(time.monotonic() + 600, lambda: None))
    assert dog.pending() <= COMPACT_AT + 1
