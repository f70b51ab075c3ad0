"""Heavy requests take at most half of the event loop, however many there are.

The loop that answers the API also runs OpenFlow, LLDP and the reconcilers. A heavy
request (a bulk body, a listing or a scrape of 100,000 policies) works in slices of a
few milliseconds, each inside `HeavyWork.slice()`: heavy slices run one at a time,
whichever request they belong to, and after each one the loop is left to everything
else for as long as the slice took, or until everything else has nothing to do. So the
switches always get at least half of the loop when they want it, and a frame from a
switch waits at most one slice for its turn. Heavy requests take longer under load
(twice as long at worst), which is the point; on an idle loop they do not wait (a PUT
of 100,000 policies slept 1.5 s between its slices with nobody else wanting the loop).

The loop is not all there is: while a whole compile runs in its thread, the loop being
idle does not mean the interpreter is, and heavy slices back to back took it from the
compile (the bench's counts of 100,000 states, asked twenty times a second, made a
whole compile 50% longer). Then each slice is followed by a sleep `THREADS_SHARE` times
as long, whatever the loop has to do: the controller's own work comes first, and
heavy requests get at most a quarter of the interpreter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager


THREADS_SHARE = 3  # while the controller works in a thread, heavy slices sleep three times as long as they took
IDLE_TURN_S = 0.0001  # a turn of the loop that took less ran nothing else (an empty turn: ~20 us)


class HeavyWork:
    """One per application (its lock belongs to the loop that serves it)."""

    def __init__(self, threads_busy: Callable[[], bool] = lambda: False) -> None:
        self._threads_busy = threads_busy  # whether work of the controller's own runs in a thread
        self._lock = asyncio.Lock()
        self.slices = 0
        self.seconds = 0.0  # spent in heavy slices, in all

    @asynccontextmanager
    async def slice(self):
        async with self._lock:
            started = time.perf_counter()
            try:
                yield
            finally:
                spent = time.perf_counter() - started
                self.slices += 1
                self.seconds += spent
                if self._threads_busy():
                    await asyncio.sleep(spent * THREADS_SHARE)
                else:
                    await _give_way(spent)


async def _give_way(spent: float) -> None:
    """Let the loop run everything else, turn after turn, until it has had `spent`
    seconds or a turn finds nothing to run. A turn of the loop runs what was ready when
    it began: one that comes back at once ran nothing but this task."""
    given = 0.0
    while given < spent:
        started = time.perf_counter()
        await asyncio.sleep(0)
        took = time.perf_counter() - started
        if took < IDLE_TURN_S:
            return
        given += took
