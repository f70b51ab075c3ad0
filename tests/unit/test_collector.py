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


def test_a_compile_and_its_memo_go_with_their_last_reference():
    """The memo keeps the last compile's Ctx, which reaches the memo weakly: no cycle, so
    a throwaway memo (a dry run's, a bulk apply's plan) is freed at once, not frozen
    with the rest until a thaw."""
    from vtap.bench.compile import population, topo_view
    from vtap.compile.network import compile_network
    from vtap.compile.taps import TapMemo
    from vtap.lab.topos import parse_topo

    memo = TapMemo()
    result = compile_network(topo_view(parse_topo("fattree,4")), population("plain", 200), memo=memo)
    assert memo.last is not None and memo.last.ctx.memo.token is not None  # the compile in it reaches the memo
    gone = weakref.ref(memo)
    gc.disable()
    try:
        del memo, result
        assert gone() is None
    finally:
        gc.enable()


def test_a_paused_run_leaves_its_objects_frozen_before_the_collector_is_back():
    """Whatever the run made is frozen as the collector comes back: the first young
    collection after it does not walk them, however few the young count says they are
    (a freeze during the run resets that count)."""
    made = []

    def compile_():
        made.extend(Node() for _ in range(1000))
        gc.freeze()  # a bulk request's freeze meanwhile: the count starts again from 0
        made.extend(Node() for _ in range(1000))
        return len(made)

    try:
        collector.paused(compile_)
        tracked = {id(o) for o in gc.get_objects(generation=0)} | {id(o) for o in gc.get_objects(generation=1)}
        assert not any(id(o) in tracked for o in made)
    finally:
        gc.unfreeze()
