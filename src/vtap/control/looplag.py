"""How late the event loop runs: the health figure `loop_lag_ms`, and why it stalled."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
from collections import deque

log = logging.getLogger(__name__)


class LoopLag:
    """How late the event loop runs a timer: what any request or packet-in storm costs
    the switches' connections, LLDP and reconcilers, which share the loop. The worst
    lateness of the last `window` seconds, and of all time.

    A lateness figure alone does not say what to fix. So a watchdog thread looks at the
    loop thread once a tick is overdue by `STALL_S` and logs, once per stall, where it
    is (the innermost frame and vtap's own innermost frames) and how much of the stall
    it spent runnable but waiting for a CPU (Linux's schedstat): a stall that is mostly
    waiting is a machine too busy for the controller, not work the controller does. A
    stall inside the garbage collector says so (its frame is only where it struck). When
    the loop runs again, how long the stall lasted in all: the first line is written
    while it is still under way, and a stall of seconds (a switch's echo unanswered, its
    connection dropped) looked like one of 200 ms."""

    TICK_S = 0.05
    STALL_S = 0.15

    def __init__(self, window: float = 10.0):
        self.window = window
        self.samples: deque[tuple[float, float]] = deque()  # (when, lateness), the window's
        self.worst_ever = 0.0
        self._due = float("inf")  # when the next tick should run
        self._thread: tuple[int, int] | None = None  # the loop thread's (ident, native id)
        self._collecting: tuple[int, float] | None = None  # a garbage collection under way: (generation, since)

    async def run(self) -> None:
        self._thread = threading.get_ident(), threading.get_native_id()
        threading.Thread(target=self._watch, name="loop-lag-watchdog", daemon=True).start()
        gc.callbacks.append(self._gc)
        try:
            while True:
                due = self._due = time.monotonic() + self.TICK_S
                await asyncio.sleep(self.TICK_S)
                now = time.monotonic()
                late = max(0.0, now - due)
                self.worst_ever = max(self.worst_ever, late)
                self.samples.append((now, late))
                while self.samples and now - self.samples[0][0] > self.window:
                    self.samples.popleft()
        finally:
            self._thread = None
            gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        self._collecting = (info["generation"], time.monotonic()) if phase == "start" else None

    def worst(self) -> float:
        return max((late for _, late in self.samples), default=0.0)

    def _watch(self) -> None:
        seen, waited, reported = None, 0.0, None
        while (thread := self._thread) is not None:
            time.sleep(self.STALL_S / 3)
            due = self._due
            if due != seen:  # a new tick: where the CPU wait is counted from
                if reported is not None and reported == seen:
                    log.warning("event loop stall over: it lasted about %.0f ms (%.0f ms of it waiting for a CPU)",
                                (time.monotonic() - seen) * 1000, (cpu_wait(thread[1]) - waited) * 1000)
                seen, waited = due, cpu_wait(thread[1])
            elif time.monotonic() - due > self.STALL_S and reported != due:
                reported = due
                frame = sys._current_frames().get(thread[0])
                collecting = self._collecting
                if frame is not None:
                    log.warning("event loop stalled %.0f ms so far (%.0f ms of it waiting for a CPU), in %s%s",
                                (time.monotonic() - due) * 1000, (cpu_wait(thread[1]) - waited) * 1000, where(frame),
                                "" if collecting is None else
                                f", in a generation-{collecting[0]} garbage collection for {(time.monotonic() - collecting[1]) * 1000:.0f} ms")


def cpu_wait(native_id: int) -> float:
    """Seconds a thread has spent runnable, waiting on a run queue (0 where unknown)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def where(frame) -> str:
    """The innermost frame of a stack, then the innermost three of vtap's own code
    (read from the frames themselves: `traceback` would read and cache source files)."""
    stack = []
    while frame is not None:
        stack.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    ours = [f for f in stack[1:] if "/vtap/" in f[0]][:3]
    return " <- ".join(f"{'/'.join(name.rsplit('/', 2)[-2:])}:{line} {func}" for name, line, func in stack[:1] + ours)
