"""The OpenFlow 1.3 channel on asyncio: one `Datapath` per switch connection.

Framing, version negotiation, the FEATURES/PORT_DESC handshake, ECHO both ways with a
liveness timeout, requests matched to replies by xid (multipart replies joined), and
atomic batches (ONF bundle extension) closed by a barrier.  A connection that sends
bytes that do not parse, lies in a length field or stalls mid-message is closed with a
log line; nothing it does reaches another connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import collections
import itertools
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vtap.model.network import Device, Port, normalize_mac
from vtap.openflow.describe import describe, describe_bytes, describe_error
from vtap.openflow.translate import OFP_HEADER, PROTOCOL, bundle_add

log = logging.getLogger(__name__)

OFPT_HELLO = 0
OFPT_ERROR = 1
OFPHET_VERSIONBITMAP = 1
# Messages sent outside a batch whose description an error may still need. A batch's
# messages are kept by the batch itself until its barrier (an error comes before it):
# 65,536 descriptions per switch kept for good cost some 20 MiB per busy switch.
MAX_SENT_REMEMBERED = 1024
SEND_SLICE = 512  # messages of a batch made (by a generator), serialized and written between two turns of the loop (~20 ms)


class ProtocolError(Exception):
    """The peer broke the protocol; its connection is closed."""


class OpenFlowError(Exception):
    """A switch answered a request with an OFPT_ERROR."""

    def __init__(self, msg: Any, request: str):
        self.msg = msg
        self.request = request
        super().__init__(f"{describe_error(msg)} in reply to {request}")


class ChannelClosed(Exception):
    """The connection closed while a request was waiting for its reply."""


class SwitchHandler(Protocol):
    """What the controller implements to hear from switches."""

    def switch_connected(self, dp: Datapath) -> None: ...
    def switch_disconnected(self, dp: Datapath) -> None: ...
    def packet_in(self, dp: Datapath, msg: Any) -> None: ...
    def port_status(self, dp: Datapath, msg: Any) -> None: ...


@dataclass
class _Pending:
    future: asyncio.Future
    parts: list
    summary: str
    raw: bool = False  # its multipart reply's parts are kept as bytes (`RawPart`), not parsed


@dataclass
class RawPart:
    """A part of a multipart reply left unparsed: the entries after its header."""

    xid: int
    more: bool
    body: bytes


MULTIPART_HEADER = struct.Struct("!HH4x")  # type, flags, pad: after the OpenFlow header
# An ofp_flow_stats entry up to its counters: length, table_id, (pad, durations, priority,
# timeouts, flags, pad), cookie, packet_count, byte_count; its match and instructions follow.
FLOW_STATS_HEAD = struct.Struct("!HBx4x4x2x2x2x2x4xQQQ")


def flow_counter_entries(body: bytes) -> list[tuple[int, int, int, int]]:
    """(table, cookie, packets, bytes) of each ofp_flow_stats entry in a multipart body,
    stepping over matches and instructions by the entries' lengths."""
    out, pos = [], 0
    while pos < len(body):
        if len(body) - pos < FLOW_STATS_HEAD.size:
            raise ProtocolError(f"a flow stats entry cut short at byte {pos} of {len(body)}")
        length, table, cookie, packets, bytes_ = FLOW_STATS_HEAD.unpack_from(body, pos)
        if length < FLOW_STATS_HEAD.size:
            raise ProtocolError(f"a flow stats entry of length {length} at byte {pos}")
        out.append((table, cookie, packets, bytes_))
        pos += length
    return out


@dataclass
class _Batch:
    """Mods sent without a reply of their own: errors for their xids are collected here,
    and named from the messages' bytes, kept until the batch's barrier."""

    sent: dict[int, bytes] = field(default_factory=dict)  # xid -> the message's bytes (describe.py says why)
    errors: list[OpenFlowError] = field(default_factory=list)


def echo_request() -> Any:
    """An ECHO_REQUEST: what the keepalive sends, and how a claimed datapath is asked whether it is alive."""
    return parser.OFPEchoRequest(PROTOCOL, data=b"vtap")


