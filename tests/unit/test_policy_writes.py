"""Writes of policies through the controller: the store, then the core, one at a time.

A bulk apply gives the loop back while the store writes (a worker thread) and while the
core takes the policies in (slices); a single write asked meanwhile must not come
between the two, or the core would hold what the store does not."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.unit.loop import LoopTurns
from vtap.control import controller as controller_module
from vtap.control.controller import Controller
from vtap.model.policy import TapSpec
from vtap.store.sqlite import Store


def spec(name: str, port: int = 1) -> TapSpec:
    return TapSpec(name=name, src_ip="10.0.0.1", dst_port=port, ip_proto="udp", monitor_ip="10.0.0.2")


@pytest.fixture
async def controller(tmp_path):
    switch_interval = sys.getswitchinterval()
    store = Store(tmp_path)
    ctl = Controller(store, debounce=60.0)  # not started, and no compile while a test runs
    yield ctl
    await ctl.stop()
    store.close()
    sys.setswitchinterval(switch_interval)


async def test_a_delete_asked_during_a_bulk_apply_comes_after_it_in_the_store_and_the_core(controller, monkeypatch):
    monkeypatch.setattr(controller_module, "CORE_SLICE", 3)  # the core takes the set in several slices
    first = await controller.add_tap(spec("p0"))

    async def meanwhile():
        await asyncio.sleep(0)  # the apply has begun (its store write is in a worker thread)
        await controller.delete_tap(first.id)

    plan, _ = await asyncio.gather(controller.apply_taps([spec(f"p{i}", port=2) for i in range(10)], prune=False),
                                   meanwhile())
    assert [before.id for before, _ in plan.changed] == [first.id]  # the apply changed p0 ...
    stored = {t.id: t.spec for t in controller.store.load_taps()}
    assert first.id not in stored and len(stored) == 9  # ... then the delete removed it
    assert {i: t.spec for i, t in controller.core.taps.items()} == stored  # and the core agrees


async def test_a_bulk_apply_takes_every_policy_into_the_core_over_several_turns_of_the_loop(controller, monkeypatch):
    monkeypatch.setattr(controller_module, "CORE_SLICE", 4)
    seen = []
    set_tap = controller.core.set_tap
    async with LoopTurns() as turns:

        def counted(tap):
            seen.append(turns.count)  # how far the rest of the loop had got when this one was taken
            set_tap(tap)

        monkeypatch.setattr(controller.core, "set_tap", counted)
        plan = await controller.apply_taps([spec(f"q{i}") for i in range(20)], prune=False)
    assert len(plan.added) == 20 and sorted(controller.core.taps) == sorted(t.id for t in plan.added)
    assert len(set(seen)) == 20 // 4  # five slices, the loop turning between two


async def test_a_bulk_apply_whose_request_is_cancelled_still_ends_with_the_core_like_the_store(controller, monkeypatch):
    """The store's write runs in its thread whatever happens to the request: cancelled
    meanwhile (a client gone), the core must still take what the store now holds."""
    monkeypatch.setattr(controller_module, "CORE_SLICE", 2)
    request = asyncio.ensure_future(controller.apply_taps([spec(f"c{i}") for i in range(12)], prune=False))
    await asyncio.sleep(0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    for _ in range(200):  # the apply goes on without the request
        if len(controller.core.taps) == 12:
            break
        await asyncio.sleep(0.01)
    stored = {t.id: t.spec for t in controller.store.load_taps()}
    assert len(stored) == 12 and {i: t.spec for i, t in controller.core.taps.items()} == stored


async def test_the_policies_a_large_bulk_apply_takes_in_are_frozen(controller, monkeypatch):
    """Past a slice, what the apply made lives on and is frozen: no full collection
    walks it (one struck while a PUT of 100,000 made its audit records: 340 ms)."""
    import gc

    monkeypatch.setattr(controller_module, "CORE_SLICE", 4)
    try:
        plan = await controller.apply_taps([spec(f"f{i}") for i in range(10)], prune=False)
        young = {id(o) for g in range(3) for o in gc.get_objects(generation=g)}
        assert plan.added and not any(id(t) in young or id(t.spec) in young for t in plan.added)
    finally:
        gc.unfreeze()
