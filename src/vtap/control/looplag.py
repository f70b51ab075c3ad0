"""How late the event loop runs: the health figure `loop_lag_ms`."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class LoopLag:
    """How late the event loop runs a timer: what any request or packet-in storm costs
    the switches' connections, LLDP and reconcilers, which share the loop. The worst
    lateness of the last `window` seconds, and of all time."""

    TICK_S = 0.05

    def __init__(self, window: float = 10.0):
        self.window = window
        self.samples: deque[tuple[float, float]] = deque()  # (when, lateness), the window's
        self.worst_ever = 0.0

    async def run(self) -> None:
        while True:
            due = time.monotonic() + self.TICK_S
            await asyncio.sleep(self.TICK_S)
            now = time.monotonic()
            late = max(0.0, now - due)
            self.worst_ever = max(self.worst_ever, late)
            self.samples.append((now, late))
            while self.samples and now - self.samples[0][0] > self.window:
                self.samples.popleft()

    def worst(self) -> float:
        return max((late for _, late in self.samples), default=0.0)
