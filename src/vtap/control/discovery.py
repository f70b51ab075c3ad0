"""Link discovery with authenticated LLDP: frames sent out of switch ports, links learned
where they arrive, and only from frames the controller itself sent.

Frames from hosts are data, never control: a host that could make the controller
believe in a link could detach a monitor, escape its TAP or pull traffic into itself.
So every LLDP frame carries, in an organisationally specific TLV, a nonce of the
current discovery round and a keyed MAC (HMAC-SHA256, the key kept in the store) over
chassis, port and nonce. A frame without a valid proof is forged; one with the proof
of an older round is replayed; both are dropped and counted, and make no link.

A link (one direction) lives while its LLDP frames keep arriving; it is dropped when
they stop for `lifetime` seconds or at once when either port goes down.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from dataclasses import dataclass, field

from vtap.compile.pipeline import ETH_TYPE_LLDP
from vtap.model.network import Link

LLDP_MAC_NEAREST_BRIDGE = bytes.fromhex("0180c200000e")
LLDP_TYPE = ETH_TYPE_LLDP.to_bytes(2, "big")
TLV_END, TLV_CHASSIS_ID, TLV_PORT_ID, TLV_TTL, TLV_ORG_SPECIFIC = 0, 1, 2, 3, 127
CHASSIS_SUB_LOCAL = 7  # chassis id subtype: locally assigned
PORT_SUB_COMPONENT = 2  # port id subtype: port component
TTL_S = 120
CHASSIS_PREFIX = b"dpid:"
PROOF_OUI = b"\x00\x76\x74"  # "vt" in an organisationally specific TLV
PROOF_SUBTYPE = 1
NONCE_BYTES = 8
TAG_BYTES = 16
HOLD_MAX = 4  # rounds a nonce is kept while no frame of it has been read (see LldpRounds)
ROUNDS_MISSED = 3  # rounds a link must have missed, besides its lifetime, to expire (see LinkTable)
ROUNDS_REMEMBERED = 32  # older rounds' nonces, to tell a replay from a forgery
TRANSIT_SAMPLES = 32  # a link's last transit times kept (its least is reported)


def _tag(key: bytes, chassis: bytes, port_id: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, b"\0".join((chassis, port_id, nonce)), hashlib.sha256).digest()[:TAG_BYTES]


def lldp_frame(dpid: int, port_no: int, hw_addr: str, key: bytes, nonce: bytes) -> bytes:
    """An LLDP frame naming the sending switch (chassis id) and port (port id), with the
    proof that this controller sent it in the round of `nonce`."""
    chassis, port_id = CHASSIS_PREFIX + b"%016x" % dpid, b"%d" % port_no
    proof = PROOF_OUI + bytes((PROOF_SUBTYPE,)) + nonce + _tag(key, chassis, port_id, nonce)
    return b"".join((
        LLDP_MAC_NEAREST_BRIDGE, bytes.fromhex(hw_addr.replace(":", "")), LLDP_TYPE,
        _tlv(TLV_CHASSIS_ID, bytes((CHASSIS_SUB_LOCAL,)) + chassis),
        _tlv(TLV_PORT_ID, bytes((PORT_SUB_COMPONENT,)) + port_id),
        _tlv(TLV_TTL, TTL_S.to_bytes(2, "big")),
        _tlv(TLV_ORG_SPECIFIC, proof),
        _tlv(TLV_END, b""),
    ))


def _tlv(kind: int, value: bytes) -> bytes:
    """One LLDP TLV: 7 bits of type, 9 of length (IEEE 802.1AB 8.4)."""
    return ((kind << 9) | len(value)).to_bytes(2, "big") + value


@dataclass(frozen=True)
class LldpClaim:
    """What an LLDP frame in vtap's format says: who sent it, and its proof (maybe none)."""

    dpid: int
    port: int
    chassis: bytes
    port_id: bytes
    nonce: bytes = b""
    tag: bytes = b""


def _tlvs(data: bytes, at: int) -> list[tuple[int, bytes]] | None:
    """The TLVs from `at` to the End TLV, or None where one runs past the frame or no
    End TLV ends them."""
    out = []
    while at + 2 <= len(data):
        head = int.from_bytes(data[at:at + 2], "big")
        kind, length = head >> 9, head & 0x1FF
        at += 2
        if kind == TLV_END:
            return out
        if at + length > len(data):
            return None
        out.append((kind, data[at:at + length]))
        at += length
    return None


def is_lldp(data: bytes) -> bool:
    """Whether a frame is untagged Ethernet of type LLDP."""
    return data[12:14] == LLDP_TYPE


