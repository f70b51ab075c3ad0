"""The loop-lag figure and its watchdog: a stall is measured and named where it happens."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from vtap.control.looplag import LoopLag, cpu_wait


def hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a callback that does not yield: what a stall is


def test_a_stall_is_measured_and_logged_where_the_loop_is(caplog):
    async def main() -> LoopLag:
        lag = LoopLag()
        task = asyncio.create_task(lag.run())
        await asyncio.sleep(0.2)
        hold_the_loop(0.4)
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return lag

    with caplog.at_level(logging.WARNING, logger="vtap.control.looplag"):
        lag = asyncio.run(main())
    assert 0.3 < lag.worst_ever < 1.0 and lag.worst() == lag.worst_ever
    stalls = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalls) == 1, stalls  # once per stall
    assert "hold_the_loop" in stalls[0] and "waiting for a CPU" in stalls[0], stalls


def test_cpu_wait_is_the_threads_run_queue_time():
    assert cpu_wait(threading.get_native_id()) >= 0.0
    assert cpu_wait(2 ** 31) == 0.0  # no such thread: unknown, not an error
