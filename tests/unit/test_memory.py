"""Memory by structure: allocations grouped by the vtap module that made them."""

from __future__ import annotations

import tracemalloc

from vtap.bench.controlplane import policies
from vtap.control import memory
from vtap.control.memory import by_structure


def test_allocations_are_counted_in_the_vtap_module_that_made_them():
    tracemalloc.start(25)
    try:
        specs = policies(0, 5000, 1000)  # 5,000 dicts made in vtap's bench module
        outside = [bytearray(1000) for _ in range(1000)]  # made here, in the test: outside vtap
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    rows = {r["structure"]: r for r in by_structure(snapshot, top=1000)}
    assert rows["(outside vtap) test_memory.py"]["mib"] >= 0.9 and rows["(outside vtap) test_memory.py"]["blocks"] >= 1000
    assert rows["bench/controlplane"]["blocks"] >= 5000 and rows["bench/controlplane"]["mib"] > 1
    assert len(specs) == 5000 and len(outside) == 1000
    ranked = by_structure(snapshot, top=2)
    assert len(ranked) == 2 and ranked[0]["mib"] >= ranked[1]["mib"]


def test_free_pages_are_given_back_to_the_system():
    # A large block freed in the middle of the heap: glibc keeps its pages mapped until
    # trimmed (an mmap'd block, over 128 KiB, would go back by itself: many small ones).
    keep, drop = [], []
    for i in range(20_000):
        (keep if i % 50 == 0 else drop).append(bytearray(1000))
    before = memory.rss_mib()
    del drop
    freed = memory.give_back()
    assert freed >= 0.0 and memory.rss_mib() <= before
    if memory._TRIM is not None:  # glibc: the 19 MiB freed between the kept blocks go back
        assert freed > 5.0, freed
    assert len(keep) == 400
