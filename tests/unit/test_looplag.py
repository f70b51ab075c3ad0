"""The loop-lag figure and its watchdog: a stall is measured and named where it happens."""

from __future__ import annotations

import asyncio
import gc
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
    # Once the loop runs again, how long the stall lasted in all (the first line was
    # written ~150 ms into it).
    over = [r.getMessage() for r in caplog.records if "stall over" in r.getMessage()]
    assert len(over) == 1, over
    lasted = float(over[0].split("about ")[1].split(" ms")[0])
    assert 380 <= lasted < 1500, over


def test_cpu_wait_is_the_threads_run_queue_time():
    assert cpu_wait(threading.get_native_id()) >= 0.0
    assert cpu_wait(2 ** 31) == 0.0  # no such thread: unknown, not an error


def test_a_stall_during_a_garbage_collection_says_so_and_the_hook_goes_with_the_watch(caplog):
    def collecting(seconds: float) -> None:
        # What the interpreter does around a collection, told to the registered callbacks
        # (a real one that long needs millions of objects): the stall falls inside it.
        for callback in list(gc.callbacks):
            callback("start", {"generation": 2, "collected": 0, "uncollectable": 0})
        hold_the_loop(seconds)
        for callback in list(gc.callbacks):
            callback("stop", {"generation": 2, "collected": 0, "uncollectable": 0})

    async def main() -> int:
        lag = LoopLag()
        task = asyncio.create_task(lag.run())
        await asyncio.sleep(0.2)
        hooked = len(gc.callbacks)
        collecting(0.4)
        await asyncio.sleep(0.1)
        hold_the_loop(0.4)  # a stall after it: no collection named
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return hooked

    before = len(gc.callbacks)
    with caplog.at_level(logging.WARNING, logger="vtap.control.looplag"):
        hooked = asyncio.run(main())
    assert hooked == before + 1 and len(gc.callbacks) == before
    stalls = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalls) == 2, stalls
    assert "hold_the_loop, in a generation-2 garbage collection for" in stalls[0], stalls
    assert "garbage collection" not in stalls[1], stalls
