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


async def _play_switch_handshake(reader, writer, dpid: int) -> None:
    """A switch's side of the handshake: its hello, then the features and port
    descriptions the controller asks for (the set-config between needs no answer)."""
    from os_ken.ofproto import ofproto_v1_3 as ofp13
    from os_ken.ofproto import ofproto_v1_3_parser as p13

    def header(data: bytes):
        return struct.unpack("!BBHI", data[:8])

    writer.write(hello_bytes())
    await reader.readexactly(16)  # the controller's hello
    answered = 0
    while answered < 2:
        version, kind, length, xid = header(await reader.readexactly(8))
        await reader.readexactly(length - 8)
        if kind == ofp13.OFPT_FEATURES_REQUEST:
            body = struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0, 0)
            writer.write(struct.pack("!BBHI", 4, ofp13.OFPT_FEATURES_REPLY, 8 + len(body), xid) + body)
            answered += 1
        elif kind == ofp13.OFPT_MULTIPART_REQUEST:
            port = struct.pack("!I4x6s2x16sIIIIIIII", 1, b"\x02\x00\x00\x00\x00\x01", b"s1-eth1", 0, 0, 0, 0, 0, 0, 0, 0)
            body = struct.pack("!HH4x", ofp13.OFPMP_PORT_DESC, 0) + port
            writer.write(struct.pack("!BBHI", 4, ofp13.OFPT_MULTIPART_REPLY, 8 + len(body), xid) + body)
            answered += 1
    await writer.drain()


