"""The tunnel agent against a fake port maker: ports while a plan needs them, removed
after; over OVSDB, the node's step spelled out instead of run. `--ovsdb` parsing."""

from __future__ import annotations

import asyncio

import pytest

from vtap.compile.tunnels import SwitchTunnels
from vtap.control.tunnel_ports import KINDS, PortError, parse_targets
from vtap.control.tunnels import TunnelAgent


class FakePorts:
    def __init__(self, fail: bool = False):
        self.ports: set[tuple[int, str]] = set()
        self.fail = fail

    def add(self, dpid: int, bridge: str, kinds: tuple[str, ...]) -> None:
        if self.fail:
            raise PortError("refused")
        self.ports |= {(dpid, f"{bridge}-{kind}") for kind in kinds}

    def remove(self, dpid: int, bridge: str, kinds: tuple[str, ...]) -> None:
        self.ports -= {(dpid, f"{bridge}-{kind}") for kind in kinds}


PLAN = {1: SwitchTunnels("s1", "10.255.255.7/8", 0x80000001, frozenset({("10.0.0.9", "00:00:00:00:00:09")}))}


async def settle(agent: TunnelAgent) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not agent._due.is_set():
            await asyncio.sleep(0.02)
            return


async def test_over_ovsdb_ports_come_with_the_plan_and_go_with_it():
    ports = FakePorts()
    agent = TunnelAgent(ports, local_routes=False)
    agent.start()
    try:
        assert agent.waiting([1], "10.0.0.9") == []  # no plan: nothing to wait for
        agent.want(PLAN)
        assert agent.waiting([1], "10.0.0.9") == [1] and agent.making_ports()
        await settle(agent)
        assert ports.ports == {(1, f"s1-{k}") for k in KINDS}
        assert agent.waiting([1], "10.0.0.9") == [] and not agent.making_ports()
        assert agent.steps(1) == ["ip addr replace 10.255.255.7/8 dev s1", "ip link set s1 up",
                                  "ovs-appctl ovs/route/add 10.0.0.9/32 s1 pkt_mark=2147483649",
                                  "ovs-appctl tnl/neigh/set s1 10.0.0.9 00:00:00:00:00:09"]
        agent.want({2: PLAN[1]})  # switch 1 away (its connection cut): its ports stay, checked on its return
        await settle(agent)
        assert (1, "s1-gre") in ports.ports and 1 not in agent.applied
        agent.want({})  # the last tunnel policy went
        await settle(agent)
        assert ports.ports == set() and agent.applied == {} and agent.steps(1) == []
    finally:
        await agent.stop()


async def test_a_refused_port_is_counted_and_retried_with_the_next_plan():
    ports = FakePorts(fail=True)
    agent = TunnelAgent(ports, local_routes=False)
    agent.start()
    try:
        agent.want(PLAN)
        await settle(agent)
        assert agent.errors == 1 and agent.applied == {} and agent.waiting([1], "10.0.0.9") == [1]
        ports.fail = False
        agent.want(dict(PLAN))
        await settle(agent)
        assert agent.applied == PLAN
    finally:
        await agent.stop()


def test_ovsdb_targets_by_switch_and_by_default():
    assert parse_targets(["tcp:10.1.1.1:6640", "00000000000000b0=ssl:10.1.1.2:6640"]) == {
        None: "tcp:10.1.1.1:6640", 0xB0: "ssl:10.1.1.2:6640"}


@pytest.mark.parametrize("value, words", [("10.1.1.1:6640", "give [DPID=]tcp:HOST:PORT"),
                                          ("zz=tcp:1.2.3.4:6640", "not a datapath id")])
def test_a_bad_ovsdb_target_is_named(value, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[")):
        parse_targets([value])


def test_the_same_switch_twice_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        parse_targets(["tcp:1.2.3.4:6640", "tcp:1.2.3.5:6640"])
