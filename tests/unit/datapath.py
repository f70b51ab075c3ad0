"""A stand-in for `vtap.openflow.channel.Datapath`: one switch connection without a socket.

It holds a switch's flow, group and meter tables behind the calls the reconciler makes
(flow stats, group descriptions, meter configs, batches, barriers) and answers the
controller's ECHO_REQUEST. Any of these calls can be made to fail, in order, with what
the real channel raises: an OpenFlowError (the switch's OFPT_ERROR), asyncio.TimeoutError
(no reply in time) or ChannelClosed. Closing its writer ends the connection as
`Datapath.run` does: closed at once, the handler told a turn later.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import defaultdict
from typing import Any, Callable, Iterable

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vtap.model.network import Port
from vtap.model.rules import SwitchRules
from vtap.openflow.channel import Datapath
from vtap.openflow import translate
from vtap.openflow.channel import ChannelClosed, OpenFlowError
from vtap.openflow.translate import PROTOCOL


def stats_entry(stats: Any, packets: int = 0, bytes_: int = 0) -> bytes:
    """An OFPFlowStats as a switch sends it in a multipart reply (os-ken parses these
    but does not write them): the fixed part, the match padded to 8 bytes, the instructions."""
    tail = bytearray()
    stats.match.serialize(tail, 0)
    tail.extend(b"\0" * (-len(tail) % 8))
    for inst in stats.instructions:
        inst.serialize(tail, len(tail))
    head = struct.pack("!HBxIIHHHH4xQQQ", 48 + len(tail), stats.table_id, 1, 2, stats.priority, 0, 0, 0, stats.cookie,
                       packets, bytes_)
    return head + bytes(tail)


def error(type_: int, code: int, request: str = "a request") -> OpenFlowError:
    """What the channel raises when the switch answers with OFPT_ERROR (type, code)."""
    return OpenFlowError(parser.OFPErrorMsg(PROTOCOL, type_=type_, code=code), request)


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Let the loop run until `predicate()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await asyncio.sleep(0.001)


class _Writer:
    def __init__(self, dp: FakeDatapath):
        self.dp = dp

    def close(self) -> None:
        if not self.dp.closed.is_set():
            self.dp.closed.set()
            if self.dp.handler is not None:
                asyncio.get_running_loop().call_soon(self.dp.handler.switch_disconnected, self.dp)


class FakeDatapath:
    device = Datapath.device  # the real one: it reads only the attributes below

    def __init__(self, dpid: int = 1, *, handler: Any = None, ports: tuple[int, ...] = (1,)):
        self.dpid = dpid
        self.handler = handler
        self.peer = ("127.0.0.1", 6653)
        self.certificate = None  # plain TCP: no pin to check
        self.n_tables = 254
        self.ports = {n: Port(n, f"s{dpid}-eth{n}", f"02:00:00:00:{dpid & 0xFF:02x}:{n:02x}", True) for n in ports}
        self.connected_since = time.time()
        self.closed = asyncio.Event()
        self.writer = _Writer(self)
        self.flows: dict[tuple, Any] = {}  # (table, priority, match) -> OFPFlowStats
        self.groups: dict[int, Any] = {}  # group id -> OFPGroupDescStats
        self.meters: dict[int, Any] = {}  # meter id -> OFPMeterConfigStats
        self.calls: list[tuple[str, float]] = []  # (method, monotonic time) of every request
        self.echo_timeouts: list[float | None] = []
        self.packet_outs: list[tuple[int, bytes]] = []
        self._faults: dict[str, list[BaseException]] = defaultdict(list)

    def __repr__(self) -> str:
        return f"<FakeDatapath {self.dpid:016x}>"

    # ---- the test's side ---------------------------------------------------------

    def fail(self, method: str, *errors: BaseException) -> None:
        """The next calls of `method` raise `errors`, one each, in order."""
        assert callable(getattr(self, method, None)), method
        self._faults[method].extend(errors)

    def count(self, method: str) -> int:
        return sum(name == method for name, _ in self.calls)

    def install(self, rules: SwitchRules) -> None:
        """Put rules in the tables directly, as a previous controller run left them."""
        for m in rules.meters:
            self._apply(translate.meter_add(m))
        for g in rules.groups:
            self._apply(translate.group_add(g))
        for f in rules.flows:
            self._apply(translate.flow_add(f))

    def held(self) -> SwitchRules:
        """The tables, read as vtap's rules."""
        return SwitchRules(
            frozenset(map(translate.flow_from_stats, self.flows.values())),
            frozenset(map(translate.group_from_desc, self.groups.values())),
            frozenset(map(translate.meter_from_config, self.meters.values())),
        )

    # ---- the Datapath's side -------------------------------------------------------

    async def _answer(self, method: str) -> None:
        """A request goes out; its reply (or error) comes on a later turn of the loop."""
        self.calls.append((method, time.monotonic()))
        if self.closed.is_set():
            raise ChannelClosed(f"{self!r} is closed")
        await asyncio.sleep(0)
        if self._faults[method]:
            raise self._faults[method].pop(0)

    async def request(self, msg: Any, timeout: float | None = None) -> list[Any]:
        """Only ECHO_REQUEST comes this way (the controller asking whether a switch lives)."""
        assert isinstance(msg, parser.OFPEchoRequest), msg
        self.echo_timeouts.append(timeout)
        await self._answer("request")
        return [parser.OFPEchoReply(PROTOCOL, data=msg.data)]

    async def flow_stats_raw(self, cookie: int = 0, cookie_mask: int = 0) -> list[bytes]:
        """The entries in bodies of at most 64 KiB, as a switch splits a long reply."""
        await self._answer("flow_stats_raw")
        bodies, body = [], b""
        for s in self.flows.values():
            if s.cookie & cookie_mask == cookie & cookie_mask:
                entry = stats_entry(s)
                if body and len(body) + len(entry) > 65_000:
                    bodies.append(body)
                    body = b""
                body += entry
        return bodies + [body] if body else bodies

    async def group_desc(self) -> list[Any]:
        await self._answer("group_desc")
        return list(self.groups.values())

    async def meter_config(self) -> list[Any]:
        await self._answer("meter_config")
        return list(self.meters.values())

    async def barrier(self) -> None:
        await self._answer("barrier")

    async def send_batch(self, msgs: Iterable[Any], *, atomic: bool = True) -> None:
        """All of the batch or, on an error, none of it (as a bundle; enough for these tests)."""
        msgs = list(msgs)  # the channel's takes a generator too
        if not msgs:
            return
        await self._answer("send_batch")
        for mod in msgs:
            self._apply(mod)

    def packet_out(self, port: int, data: bytes, in_port: int = ofp.OFPP_CONTROLLER) -> None:
        if self.closed.is_set():
            raise ChannelClosed(f"{self!r} is closed")
        self.packet_outs.append((port, data))

    def _apply(self, mod: Any) -> None:
        if isinstance(mod, parser.OFPFlowMod):
            key = (mod.table_id, mod.priority, translate.match_from_of(mod.match))
            if mod.command == ofp.OFPFC_DELETE_STRICT:
                self.flows.pop(key, None)
            else:  # ADD and MODIFY_STRICT: the entry with this key, replaced
                self.flows[key] = parser.OFPFlowStats(table_id=mod.table_id, priority=mod.priority, cookie=mod.cookie,
                                                      match=mod.match, instructions=mod.instructions)
        elif isinstance(mod, parser.OFPGroupMod):
            if mod.command == ofp.OFPGC_DELETE:
                self.groups.pop(mod.group_id, None)
            else:
                self.groups[mod.group_id] = parser.OFPGroupDescStats(type_=mod.type, group_id=mod.group_id, buckets=mod.buckets)
        elif isinstance(mod, parser.OFPMeterMod):
            if mod.command == ofp.OFPMC_DELETE:
                self.meters.pop(mod.meter_id, None)
            else:
                self.meters[mod.meter_id] = parser.OFPMeterConfigStats(flags=mod.flags, meter_id=mod.meter_id, bands=mod.bands)
        else:
            raise AssertionError(f"the fake datapath does not model {type(mod).__name__}")
