"""Heavy requests take at most half of the event loop, however many there are.

The loop that answers the API also runs OpenFlow, LLDP and the reconcilers. A heavy
request (a bulk body, a listing or a scrape of 100,000 policies) works in slices of a
few milliseconds, each inside `HeavyWork.slice()`: heavy slices run one at a time,
whichever request they belong to, and after each one the loop is left to everything
else for as long as the slice took. So the switches always get at least half of the
loop, and a frame from a switch waits at most one slice for its turn. Heavy requests
take longer (twice as long at worst, alone), which is the point. Going on at once when
the loop looked idle saved a PUT of 100,000 1.5 s, but a POST's steps (each waiting on a
thread or a switch) then each waited up to a slice: under four bulk clients a POST
took 215 ms to be active (`tests/integration/test_load.py`, bound 200 ms).

The loop is not all there is: while a whole compile runs in its thread, heavy slices
take the interpreter from it (the bench's counts of 100,000 states, asked twenty times
a second, beside a whole compile). Then each slice is followed by a sleep
`THREADS_SHARE` times as long: the controller's own work comes first, and heavy
requests get at most a quarter of the interpreter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager


THREADS_SHARE = 3  # while the controller works in a thread, heavy slices sleep three times as long as they took


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
                await asyncio.sleep(spent * (THREADS_SHARE if self._threads_busy() else 1))
