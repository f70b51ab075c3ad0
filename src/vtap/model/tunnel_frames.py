"""Tunnelled copies read back: an outer packet as a collector's interface sees it — GRE
(key), ERSPAN type II and III (session id), VXLAN and Geneve (VNI) over IPv4 — into
(kind, key, inner frame). Pure; the lab's collectors and `vtap sensor` use it.
"""

from __future__ import annotations

import struct

VXLAN_PORT = 4789
GENEVE_PORT = 6081
GRE_PROTO = 47
ETH_BRIDGED = 0x6558
ERSPAN_II = 0x88BE
ERSPAN_III = 0x22EB


def decap(frame: bytes) -> tuple[str, int, bytes] | None:
    """(kind, key, inner frame) of a tunnelled copy, or None for anything else."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    l4 = frame[14 + ihl :]
    if proto == GRE_PROTO:
        return _gre(l4)
    if proto == 17 and len(l4) >= 8:
        dport = struct.unpack("!H", l4[2:4])[0]
        payload = l4[8:]
        if dport == VXLAN_PORT and len(payload) >= 8:
            return "vxlan", int.from_bytes(payload[4:7], "big"), payload[8:]
        if dport == GENEVE_PORT and len(payload) >= 8:
            options = (payload[0] & 0x3F) * 4
            return "geneve", int.from_bytes(payload[4:7], "big"), payload[8 + options :]
    return None


def _gre(gre: bytes) -> tuple[str, int, bytes] | None:
    if len(gre) < 4:
        return None
    flags, ptype = struct.unpack("!HH", gre[:4])
    offset = 4
    key = None
    if flags & 0x8000:  # checksum present
        offset += 4
    if flags & 0x2000:  # key present
        key = struct.unpack("!I", gre[offset : offset + 4])[0]
        offset += 4
    if flags & 0x1000:  # sequence number present
        offset += 4
    body = gre[offset:]
    if ptype == ETH_BRIDGED:
        return "gre", key or 0, body
    if ptype == ERSPAN_II and len(body) >= 8:
        return "erspan1", struct.unpack("!H", body[2:4])[0] & 0x3FF, body[8:]
    if ptype == ERSPAN_III and len(body) >= 12:
        sub = 8 if body[11] & 0x01 else 0  # the O flag: a platform-specific subheader follows
        return "erspan2", struct.unpack("!H", body[2:4])[0] & 0x3FF, body[12 + sub :]
    return None
