"""The cyclic garbage collector around compiles.

What the controller holds is long-lived and not cyclic garbage: millions of objects
with 10,000 policies, which every full collection would walk (pauses of up to a second,
several during a whole compile). So a whole compile runs with the collector paused, and
every object there is is frozen before and after each compile: the collector then looks
only at what is newer (control/polling.py thaws and collects them all every `THAW_S`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

YOUNG_MAX = 50_000  # young objects collected before a freeze, at most (a whole compile makes millions)


def paused(run: Callable[[], Any]) -> Any:
    """`run()` with the cyclic garbage collector off: a whole compile makes millions of
    objects that live on, and the collections their growth sets off walked them again
    and again (a third of a compile of 10,000 policies). Only the compile thread pauses
    it, one compile at a time; the loop's garbage meanwhile is mostly freed by reference
    counts, and what is cyclic waits the compile's few seconds."""
    gc.disable()
    try:
        return run()
    finally:
        # Frozen before the collector is back: the first allocations after it (in any
        # thread) would otherwise set off a young collection over the millions just made
        # (690 ms of the loop, seen at 100,000) before the loop's own `freeze()` came; and
        # a freeze meanwhile (a bulk request's) had left them counted as few, so that
        # `freeze()` walked them all (1.1 s).
        gc.freeze()
        gc.enable()


def freeze() -> None:
    """Freeze every object there is, once the young cyclic garbage is collected: frozen,
    it would stay until the next thaw. With a compile per POST, the requests' garbage
    was frozen as it came: 430,000 objects after 10,000 POSTs one at a time, 60 MiB of
    the controller's RSS (216 -> 146 MiB). Not when the young are many (`paused` froze a
    whole compile's millions already): those are to be frozen, not walked."""
    if gc.get_count()[0] < YOUNG_MAX:
        gc.collect(1)
    gc.freeze()
