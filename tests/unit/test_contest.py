"""Two connections claiming one datapath id: the connected switch stays while it answers
an ECHO_REQUEST within ECHO_CONTEST_S; a dead one is replaced by the newcomer."""

from __future__ import annotations

import asyncio
import sys

import pytest

from os_ken.ofproto import ofproto_v1_3 as ofp

from tests.unit.datapath import FakeDatapath, error, until
from vtap.control.claims import ECHO_CONTEST_S
from vtap.control.controller import Controller
from vtap.control.reconciler import SwitchReconciler
from vtap.openflow.channel import ChannelClosed
from vtap.store.sqlite import Store

DPID = 0x1


@pytest.fixture
async def controller(tmp_path):
    """A controller that is not started (no discovery or other loops) and does not compile
    while a test runs (its debounce is a minute): connections, reconcilers and LLDP only."""
    switch_interval = sys.getswitchinterval()  # the controller sets it for its compile thread
    store = Store(tmp_path)
    controller = Controller(store, debounce=60.0)
    yield controller
    await controller.stop()
    store.close()
    sys.setswitchinterval(switch_interval)


async def claim(controller: Controller, old: FakeDatapath, new: FakeDatapath) -> SwitchReconciler:
    """`old` connects and is adopted; `new` connects claiming its dpid; the contest ends,
    and the connections it closed have ended (their handler told) too. Returns the
    reconciler `old` was given."""
    controller.switch_connected(old)
    assert controller.datapaths[DPID] is old
    old_reconciler = controller.reconcilers[DPID]
    await until(lambda: old.count("barrier"))  # its first pass is over: idle, as a switch connected a while
    controller.switch_connected(new)
    await asyncio.gather(*controller._background)
    await asyncio.sleep(0)
    return old_reconciler


async def test_a_second_connection_is_refused_while_the_connected_switch_answers(controller):
    old, new = FakeDatapath(DPID, handler=controller), FakeDatapath(DPID, handler=controller)
    old_reconciler = await claim(controller, old, new)
    assert old.echo_timeouts == [ECHO_CONTEST_S]
    assert controller.refused_connections == 1
    assert new.closed.is_set() and not old.closed.is_set()
    # The refused connection's end did not take the live switch with it.
    assert controller.datapaths[DPID] is old and controller.reconcilers[DPID] is old_reconciler
    assert not new.packet_outs


@pytest.mark.parametrize("death", [ChannelClosed("closed"), asyncio.TimeoutError()], ids=["closed", "echo-timeout"])
async def test_a_dead_connection_is_replaced_by_the_newcomer(controller, death):
    old, new = FakeDatapath(DPID, handler=controller), FakeDatapath(DPID, handler=controller)
    old.fail("request", death)
    old_reconciler = await claim(controller, old, new)
    assert old.echo_timeouts == [ECHO_CONTEST_S]
    assert controller.refused_connections == 0
    assert old.closed.is_set() and not new.closed.is_set()
    # Adopted as the switch: its own reconciler, LLDP out of its port; the old
    # connection's end, which came after, changed nothing; its reconciler stops.
    assert controller.datapaths[DPID] is new and controller.reconcilers[DPID].dp is new
    assert [port for port, _ in new.packet_outs] == [1]
    await until(lambda: old_reconciler._task.done(), timeout=1.0)


async def test_a_newcomer_that_hung_up_during_the_contest_is_not_adopted(controller):
    """Its own end was already told to the controller (and ignored: it was not adopted);
    adopted now, a dead connection would hold the dpid with nothing left to remove it."""
    old, new = FakeDatapath(DPID, handler=controller), FakeDatapath(DPID, handler=controller)
    old.fail("request", asyncio.TimeoutError())
    controller.switch_connected(old)
    controller.switch_connected(new)
    new.writer.close()
    await asyncio.gather(*controller._background)
    assert controller.refused_connections == 1
    assert controller.datapaths[DPID] is old and controller.reconcilers[DPID].dp is old


async def test_a_connection_that_ends_while_its_echo_is_out_leaves_the_dpid_to_the_newcomer(controller):
    """The old connection's end reaches the controller before the echo fails: the dpid
    is free by then, and the only live connection must take it, not be refused."""
    old, new = FakeDatapath(DPID, handler=controller), FakeDatapath(DPID, handler=controller)

    async def ends_meanwhile(msg, timeout=None):
        old.writer.close()
        await until(lambda: DPID not in controller.datapaths)  # the controller was told, and forgot it
        raise ChannelClosed("closed")

    old.request = ends_meanwhile
    await claim(controller, old, new)
    assert controller.refused_connections == 0 and not new.closed.is_set()
    assert controller.datapaths[DPID] is new and controller.reconcilers[DPID].dp is new


async def test_an_error_reply_to_the_echo_is_an_answer(controller):
    """A switch that answers the echo with an OpenFlow error is alive: the newcomer is refused."""
    old, new = FakeDatapath(DPID, handler=controller), FakeDatapath(DPID, handler=controller)
    old.fail("request", error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE))
    await claim(controller, old, new)
    assert controller.refused_connections == 1 and new.closed.is_set()
    assert controller.datapaths[DPID] is old
