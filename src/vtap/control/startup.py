"""When a (re)started controller reached each step of its start: what a restart costs.

A restart with thousands of policies is judged by when every policy is active again,
which is the sum of steps of very different kinds: the interpreter and its imports,
loading the store, the switches reconnecting (their own back-off), the first compile,
the switches confirming their rules. Each step's time since the process began is kept
and shown in `GET /api/v1/health` (`startup`), so that a slow restart says which step
is slow.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

STEPS = ("imported", "store_loaded", "first_switch", "switches_back", "first_compile", "rules_confirmed",
         # After a reused first compile: the whole set compiled afresh (which the in-place
         # compile of a change needs: until then a change waits for it) and compared.
         "compile_checked")


def process_age() -> float:
    """Seconds since this process began (Linux: its start time in /proc), 0 where unknown."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, in clock ticks since boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, IndexError, ValueError):
        return 0.0


class Startup:
    """The steps reached, each at its first time only, in seconds since the process began."""

    def __init__(self) -> None:
        self._origin = time.monotonic() - process_age()
        self.steps: dict[str, float] = {}
        # The process's CPU seconds (all its threads) at each step: a step slow for its
        # own work shows as much CPU as time; one that waited (for the switches, for a
        # CPU the machine did not give) shows less.
        self.cpu: dict[str, float] = {}
        self.first_compile = ""  # how it was made: "reused" (the last stop's, control/snapshot.py) or "fresh"

    def compiled(self, reused: bool) -> None:
        """A compile was handed to the switches: the first one says how it was made."""
        if "first_compile" not in self.steps:
            self.first_compile = "reused" if reused else "fresh"
        self.reached("first_compile")

    def reached(self, step: str) -> None:
        assert step in STEPS, step
        if step not in self.steps:
            self.steps[step] = round(time.monotonic() - self._origin, 3)
            self.cpu[step] = round(time.process_time(), 3)
            if step == "rules_confirmed":
                log.info("started: %s", ", ".join(f"{k} at {v:.2f} s ({self.cpu[k]:.2f} s CPU)" for k, v in self.steps.items()))