async def test_a_server_started_before_its_controller_shakes_hands_and_hands_the_switch_over_on_attach():
    """`vtap serve` listens while its store loads: a switch's hello is answered at once
    (it would give up on a silent controller), and the switch reaches the controller
    only once it is attached, with its features and ports."""
    from vtap.openflow.channel import OpenFlowServer

    rec = _Recorder()
    server = OpenFlowServer(None, "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.wait_for(_play_switch_handshake(reader, writer, dpid=0x2A), 5)
        await asyncio.sleep(0.05)
        assert rec.events == []  # nobody to tell yet
        connected = []
        rec.switch_connected = lambda dp: connected.append((dp.dpid, sorted(dp.ports)))
        server.attach(rec)
        for _ in range(100):
            if connected:
                break
            await asyncio.sleep(0.01)
        assert connected == [(0x2A, [1])]
        writer.close()
    finally:
        await server.stop()


async def test_a_large_batch_is_made_and_written_with_the_loop_given_back_between_slices():
    """12,500 flows built and written in one go held the loop ~0.4 s while the switch's
    echo waited: the batch is serialized and written `SEND_SLICE` messages at a time (one
    write each), each message wrapped (as in a bundle) only when it is written, and all
    of it goes out in order."""
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from vtap.openflow import channel
    from vtap.openflow.channel import _Batch
    from vtap.openflow.translate import PROTOCOL

    from tests.unit.loop import LoopTurns

    class Writer:
        def __init__(self):
            self.data = []

        def get_extra_info(self, name):
            return None

        def write(self, data):
            self.data.append(bytes(data))

        async def drain(self):
            pass  # a socket that takes everything at once: a drain that never yields

    writer = Writer()
    dp = Datapath(asyncio.StreamReader(), writer, None)
    n = 3 * channel.SEND_SLICE + 1
    msgs = [parser.OFPEchoRequest(PROTOCOL, data=b"%d" % i) for i in range(n)]
    async with LoopTurns() as turns:
        before = turns.count
        await dp._send_all(_Batch(), msgs)
    assert turns.count - before >= 3  # one turn after each full slice, at least
    assert len(writer.data) == 4  # one write a slice, not one a message
    wire, sent = b"".join(writer.data), []
    while wire:
        length = struct.unpack("!H", wire[2:4])[0]
        sent.append(wire[8:length])
        wire = wire[length:]
    assert sent == [b"%d" % i for i in range(n)]


def test_a_sent_message_is_named_from_its_bytes_as_from_itself():
    """A batch keeps each message's bytes until its barrier, not os-ken's objects; an
    error from the switch names the request from them, as it would from the message."""
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from vtap.model.rules import Bucket, FlowRule, GroupAction, GroupRule, Meter, Output
    from vtap.openflow import translate
    from vtap.openflow.describe import describe, describe_bytes
    from vtap.openflow.translate import PROTOCOL

    flow = FlowRule(1, 3000, (("eth_type", 0x0800), ("ipv4_src", "10.0.0.1"), ("ip_proto", 17), ("udp_dst", 7000)),
                    (GroupAction(0x7000_0001),), 2, 0x5654_0000_0000_0001)
    group = GroupRule(0x7000_0001, "all", (Bucket((Output(3),)),))
    msgs = [translate.flow_add(flow), translate.flow_modify(flow), translate.flow_delete(flow), translate.group_add(group),
            translate.group_delete(group.group_id), translate.meter_add(Meter(7, 1000, 100)), parser.OFPBarrierRequest(PROTOCOL)]
    for i, m in enumerate(msgs):
        wrapped = parser.ONFBundleAddMsg(PROTOCOL, 9, 3, m, [])
        wrapped.set_xid(i + 1)
        wrapped.serialize()
        m.serialize()
        assert describe_bytes(bytes(m.buf)) == describe(m) or isinstance(m, parser.OFPBarrierRequest)
        assert describe_bytes(bytes(wrapped.buf)) == describe(wrapped) or isinstance(m, parser.OFPBarrierRequest)
    assert "ipv4_src" in describe_bytes(bytes(msgs[0].buf)) and "group_id=1879048193" in describe_bytes(bytes(msgs[3].buf))
    assert describe_bytes(bytes(msgs[-1].buf)) == f"message type {msgs[-1].msg_type}"


async def test_a_batch_is_made_as_it_is_sent_and_keeps_only_bytes():
    """A generator of messages is drawn a slice at a time: a message is let go once
    written, its bytes kept to name an error."""
    import weakref

    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from vtap.openflow import channel
    from vtap.openflow.channel import _Batch
    from vtap.openflow.translate import PROTOCOL

    class Writer:
        def get_extra_info(self, name):
            return None

        def write(self, data):
            pass

        async def drain(self):
            pass

    dp = Datapath(asyncio.StreamReader(), Writer(), None)
    alive, made = [], []

    def messages():
        for i in range(3 * channel.SEND_SLICE):
            m = parser.OFPEchoRequest(PROTOCOL, data=b"%d" % i)
            made.append(weakref.ref(m))
            alive.append(sum(r() is not None for r in made))
            yield m

    batch = _Batch()
    await dp._send_all(batch, messages())
    assert len(batch.sent) == 3 * channel.SEND_SLICE and all(type(v) is bytes for v in batch.sent.values())
    assert max(alive) <= 2  # the one being made, and at most the one before it


class KeepingWriter:
    """A socket's writer that takes everything at once and keeps what was written."""

    def __init__(self):
        self.data = b""

    def get_extra_info(self, name):
        return None

    def write(self, data):
        self.data += data

    async def drain(self):
        pass


async def test_a_bundles_adds_are_the_bytes_os_ken_writes():
    """The channel writes each bundle add's head itself (os-ken's ONFBundleAddMsg took a
    third of a bulk change's sending): the same bytes, the message's xid the add's."""
    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from vtap.model.rules import Bucket, FlowRule, GroupAction, GroupRule, Output
    from vtap.openflow import translate
    from vtap.openflow.channel import _Batch
    from vtap.openflow.translate import PROTOCOL

    flow = FlowRule(1, 3000, (("eth_type", 0x0800), ("ipv4_src", "10.0.0.1")), (GroupAction(0x7000_0001),), 2, 0x5654_0000_0000_0001)
    group = GroupRule(0x7000_0001, "all", (Bucket((Output(3),)),))
    made = [translate.group_add, translate.flow_add, translate.flow_modify, translate.flow_delete]
    writer = KeepingWriter()
    dp = Datapath(asyncio.StreamReader(), writer, None)
    batch = _Batch()
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    await dp._send_all(batch, [make(group if i == 0 else flow) for i, make in enumerate(made)], (77, flags))
    expected = b""
    for (xid, data), (i, make) in zip(batch.sent.items(), enumerate(made)):
        add = parser.ONFBundleAddMsg(PROTOCOL, 77, flags, make(group if i == 0 else flow), [])
        add.set_xid(xid)
        add.serialize()
        assert data == bytes(add.buf)
        expected += data
    assert writer.data == expected and len(batch.sent) == 4


async def test_a_bundle_whose_messages_fail_to_be_made_is_discarded_not_committed():
    """The generator of a batch raises half-way: the open bundle is discarded at once (not
    left to the switch's bundle timeout), nothing is committed, and the error goes on."""
    from os_ken.ofproto import ofproto_v1_3 as ofp

    from vtap.model.rules import FlowRule, Output
    from vtap.openflow import channel, translate

    writer = KeepingWriter()
    dp = Datapath(asyncio.StreamReader(), writer, None)
    asked = []

    async def request(msg, timeout=None, *, raw=False):
        asked.append(msg.type)
        return []

    dp.request = request

    def flows():  # a slice written, the next one cut short
        for port in range(1, channel.SEND_SLICE + 2):
            yield translate.flow_add(FlowRule(0, 10, (("in_port", port),), (Output(3),)))
        raise ValueError("a rule vtap cannot write")

    with pytest.raises(ValueError):
        await dp.send_batch(flows())
    assert asked == [ofp.ONF_BCT_OPEN_REQUEST]
    wire, sent = writer.data, []
    while wire:  # (experimenter type, bundle id, and a control's type) of each message
        length = struct.unpack("!H", wire[2:4])[0]
        exp_type, bundle_id, kind = struct.unpack_from("!4xIIH", wire, 8)
        sent.append((exp_type, bundle_id, kind if exp_type == ofp.ONF_ET_BUNDLE_CONTROL else None))
        wire = wire[length:]
    bundle = sent[0][1]
    assert sent == [(ofp.ONF_ET_BUNDLE_ADD_MESSAGE, bundle, None)] * channel.SEND_SLICE + [
        (ofp.ONF_ET_BUNDLE_CONTROL, bundle, ofp.ONF_BCT_DISCARD_REQUEST)]
