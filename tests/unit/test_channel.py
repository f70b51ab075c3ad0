"""Version negotiation, and a Datapath against a scripted peer on a real socket pair."""

from __future__ import annotations

import asyncio
import struct

import pytest

from vtap.openflow.channel import Datapath, ProtocolError, hello_accepts_13, hello_bytes


def test_hello_bitmap_with_13():
    body = struct.pack("!HHI", 1, 8, (1 << 4) | (1 << 1))
    assert hello_accepts_13(6, body)


def test_hello_bitmap_without_13():
    body = struct.pack("!HHI", 1, 8, 1 << 1)
    assert not hello_accepts_13(6, body)


def test_hello_without_bitmap_uses_the_version():
    assert hello_accepts_13(4, b"") and hello_accepts_13(5, b"")
    assert not hello_accepts_13(1, b"")


def test_hello_with_lying_element_length():
    with pytest.raises(ProtocolError):
        hello_accepts_13(4, struct.pack("!HH", 1, 64))


def test_our_hello_offers_only_13():
    data = hello_bytes()
    assert data[0] == 4 and data[1] == 0 and struct.unpack("!H", data[2:4])[0] == len(data)
    assert struct.unpack("!I", data[12:16])[0] == 1 << 4


class _Recorder:
    def __init__(self):
        self.events = []

    def switch_connected(self, dp):
        self.events.append("connected")

    def switch_disconnected(self, dp):
        self.events.append("disconnected")

    def packet_in(self, dp, msg):
        self.events.append("packet_in")

    def port_status(self, dp, msg):
        self.events.append("port_status")


async def _serve_once(handler, script):
    """Run a Datapath on one side of a socket; `script` plays the switch on the other."""
    done = asyncio.Event()
    dps = []

    async def accept(reader, writer):
        dp = Datapath(reader, writer, handler, message_timeout=0.5, echo_interval=0.2, echo_timeout=0.6)
        dps.append(dp)
        await dp.run()
        done.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await script(reader, writer)
    await asyncio.wait_for(done.wait(), 5)
    writer.close()
    server.close()
    return dps[0]


async def test_garbage_closes_the_connection():
    rec = _Recorder()

    async def script(reader, writer):
        writer.write(b"\xff" * 32)
        await writer.drain()

    await _serve_once(rec, script)
    assert rec.events == []


async def test_stalled_message_closes_the_connection():
    rec = _Recorder()

    async def script(reader, writer):
        await reader.readexactly(16)  # our HELLO
        writer.write(hello_bytes()[:8])  # header promises 16 bytes; 8 never come
        await writer.drain()

    await _serve_once(rec, script)
    assert rec.events == []


def _flow_stats_entry(table: int, cookie: int, packets: int, bytes_: int, in_port: int) -> bytes:
    """One ofp_flow_stats entry as a switch sends it: counters, a match, an instruction."""
    from os_ken.ofproto import ofproto_v1_3 as ofp13
    from os_ken.ofproto import ofproto_v1_3_parser as p13

    tail = bytearray()
    p13.OFPMatch(in_port=in_port, eth_type=0x0800, ipv4_src="10.0.0.1").serialize(tail, 0)
    p13.OFPInstructionActions(ofp13.OFPIT_APPLY_ACTIONS, [p13.OFPActionOutput(2, 0)]).serialize(tail, len(tail))
    head = struct.pack("!HBxIIHHHH4xQQQ", 48 + len(tail), table, 7, 8, 100, 0, 0, 0, cookie, packets, bytes_)
    return head + bytes(tail)


def test_flow_counters_are_read_from_the_bytes_as_os_ken_reads_them():
    """What `flow_counters` takes from a reply's bytes equals what os-ken's full parse
    gives (table, cookie, packets, bytes), entry by entry over matches and instructions
    of different lengths; a cut entry is a ProtocolError, not a wrong count."""
    from os_ken.ofproto import ofproto_v1_3_parser as p13

    from vtap.openflow.channel import flow_counter_entries

    body = b"".join(_flow_stats_entry(t, c, p, b, port) for t, c, p, b, port in
                    [(1, 0x0200_0000_0000_0001, 5, 500, 1), (5, 0x0200_0000_0000_0002, 2**40, 2**50, 70000), (0, 1, 0, 0, 3)])
    parsed, offset = [], 0
    while offset < len(body):
        entry = p13.OFPFlowStats.parser(body, offset)
        parsed.append((entry.table_id, entry.cookie, entry.packet_count, entry.byte_count))
        offset += entry.length
    assert flow_counter_entries(body) == parsed and len(parsed) == 3
    with pytest.raises(ProtocolError, match="cut short"):
        flow_counter_entries(body[:-len(_flow_stats_entry(0, 1, 0, 0, 3)) + 20])
