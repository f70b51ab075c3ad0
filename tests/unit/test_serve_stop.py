"""The order of `vtap serve`'s stop (serve._stop), with stand-ins for its parts; the
controller's compile snapshot written beside the rest of it."""

import asyncio
import sys
import threading
import time

from vtap import serve
from vtap.bench.compile import population
from vtap.control import snapshot
from vtap.control.controller import Controller
from vtap.store.sqlite import Store


async def test_a_stop_lets_the_switches_go_before_the_rest_of_it():
    """A switch tries its controller again one back-off after its connection closed: the
    connections close as soon as the controller is quiesced (nothing compiled or stored
    for them any more), before the rest of the stop (the compile snapshot)."""
    order = []

    class Controller:
        async def quiesce(self):
            order.append("quiesced")

        async def stop(self):
            order.append("stopped (snapshot written)")

    class OpenFlow:
        def pause(self):
            order.append("reading paused")

        async def stop(self):
            order.append("connections closed")

    class Api:
        should_exit = False

    class Store:
        def close(self):
            order.append("store closed")

    api = Api()
    await serve._stop(OpenFlow(), api, asyncio.create_task(asyncio.sleep(0)), Controller(), None, Store())
    assert api.should_exit
    assert order == ["reading paused", "quiesced", "connections closed", "stopped (snapshot written)", "store closed"]


async def test_the_snapshot_is_written_in_a_thread_from_a_copy_of_the_policies(tmp_path, monkeypatch):
    """The compile snapshot (0.1-0.2 s at 10,000 policies) is written beside the rest of
    the stop, not on the loop, which meanwhile lets the API finish and stop; from a copy
    of the policies, which a request still under way may change."""
    switch_interval = sys.getswitchinterval()  # the controller sets it for its compile thread
    store = Store(tmp_path)
    ctl = Controller(store, debounce=60.0)
    ctl.core.load([], list(population("plain", 20).values()))
    ctl.core.compile()
    compiled_taps = ctl.core.last_compiled[0].taps
    written = {}

    def slow_save(state_dir, key, inputs, result):
        time.sleep(0.3)
        written.update(thread=threading.current_thread(), taps=inputs.taps, result=result)
        return True

    monkeypatch.setattr(snapshot, "save", slow_save)
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await ctl.stop()
    finally:
        ticker.cancel()
        store.close()
        sys.setswitchinterval(switch_interval)
    assert written["thread"] is not threading.main_thread()
    assert ticks >= 5  # the loop ran while the snapshot was written (0.3 s)
    assert written["taps"] == compiled_taps and written["taps"] is not compiled_taps
    assert written["result"] is ctl.core.last_compiled[1]
