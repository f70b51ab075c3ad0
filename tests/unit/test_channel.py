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
