"""Polling for the tests: one way to wait for a condition to come true, or fail saying why."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.1,
               message: str | Callable[[], str] | None = None) -> T:
    """Call `predicate()` until it returns a truthy value, and return that value.

    The predicate is called at once, then again `interval` seconds after each falsy
    answer. Once `timeout` seconds have passed since the start, the next falsy answer
    ends the wait with an AssertionError: so the condition is always checked at or after
    the deadline (one that comes true just in time is not missed), and a slow predicate
    (a ping, say) is never cut short.

    The AssertionError names the timeout and the predicate's last (falsy) value, after
    `message` if one is given: a string, or a function called only then, for a
    description of the state at the time of failure (e.g. what is still left over).

    Exceptions from the predicate are not caught: a predicate that may fail while the
    condition is not yet true (say, a server not yet listening) catches them itself.

    To know how long the condition took, time the call: `wait_until` returns the
    predicate's value, not the seconds waited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            prefix = f"{what}: " if what else ""
            raise AssertionError(f"{prefix}condition not met within {timeout} s (last value: {value!r})")
        time.sleep(interval)
