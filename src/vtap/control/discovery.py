"""Link discovery with LLDP: frames sent out of every port, links learned where they arrive.

A link (one direction) lives while its LLDP frames keep arriving; it is dropped when
they stop for `lifetime` seconds or at once when either port goes down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from os_ken.lib.packet import ethernet, lldp, packet

from vtap.compile.pipeline import ETH_TYPE_LLDP
from vtap.model.network import Link

CHASSIS_PREFIX = b"dpid:"


def lldp_frame(dpid: int, port_no: int, hw_addr: str) -> bytes:
    """An LLDP frame naming the sending switch (chassis id) and port (port id)."""
    eth = ethernet.ethernet(dst=lldp.LLDP_MAC_NEAREST_BRIDGE, src=hw_addr, ethertype=ETH_TYPE_LLDP)
    tlvs = (
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED, chassis_id=CHASSIS_PREFIX + b"%016x" % dpid),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=b"%d" % port_no),
        lldp.TTL(ttl=120),
        lldp.End(),
    )
    pkt = packet.Packet()
    pkt.add_protocol(eth)
    pkt.add_protocol(lldp.lldp(tlvs))
    pkt.serialize()
    return bytes(pkt.data)


def parse_lldp(data: bytes) -> tuple[int, int] | None:
    """(dpid, port_no) of the sender of a vtap LLDP frame; None for any other frame."""
    try:
        pkt = packet.Packet(data)
    except Exception:
        return None
    frame = pkt.get_protocol(lldp.lldp)
    if frame is None or len(frame.tlvs) < 2:
        return None
    chassis, port = frame.tlvs[0], frame.tlvs[1]
    if not isinstance(chassis, lldp.ChassisID) or not chassis.chassis_id.startswith(CHASSIS_PREFIX):
        return None
    try:
        return int(chassis.chassis_id[len(CHASSIS_PREFIX) :], 16), int(port.port_id)
    except (ValueError, AttributeError):
        return None


@dataclass
class LinkTable:
    """Links with the time their last LLDP frame arrived, and the ports that face a switch.

    A port that has received LLDP from a vtap switch keeps facing a switch until it goes
    down, even when the switch behind it disconnects or its links expire: a switch in
    fail-secure mode goes on forwarding, and its frames must not be taken for hosts.
    """

    lifetime: float
    last_seen: dict[Link, float] = field(default_factory=dict)
    switch_ports: set[tuple[int, int]] = field(default_factory=set)

    def seen(self, link: Link, now: float) -> bool:
        """Record an LLDP arrival; True when the link is new."""
        new = link not in self.last_seen
        # A port can have one peer: an arrival from elsewhere replaces the old link.
        if new:
            for old in [l for l in self.last_seen if (l.dst_dpid, l.dst_port) == (link.dst_dpid, link.dst_port)]:
                del self.last_seen[old]
        self.last_seen[link] = now
        self.switch_ports.add((link.dst_dpid, link.dst_port))
        self.switch_ports.add((link.src_dpid, link.src_port))
        return new

    def expire(self, now: float) -> list[Link]:
        gone = [l for l, t in self.last_seen.items() if now - t > self.lifetime]
        for link in gone:
            del self.last_seen[link]
        return gone

    def drop_port(self, dpid: int, port_no: int) -> list[Link]:
        """Forget every link with an end at this port (port down or deleted)."""
        self.switch_ports.discard((dpid, port_no))
        gone = [
            l for l in self.last_seen if (l.src_dpid, l.src_port) == (dpid, port_no) or (l.dst_dpid, l.dst_port) == (dpid, port_no)
        ]
        for link in gone:
            del self.last_seen[link]
        return gone

    def drop_switch(self, dpid: int) -> list[Link]:
        gone = [l for l in self.last_seen if dpid in (l.src_dpid, l.dst_dpid)]
        for link in gone:
            del self.last_seen[link]
        return gone

    def links(self) -> frozenset[Link]:
        return frozenset(self.last_seen)
