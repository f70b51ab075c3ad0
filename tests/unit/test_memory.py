"""Memory by structure: allocations grouped by the vtap module that made them."""

from __future__ import annotations

import tracemalloc

from vtap.bench.controlplane import policies
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
