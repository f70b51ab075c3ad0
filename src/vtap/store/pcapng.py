"""A pcapng writer (the capture format Wireshark and tshark read), for capture jobs.

One section per capture job, its header carrying the job's match as a comment; one
interface per switch the packets were taken at (named by dpid), added when its first
packet arrives; one enhanced packet block per packet, with the original length (a
packet cut to the job's snaplen says how long it was) and the ingress port as a
comment. Timestamps in microseconds (the format's default resolution).

Only what vtap writes is here: little-endian, Ethernet link type, no compression.
Block layouts from the pcapng specification (IETF draft-ietf-opsawg-pcapng).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

SHB_TYPE = 0x0A0D0D0A
IDB_TYPE = 0x00000001
EPB_TYPE = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1
OPT_END = 0
OPT_COMMENT = 1
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _options(options: list[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    out = b"".join(struct.pack("<HH", code, len(value)) + _pad(value) for code, value in options)
    return out + struct.pack("<HH", OPT_END, 0)


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


class PcapngWriter:
    """Writes one section to `out`; `packet` adds the interface of a switch on first use."""

    def __init__(self, out: BinaryIO, *, comment: str, application: str = "vtap", snaplen: int = 0):
        self.out = out
        self.snaplen = snaplen
        self.interfaces: dict[int, int] = {}  # dpid -> interface id in this section
        header = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)  # section length unknown
        opts = [(OPT_COMMENT, comment.encode()), (SHB_USERAPPL, application.encode())]
        self.out.write(_block(SHB_TYPE, header + _options(opts)))

    def _interface(self, dpid: int) -> int:
        if dpid not in self.interfaces:
            self.interfaces[dpid] = len(self.interfaces)
            opts = [(IF_NAME, f"{dpid:016x}".encode()), (IF_DESCRIPTION, f"switch {dpid:016x} (at the tap point)".encode())]
            body = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, self.snaplen) + _options(opts)
            self.out.write(_block(IDB_TYPE, body))
        return self.interfaces[dpid]

    def packet(self, dpid: int, timestamp: float, data: bytes, original_length: int, comment: str = "") -> None:
        """One packet as taken at switch `dpid` (`data` possibly cut short of `original_length`)."""
        iface = self._interface(dpid)
        micros = int(round(timestamp * 1_000_000))
        head = struct.pack("<IIIII", iface, micros >> 32, micros & 0xFFFFFFFF, len(data), max(original_length, len(data)))
        opts = [(OPT_COMMENT, comment.encode())] if comment else []
        self.out.write(_block(EPB_TYPE, head + _pad(data) + _options(opts)))
        self.out.flush()


def read_packets(data: bytes) -> list[tuple[float, bytes, int]]:
    """(timestamp, captured bytes, original length) of every packet in what PcapngWriter
    wrote (little-endian, microseconds); a block still being written at the end is left out."""
    out = []
    at = 0
    while at + 12 <= len(data):
        block_type, length = struct.unpack_from("<II", data, at)
        if length < 12 or at + length > len(data):
            break
        if block_type == EPB_TYPE:
            _, high, low, caplen, origlen = struct.unpack_from("<IIIII", data, at + 8)
            out.append((((high << 32) | low) / 1_000_000, data[at + 28: at + 28 + caplen], origlen))
        at += length
    return out