def parse_lldp(data: bytes) -> LldpClaim | None:
    """The claim of a frame in vtap's LLDP format (proven or not); None for any other frame.

    Read with struct offsets, not a packet library: LLDP is most of what a quiet
    network sends up (every link, every round), and os-ken's packet objects (every
    layer built, addresses turned to text) made it a large part of an idle
    controller's work: on fattree,8 with no policy, 18.5% of a CPU read that way,
    11.2% this way. The frame must be untagged Ethernet of type LLDP, its TLVs a
    chassis id in vtap's form, a port id and a time to live (802.1AB's mandatory
    three, in that order), then any, up to an End TLV."""
    if not is_lldp(data):
        return None
    tlvs = _tlvs(data, 14)
    if (tlvs is None or len(tlvs) < 3 or tlvs[0][0] != TLV_CHASSIS_ID or tlvs[1][0] != TLV_PORT_ID
            or tlvs[2][0] != TLV_TTL or len(tlvs[2][1]) != 2):
        return None
    chassis, port_id = tlvs[0][1][1:], tlvs[1][1][1:]  # after each one's subtype byte
    if len(tlvs[0][1]) < 2 or len(tlvs[1][1]) < 2 or not chassis.startswith(CHASSIS_PREFIX):
        return None
    try:
        dpid, port = int(chassis[len(CHASSIS_PREFIX):], 16), int(port_id)
    except ValueError:
        return None
    for kind, value in tlvs[3:]:
        if kind == TLV_ORG_SPECIFIC and value[:3] == PROOF_OUI and value[3:4] == bytes((PROOF_SUBTYPE,)):
            info = value[4:]
            if len(info) == NONCE_BYTES + TAG_BYTES:
                return LldpClaim(dpid, port, chassis, port_id, info[:NONCE_BYTES], info[NONCE_BYTES:])
    return LldpClaim(dpid, port, chassis, port_id)


