"""The start's steps: each kept at its first time, in seconds since the process began."""

from __future__ import annotations

import logging
import time

import pytest

from vtap.control.startup import Startup, process_age


def test_steps_are_kept_at_their_first_time_since_the_process_began(caplog):
    before = process_age()
    assert before > 0.05  # this interpreter began a while ago (its imports alone take longer)
    start = Startup()
    start.reached("imported")
    after = process_age()
    time.sleep(0.05)
    start.reached("imported")  # again: the first time stays
    start.reached("first_compile")
    with caplog.at_level(logging.INFO, logger="vtap.control.startup"):
        start.reached("rules_confirmed")
    steps = start.steps
    assert list(steps) == ["imported", "first_compile", "rules_confirmed"]
    # The process's start time is known to a clock tick (10 ms); the steps are rounded to 1 ms.
    assert before - 0.02 <= steps["imported"] <= after + 0.02
    assert steps["first_compile"] - steps["imported"] >= 0.049
    assert "rules_confirmed at" in caplog.text
    start.reached("compile_checked")  # after a reused compile: kept, not logged again
    assert list(start.steps)[-1] == "compile_checked" and caplog.text.count("started:") == 1
    del start.steps["compile_checked"], start.cpu["compile_checked"]
    # The process's CPU seconds at each step: never more than it had at the end, growing.
    cpu = start.cpu
    assert list(cpu) == list(steps)
    assert cpu["imported"] <= cpu["first_compile"] <= cpu["rules_confirmed"] <= time.process_time() + 0.001  # rounded to 1 ms
    assert cpu["imported"] > 0.05  # the interpreter's own imports came first


def test_an_unknown_step_is_a_programming_error():
    with pytest.raises(AssertionError):
        Startup().reached("warmed_up")
