"""The controller's memory by the structure that holds it, from tracemalloc.

An RSS figure says how much, not what: this groups the live allocations of a
tracemalloc snapshot by the innermost frame of vtap's own code that made them (so a
pydantic model or a dict is counted in the module that built it: `model/policy`,
`compile/taps/points`, `control/reconciler`...). Tracing costs time and memory of its
own, so it is off unless the controller runs with `vtap serve --trace-memory 16`
(frames kept per allocation); `vtap bench controlplane` does, in a run of its own.
"""

from __future__ import annotations

import ctypes
import logging
import tracemalloc
from collections import defaultdict
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = str(Path(__file__).resolve().parents[1]) + "/"  # vtap's own directory


def traced() -> dict | None:
    """This process's RSS, traced memory and `by_structure`, or None when not tracing."""
    if not tracemalloc.is_tracing():
        return None
    snapshot = tracemalloc.take_snapshot()
    return {"rss_mib": rss_mib(), "traced_mib": round(tracemalloc.get_traced_memory()[0] / 2 ** 20, 1),
            "by_structure": by_structure(snapshot)}


def by_structure(snapshot: tracemalloc.Snapshot, top: int = 25) -> list[dict]:
    """The `top` holders of the snapshot's memory, largest first: {"structure", "mib",
    "blocks"}; what no vtap frame made is "(outside vtap) <package>"."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for stat in snapshot.statistics("traceback"):
        entry = sizes[holder(stat.traceback)]
        entry[0] += stat.size
        entry[1] += stat.count
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1][0])
    return [{"structure": k, "mib": round(size / 2 ** 20, 2), "blocks": count} for k, (size, count) in ranked[:top]]


def holder(traceback: tracemalloc.Traceback) -> str:
    """The vtap module (path under the package, no suffix) of the innermost vtap frame."""
    frames = list(traceback)  # oldest first
    for frame in reversed(frames):
        if frame.filename.startswith(PACKAGE):
            return frame.filename[len(PACKAGE):].removesuffix(".py")
    innermost = frames[-1].filename if frames else "?"
    after = innermost.split("/site-packages/", 1)
    return "(outside vtap) " + (after[1].split("/", 1)[0] if len(after) == 2 else innermost.rsplit("/", 1)[-1])


def rss_mib(pid: str | int = "self") -> float:
    """A process's resident memory in MiB (Linux), 0 where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _malloc_trim():
    """glibc's malloc_trim, from the C library the interpreter runs on, or None (another
    C library)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def give_back() -> float:
    """Hand the C heap's free pages back to the system; the MiB of RSS it gave back.

    A whole compile builds the new rules while the old ones are in force, so the heap
    grows to hold both; once the old are dropped glibc keeps their pages mapped, in
    holes between live blocks, and the RSS stays at the peak. malloc_trim returns every
    free page (1 ms; 14 MiB of 236 after a second whole compile of 10,000 policies
    in-process). Where the C library has no malloc_trim, nothing is done."""
    if _TRIM is None:
        return 0.0
    before = rss_mib()
    _TRIM(0)
    freed = max(0.0, before - rss_mib())
    log.debug("gave %.1f MiB back to the system", freed)
    return freed
