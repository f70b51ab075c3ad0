"""Heavy requests take at most half of the event loop, however many there are.

The loop that answers the API also runs OpenFlow, LLDP and the reconcilers. A heavy
request (a bulk body, a listing or a scrape of 100,000 policies) works in slices of a
few milliseconds, each inside `HeavyWork.slice()`: heavy slices run one at a time,
whichever request they belong to, and after each one the loop is left to everything
else for as long as the slice took. So the switches always get at least half of the
loop, and a frame from a switch waits at most one slice for its turn. Heavy requests
take longer under load (twice as long at worst, alone), which is the point.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager


class HeavyWork:
    """One per application (its lock belongs to the loop that serves it)."""

    def __init__(self) -> None:
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
                await asyncio.sleep(spent)  # as long again for everything else