def port_from_of(p: Any) -> Port:
    down = bool(p.state & ofp.OFPPS_LINK_DOWN) or bool(p.config & ofp.OFPPC_PORT_DOWN)
    name = p.name.decode(errors="replace") if isinstance(p.name, bytes) else str(p.name)
    return Port(port_no=p.port_no, name=name.rstrip("\x00"), hw_addr=normalize_mac(p.hw_addr), up=not down)


def hello_bytes() -> bytes:
    """HELLO for OpenFlow 1.3 only, with a version bitmap element (bit 4 set)."""
    element = struct.pack("!HHI", OFPHET_VERSIONBITMAP, 8, 1 << ofp.OFP_VERSION)
    return OFP_HEADER.pack(ofp.OFP_VERSION, OFPT_HELLO, 8 + len(element), 0) + element


def hello_accepts_13(version: int, body: bytes) -> bool:
    """Whether a peer's HELLO admits OpenFlow 1.3 (OF 1.3.5 section 6.3.1).

    With a version bitmap, 1.3 must be in it; without one, the peer's highest
    version must be at least 1.3 (it then speaks ours).
    """
    offset = 0
    while offset + 4 <= len(body):
        etype, elen = struct.unpack_from("!HH", body, offset)
        if elen < 4 or offset + elen > len(body):
            raise ProtocolError(f"HELLO element length {elen} is invalid")
        if etype == OFPHET_VERSIONBITMAP:
            words = body[offset + 4 : offset + elen]
            bitmaps = struct.unpack(f"!{len(words) // 4}I", words[: len(words) // 4 * 4])
            return bool(bitmaps) and bool(bitmaps[0] & (1 << ofp.OFP_VERSION))
        offset += (elen + 7) // 8 * 8
    return version >= ofp.OFP_VERSION


class Datapath:
    """One switch connection. Created by `OpenFlowServer` for every accepted socket."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: SwitchHandler | None,
        *,
        handler_later: asyncio.Future | None = None,
        echo_interval: float = 5.0,
        echo_timeout: float = 15.0,
        message_timeout: float = 5.0,
        request_timeout: float = 30.0,
    ):
        self.reader = reader
        self.writer = writer
        self.handler = handler  # None: `handler_later` gives it once the handshake is over
        self._handler_later = handler_later
        self.echo_interval = echo_interval
        self.echo_timeout = echo_timeout
        self.message_timeout = message_timeout
        self.request_timeout = request_timeout
        self.peer = writer.get_extra_info("peername")
        # Over TLS: the SHA-256 fingerprint of the switch's certificate (pinned per dpid by
        # the controller); None over plain TCP.
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        self.certificate: str | None = hashlib.sha256(der).hexdigest() if der else None
        self.dpid: int | None = None
        self.n_tables = 0
        self.ports: dict[int, Port] = {}
        self.connected_since = 0.0
        self.closed = asyncio.Event()
        self._xids = itertools.count(1)
        self._bundle_ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._batches: list[_Batch] = []
        self._sent: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._last_rx = time.monotonic()
        self._ready = False

    def device(self) -> Device:
        """The switch as a value, for the controller's core."""
        return Device(dpid=self.dpid, ports=tuple(sorted(self.ports.values(), key=lambda p: p.port_no)),
                      connected_since=self.connected_since, n_tables=self.n_tables)

    def __repr__(self) -> str:
        return f"<Datapath {self.dpid:016x}>" if self.dpid is not None else f"<Datapath {self.peer}>"

    # ---- sending -----------------------------------------------------------------

    def _next_xid(self) -> int:
        xid = next(self._xids) & 0xFFFFFFFF
        return xid or next(self._xids)

    def _pack(self, msg: Any) -> tuple[int, bytes]:
        """The message given the next xid, and its bytes."""
        xid = self._next_xid()
        msg.set_xid(xid)
        msg.serialize()
        return xid, bytes(msg.buf)

    def send(self, msg: Any, *, remember: bool = True) -> int:
        """Serialize and queue a message; returns its xid. With `remember`, its
        description is kept a while, to name the request an error answers."""
        if self.closed.is_set():
            raise ChannelClosed(f"{self!r} is closed")
        xid, data = self._pack(msg)
        self.writer.write(data)
        if remember:
            self._sent[xid] = describe(msg)
            if len(self._sent) > MAX_SENT_REMEMBERED:
                self._sent.popitem(last=False)
        return xid

    async def request(self, msg: Any, timeout: float | None = None, *, raw: bool = False) -> list[Any]:
        """Send a request and wait for its reply (all parts of a multipart reply; with
        `raw`, those parts as `RawPart`s)."""
        future = asyncio.get_running_loop().create_future()
        xid = self.send(msg)
        self._pending[xid] = _Pending(future, [], describe(msg), raw)
        try:
            await self.writer.drain()
            return await asyncio.wait_for(future, timeout or self.request_timeout)
        finally:
            self._pending.pop(xid, None)

    async def barrier(self) -> None:
        await self.request(parser.OFPBarrierRequest(PROTOCOL))

    async def multipart(self, req: Any) -> list[Any]:
        """A multipart request's entries, from every part of the reply (the one shape of
        every stats read: a switch splits a long reply into messages of 64 KiB)."""
        return [s for reply in await self.request(req) for s in reply.body]

    async def flow_stats(self, cookie: int = 0, cookie_mask: int = 0) -> list[Any]:
        return await self.multipart(parser.OFPFlowStatsRequest(
            PROTOCOL, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, cookie_mask, parser.OFPMatch()))

    async def flow_stats_raw(self, cookie: int = 0, cookie_mask: int = 0) -> list[bytes]:
        """The bodies of the reply `flow_stats` would parse, left as bytes: os-ken parses
        every match and instruction of every entry (half a second of the loop for the tap
        rules of 10,000 policies), where vtap reads only what it needs of them."""
        parts = await self.request(parser.OFPFlowStatsRequest(
            PROTOCOL, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, cookie_mask, parser.OFPMatch()), raw=True)
        return [part.body for part in parts]

    async def flow_counters(self, cookie: int = 0, cookie_mask: int = 0) -> list[tuple[int, int, int, int]]:
        """(table, cookie, packets, bytes) of the flows `flow_stats` would give."""
        return [entry for body in await self.flow_stats_raw(cookie, cookie_mask) for entry in flow_counter_entries(body)]

    async def group_desc(self) -> list[Any]:
        return await self.multipart(parser.OFPGroupDescStatsRequest(PROTOCOL, 0))

    async def group_stats(self) -> list[Any]:
        """Every group's counters, per bucket (OFPMP_GROUP for all groups)."""
        return await self.multipart(parser.OFPGroupStatsRequest(PROTOCOL, 0, ofp.OFPG_ALL))

    async def role_request(self, role: int, generation_id: int) -> tuple[int, int]:
        """Ask for a controller role (OFPCR_ROLE_MASTER / _SLAVE) under `generation_id`;
        (role, generation) as the switch confirms it. A generation older than one the
        switch has seen is refused (OFPRRFC_STALE): how a stale master is fenced off."""
        reply = (await self.request(parser.OFPRoleRequest(PROTOCOL, role, generation_id)))[0]
        return reply.role, reply.generation_id

    async def meter_stats(self) -> list[Any]:
        """Every meter's counters: per band, the packets and bytes it dropped."""
        return await self.multipart(parser.OFPMeterStatsRequest(PROTOCOL, 0, ofp.OFPM_ALL))

    async def meter_config(self) -> list[Any]:
        return await self.multipart(parser.OFPMeterConfigStatsRequest(PROTOCOL, 0, ofp.OFPM_ALL))

    async def send_batch(self, msgs: Iterable[Any], *, atomic: bool = True) -> None:
        """Apply flow/group mods, then wait for a barrier.

        With `atomic`, the mods go in one ONF bundle (OpenFlow 1.3 extension): the
        switch applies all of them or none, and takes them far faster than one by
        one.  An error from the switch raises OpenFlowError; with a bundle, nothing
        of the batch was applied then. `msgs` may be made as they are sent (a
        generator): only a slice of them is alive at a time.
        """
        msgs = iter(msgs)
        first = list(itertools.islice(msgs, 2))
        if not first:
            return
        msgs = itertools.chain(first, msgs)
        batch = _Batch()
        self._batches.append(batch)
        try:
            if atomic and len(first) > 1:
                bundle_id = next(self._bundle_ids) & 0xFFFFFFFF
                flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
                await self.request(parser.ONFBundleCtrlMsg(PROTOCOL, bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, []))
                try:
                    await self._send_all(batch, msgs, (bundle_id, flags))
                except BaseException:  # (a generator raised, the pass cancelled): discarded now, not at its timeout
                    if not self.closed.is_set():  # its reply, unasked for, let go
                        self.send(parser.ONFBundleCtrlMsg(PROTOCOL, bundle_id, ofp.ONF_BCT_DISCARD_REQUEST, flags, []),
                                  remember=False)
                    raise
                await self.request(parser.ONFBundleCtrlMsg(PROTOCOL, bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, flags, []))
            else:
                await self._send_all(batch, msgs)
            await self.barrier()
        finally:
            self._batches.remove(batch)
        if batch.errors:
            raise batch.errors[0]

    async def _send_all(self, batch: _Batch, msgs: Iterable[Any], bundle: tuple[int, int] | None = None) -> None:
        """Each message (with `bundle`, its id and flags: in that bundle's add, written
        here, not by os-ken's objects, a third of the time) serialized, and written
        `SEND_SLICE` at a time, the loop given back between two slices. One write a
        slice, not one a message: each write to an idle socket is a system call that
        lets any other thread (a compile, the store's writer) take the interpreter lock
        for up to its switch interval, and 12,500 of them held the loop 0.4-0.7 s a
        slice; and a drain alone does not yield while the socket takes the bytes."""
        chunk: list[bytes] = []
        for m in msgs:
            xid, data = self._pack(m)
            if bundle is not None:
                data = bundle_add(xid, *bundle, data)
            batch.sent[xid] = data
            chunk.append(data)
            if len(chunk) == SEND_SLICE:
                self._write_chunk(chunk)
                chunk = []
                await self.writer.drain()
                await asyncio.sleep(0)
        if chunk:
            self._write_chunk(chunk)
        await self.writer.drain()

    def _write_chunk(self, chunk: list[bytes]) -> None:
        if self.closed.is_set():
            raise ChannelClosed(f"{self!r} is closed")
        self.writer.write(b"".join(chunk))

    def packet_out(self, port: int, data: bytes, in_port: int = ofp.OFPP_CONTROLLER) -> None:
        actions = [parser.OFPActionOutput(port, 0)]
        self.send(parser.OFPPacketOut(PROTOCOL, ofp.OFP_NO_BUFFER, in_port, actions, data))

    # ---- receiving ---------------------------------------------------------------

    async def _read_raw(self, *, idle_ok: bool) -> tuple[int, int, int, int, bytes]:
        if idle_ok:
            header = await self.reader.readexactly(OFP_HEADER.size)
        else:
            header = await asyncio.wait_for(self.reader.readexactly(OFP_HEADER.size), self.message_timeout)
        version, msg_type, length, xid = OFP_HEADER.unpack(header)
        if length < OFP_HEADER.size:
            raise ProtocolError(f"length field {length} is shorter than the OpenFlow header")
        try:
            body = await asyncio.wait_for(self.reader.readexactly(length - OFP_HEADER.size), self.message_timeout)
        except asyncio.TimeoutError:
            raise ProtocolError(f"message of {length} bytes did not complete in {self.message_timeout}s") from None
        self._last_rx = time.monotonic()
        return version, msg_type, length, xid, header + body

    async def _read_msg(self, *, idle_ok: bool = True) -> Any:
        version, msg_type, length, xid, buf = await self._read_raw(idle_ok=idle_ok)
        if version != ofp.OFP_VERSION:
            raise ProtocolError(f"message of version {version} after OpenFlow 1.3 was negotiated")
        pending = self._pending.get(xid)
        if pending is not None and pending.raw and msg_type == ofp.OFPT_MULTIPART_REPLY:
            if length < OFP_HEADER.size + MULTIPART_HEADER.size:
                raise ProtocolError(f"a multipart reply of {length} bytes")
            _, flags = MULTIPART_HEADER.unpack_from(buf, OFP_HEADER.size)
            return RawPart(xid, bool(flags & ofp.OFPMPF_REPLY_MORE), buf[OFP_HEADER.size + MULTIPART_HEADER.size:])
        try:
            return ofproto_parser.msg(PROTOCOL, version, msg_type, length, xid, buf)
        except Exception as exc:  # os-ken raises many types on malformed bodies
            raise ProtocolError(f"unparsable message type {msg_type} ({length} bytes): {exc!r}") from None

    async def _handshake(self) -> None:
        self.writer.write(hello_bytes())
        version, msg_type, _length, _xid, buf = await self._read_raw(idle_ok=False)
        if msg_type != OFPT_HELLO:
            raise ProtocolError(f"expected HELLO, got message type {msg_type}")
        if not hello_accepts_13(version, buf[OFP_HEADER.size :]):
            err = parser.OFPErrorMsg(
                PROTOCOL, type_=ofp.OFPET_HELLO_FAILED, code=ofp.OFPHFC_INCOMPATIBLE, data=b"vtap speaks OpenFlow 1.3 only"
            )
            self.send(err)
            await self.writer.drain()
            raise ProtocolError(f"peer offers OpenFlow version {version} without 1.3: HELLO_FAILED sent")
        (reply,) = await self._handshake_request(parser.OFPFeaturesRequest(PROTOCOL))
        self.dpid = reply.datapath_id
        self.n_tables = reply.n_tables
        self.send(parser.OFPSetConfig(PROTOCOL, ofp.OFPC_FRAG_NORMAL, ofp.OFPCML_NO_BUFFER))
        replies = await self._handshake_request(parser.OFPPortDescStatsRequest(PROTOCOL, 0))
        self.ports = {p.port_no: port_from_of(p) for r in replies for p in r.body}
        self.connected_since = time.time()

    async def _handshake_request(self, msg: Any) -> list[Any]:
        """Before the read loop runs: send a request, read and dispatch until it is answered."""
        future = asyncio.get_running_loop().create_future()
        xid = self.send(msg)
        self._pending[xid] = _Pending(future, [], describe(msg))
        try:
            while not future.done():
                self._dispatch(await self._read_msg(idle_ok=False))
            return future.result()
        finally:
            self._pending.pop(xid, None)

    def _described(self, xid: int) -> str:
        """The request of this xid, as `describe` says it (an open batch's, or a recent one)."""
        for batch in self._batches:
            if xid in batch.sent:
                return describe_bytes(batch.sent[xid])
        return self._sent.get(xid, f"unknown request xid={xid}")

    def _dispatch(self, msg: Any) -> None:
        xid = msg.xid
        if isinstance(msg, parser.OFPEchoRequest):
            reply = parser.OFPEchoReply(PROTOCOL, data=msg.data)
            reply.xid = xid
            reply.serialize()
            self.writer.write(bytes(reply.buf))
            return
        if isinstance(msg, parser.OFPErrorMsg):
            pending = self._pending.get(xid)
            request = pending.summary if pending else self._described(xid)
            error = OpenFlowError(msg, request)
            log.warning("%r: %s", self, error)
            if pending and not pending.future.done():
                pending.future.set_exception(error)
            for batch in self._batches:
                if xid in batch.sent:
                    batch.errors.append(error)
            return
        pending = self._pending.get(xid)
        if pending is not None:
            pending.parts.append(msg)
            more = msg.more if isinstance(msg, RawPart) else (
                isinstance(msg, parser.OFPMultipartReply) and msg.flags & ofp.OFPMPF_REPLY_MORE)
            if not more and not pending.future.done():
                pending.future.set_result(pending.parts)
            return
        if not self._ready:
            return
        if isinstance(msg, parser.OFPPacketIn):
            self.handler.packet_in(self, msg)
        elif isinstance(msg, parser.OFPPortStatus):
            port = port_from_of(msg.desc)
            if msg.reason == ofp.OFPPR_DELETE:
                self.ports.pop(port.port_no, None)
            else:
                self.ports[port.port_no] = port
            self.handler.port_status(self, msg)

    async def _keepalive(self) -> None:
        """Send ECHO when the switch has been quiet; drop it when it stays silent."""
        while True:
            await asyncio.sleep(self.echo_interval / 2)
            quiet = time.monotonic() - self._last_rx
            if quiet > self.echo_timeout:
                log.warning("%r: no message for %.1fs (echo timeout), closing", self, quiet)
                self.writer.close()
                return
            if quiet > self.echo_interval:
                self.send(echo_request())

    async def run(self) -> None:
        """Serve this connection until it closes; never raises."""
        keepalive = None
        try:
            await asyncio.wait_for(self._handshake(), self.message_timeout * 2)
            if self.handler is None:
                # A server started before its controller (a restart loading its store):
                # the switch's hello was answered at once (it gives up on a controller
                # that does not answer within its back-off), and it waits here.
                self.handler = await self._handler_later
            self._ready = True
            log.info("%r connected from %s: %d ports, %d tables", self, self.peer, len(self.ports), self.n_tables)
            keepalive = asyncio.create_task(self._keepalive())
            self.handler.switch_connected(self)
            while True:
                self._dispatch(await self._read_msg())
                # Reading from a full buffer does not yield: a switch's long multipart
                # reply (flow stats of 15,000 rules: some 30 messages of 64 KiB, each
                # parsed in ~15 ms) would hold the loop for half a second. One message,
                # then the others' turn.
                await asyncio.sleep(0)
        except asyncio.IncompleteReadError:
            log.info("%r: connection closed by peer", self)
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("%r from %s: handshake timed out, closing", self, self.peer)
        except ProtocolError as exc:
            log.warning("%r from %s: %s; closing", self, self.peer, exc)
        except (ConnectionError, OSError) as exc:
            log.info("%r: connection error: %s", self, exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("%r: unexpected error, closing", self)
        finally:
            self.closed.set()
            if keepalive:
                keepalive.cancel()
            for pending in self._pending.values():
                if not pending.future.done():
                    pending.future.set_exception(ChannelClosed(f"{self!r} closed"))
            self.writer.close()
            if self._ready:
                self.handler.switch_disconnected(self)


class OpenFlowServer:
    """Accepts switch connections and runs a `Datapath` for each."""

    def __init__(self, handler: SwitchHandler | None, host: str = "127.0.0.1", port: int = 6653, *, sock=None,
                 ssl: Any = None, **dp_options: Any):
        self.handler = handler  # None: connections shake hands, then wait for `attach`
        self._handler_later: asyncio.Future | None = None  # resolved by `attach`
        self.ssl = ssl  # an ssl.SSLContext: OpenFlow over TLS; a failed handshake never reaches the controller
        self.host = host
        self.port = port
        self.sock = sock  # an already bound listening socket, if the caller made one
        self.dp_options = dp_options
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        tls = {"ssl": self.ssl, "ssl_handshake_timeout": 5.0} if self.ssl else {}
        if self.sock is not None:
            self._server = await asyncio.start_server(self._accept, sock=self.sock, **tls)
        else:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, **tls)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("OpenFlow 1.3 listening on %s:%d%s", self.host, self.port, " (TLS)" if self.ssl else "")

    def attach(self, handler: SwitchHandler) -> None:
        """The controller, for a server started without one: the switches whose
        handshake is over meanwhile are handed to it."""
        self.handler = handler
        if self._handler_later is not None and not self._handler_later.done():
            self._handler_later.set_result(handler)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.handler is None and self._handler_later is None:
            self._handler_later = asyncio.get_running_loop().create_future()
        dp = Datapath(reader, writer, self.handler, handler_later=self._handler_later, **self.dp_options)
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await dp.run()
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)

    def pause(self) -> None:
        """Accept no switch and read nothing more from any (a stopping controller): a
        packet-in storm then cannot hold up the stop. The switches keep forwarding on
        their rules (fail-secure)."""
        if self._server:
            self._server.close()
        for writer in self._writers:
            if not writer.transport.is_closing():
                writer.transport.pause_reading()

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = [
    "ChannelClosed",
    "Datapath",
    "OpenFlowError",
    "OpenFlowServer",
    "ProtocolError",
    "SwitchHandler",
    "ofproto_common",
]
