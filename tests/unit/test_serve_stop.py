"""The order of `vtap serve`'s stop (serve._stop), with stand-ins for its parts."""

import asyncio

from vtap import serve


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