@dataclass
class LldpRounds:
    """The key and the round nonces: a frame is believed when its proof is valid for the
    current round or the one before (frames in flight while the round turns).

    A round turns only once half the frames it expects (one per link known when it was
    sent; one, when none is known) have been read, or after `HOLD_MAX` rounds without.
    A controller whose loop lags behind what the switches send (a second of packet-ins
    waiting unread in its connections, at 100,000 policies, or traced) reads its frames
    rounds after it sent them; turning by the clock alone, it refused every one of them
    as replayed, lost every link and never settled. Turning on the first frame read was
    not enough: a few frames read early (a switch just connected, a quiet connection)
    turned rounds while the bulk still waited. Turned only when half are in, what is
    still unread is of this round or the last, both believed. Held, the nonce lives at
    most HOLD_MAX + 2 rounds where nothing comes back (a network with no links, or a
    link gone), as long as before wherever frames are read."""

    key: bytes
    nonces: deque = field(default_factory=lambda: deque(maxlen=ROUNDS_REMEMBERED))
    expected: int = 1  # frames of the current round that make it answered
    read: int = 0  # frames of the current round read
    held: int = 0  # rounds the current nonce was kept, unanswered

    @property
    def answered(self) -> bool:
        return self.read >= self.expected

    def new_round(self, nonce: bytes, links: int = 0) -> bool:
        """Turn to a new round with `nonce`, unless the current one is held (above);
        whether it turned. `links`: how many are known (what the round expects back)."""
        if self.nonces and not self.answered and self.held < HOLD_MAX:
            self.held += 1
            return False
        self.nonces.appendleft(nonce)
        self.expected, self.read, self.held = max(1, (links + 1) // 2), 0, 0
        return True

    @property
    def nonce(self) -> bytes:
        return self.nonces[0]

    def judge(self, claim: LldpClaim) -> str | None:
        """None when the frame is this controller's, of a live round; else why not:
        `forged` (no or bad proof) or `replayed` (a valid proof of an older round)."""
        if not claim.nonce or not hmac.compare_digest(claim.tag, _tag(self.key, claim.chassis, claim.port_id, claim.nonce)):
            return "forged"
        if claim.nonce not in list(self.nonces)[:2]:
            return "replayed"
        if claim.nonce == self.nonces[0]:
            self.read += 1
        return None


@dataclass
class LinkTable:
    """Links with the time their last LLDP frame arrived, and the ports that face a switch.

    A port that has received LLDP from a vtap switch keeps facing a switch until it goes
    down, even when the switch behind it disconnects or its links expire: a switch in
    fail-secure mode goes on forwarding, and its frames must not be taken for hosts.

    A link expires when it has been silent for `lifetime` seconds *and* `ROUNDS_MISSED`
    discovery rounds have turned since (`turned`). Rounds turn only once their frames
    are read (LldpRounds): a controller whose loop lags (a compile holding the
    interpreter, or tracing) reads its frames late, and by the clock alone it expired
    links it had not yet had the time to read, recompiled, lagged more, and never settled.
    """

    lifetime: float
    last_seen: dict[Link, float] = field(default_factory=dict)
    switch_ports: set[tuple[int, int]] = field(default_factory=set)
    round: int = 0  # discovery rounds turned
    seen_round: dict[Link, int] = field(default_factory=dict)  # the round of each link's last arrival

    def turned(self) -> None:
        """A discovery round turned (a new nonce)."""
        self.round += 1

    def seen(self, link: Link, now: float) -> bool:
        """Record an LLDP arrival; True when the link is new."""
        new = link not in self.last_seen
        # A port can have one peer: an arrival from elsewhere replaces the old link.
        if new:
            self._forget([l for l in self.last_seen if (l.dst_dpid, l.dst_port) == (link.dst_dpid, link.dst_port)])
        self.last_seen[link] = now
        self.seen_round[link] = self.round
        self.switch_ports.add((link.dst_dpid, link.dst_port))
        self.switch_ports.add((link.src_dpid, link.src_port))
        return new

    def remember(self, link: Link, until: float) -> None:
        """A link a previous run proved, taken as seen until `until`: kept only if LLDP
        proves it again before it expires (a restart need not wait for discovery)."""
        self.last_seen.setdefault(link, until)
        self.seen_round.setdefault(link, self.round)
        self.switch_ports.add((link.dst_dpid, link.dst_port))
        self.switch_ports.add((link.src_dpid, link.src_port))

    def replace(self, links, until: float) -> None:
        """Take the links another instance proved (a cluster's leader publishes them) as
        the whole set, seen until `until`: a follower keeps them as they are published;
        a new leader gives them until LLDP has had time to prove them again."""
        self.last_seen = {link: until for link in links}
        self.seen_round = dict.fromkeys(links, self.round)
        self.switch_ports = {end for l in links for end in ((l.src_dpid, l.src_port), (l.dst_dpid, l.dst_port))}

    def expire(self, now: float) -> list[Link]:
        gone = [l for l, t in self.last_seen.items()
                if now - t > self.lifetime and self.round - self.seen_round.get(l, self.round) >= ROUNDS_MISSED]
        self._forget(gone)
        return gone

    def _forget(self, links: list[Link]) -> None:
        for link in links:
            del self.last_seen[link]
            self.seen_round.pop(link, None)

    def drop_port(self, dpid: int, port_no: int) -> list[Link]:
        """Forget every link with an end at this port (port down or deleted)."""
        self.switch_ports.discard((dpid, port_no))
        gone = [
            l for l in self.last_seen if (l.src_dpid, l.src_port) == (dpid, port_no) or (l.dst_dpid, l.dst_port) == (dpid, port_no)
        ]
        self._forget(gone)
        return gone

    def drop_switch(self, dpid: int) -> list[Link]:
        gone = [l for l in self.last_seen if dpid in (l.src_dpid, l.dst_dpid)]
        self._forget(gone)
        return gone

    def links(self) -> frozenset[Link]:
        return frozenset(self.last_seen)


@dataclass
class LinkTransit:
    """How long vtap's LLDP frames take over each link: from the packet-out at one end
    to the packet-in at the other (two OpenFlow messages, two datapath passes and the
    wire between), the last time and the least of the last `TRANSIT_SAMPLES`.

    A slow or congested path shows here. It is also what a relay between two hosts
    would add to (README, threat model, for what it can and cannot tell). A frame is
    timed against the last one sent out of its port in the same round; a frame of an
    earlier send arriving after a later one reads short, which the least keeps."""

    sent: dict[tuple[int, int], tuple[bytes, float]] = field(default_factory=dict)
    samples: dict[Link, deque] = field(default_factory=dict)

    def sending(self, dpid: int, port: int, nonce: bytes, now: float) -> None:
        self.sent[(dpid, port)] = (nonce, now)

    def arrived(self, link: Link, nonce: bytes, now: float) -> None:
        sent = self.sent.get((link.src_dpid, link.src_port))
        if sent is not None and sent[0] == nonce:
            self.samples.setdefault(link, deque(maxlen=TRANSIT_SAMPLES)).append(now - sent[1])

    def of(self, link: Link) -> tuple[float, float] | None:
        """(last, least) in seconds, or None before the first sample."""
        times = self.samples.get(link)
        return (times[-1], min(times)) if times else None

    def keep(self, links: frozenset[Link]) -> None:
        """Forget the samples of links that are gone."""
        for link in self.samples.keys() - links:
            del self.samples[link]
