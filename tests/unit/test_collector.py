"""The collector around compiles (control/collector.py): young cyclic garbage is
collected before a freeze, not frozen with what the controller holds; after a whole
compile (the collector paused, millions of new objects) nothing is walked."""

from __future__ import annotations

import gc
import weakref

from vtap.control import collector


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def _cycle() -> weakref.ref:
    return weakref.ref(Node())


def test_young_cyclic_garbage_is_collected_before_the_freeze():
    gone = _cycle()
    assert gone() is not None  # not collected yet: a cycle
    try:
        collector.freeze()
        assert gone() is None
    finally:
        gc.unfreeze()


def test_after_a_whole_compile_the_young_are_frozen_unwalked(monkeypatch):
    monkeypatch.setattr(collector, "YOUNG_MAX", 100)
    kept = []

    def compile_():
        kept.extend(object.__new__(Node) for _ in range(500))  # many new objects, the collector paused
        return _cycle()

    garbage = collector.paused(compile_)
    assert gc.isenabled()
    try:
        collector.freeze()
        assert garbage() is not None  # frozen with the rest, not collected: nothing was walked
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.collect()
    assert garbage() is None  # a thaw collects it (control/polling.py)
