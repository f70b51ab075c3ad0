"""What the controller knows about the network: datapaths, ports, links, hosts.

Plain immutable values; the control layer owns the mutable tables that produce them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Reserved OpenFlow 1.3 port numbers (ofp_port_no).
OFPP_MAX = 0xFFFFFF00
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

# The flow-based tunnel ports vtap gives a switch for remote collectors, named
# "<bridge>-<kind>" (control/tunnels.py makes them): one per encapsulation.
TUNNEL_KINDS = ("gre", "erspan1", "erspan2", "vxlan", "geneve")


def is_mac(value: str) -> bool:
    """A MAC address as vtap writes it (lower case, colons): a normalised pool member is
    either this or an IP address."""
    return bool(_MAC_RE.match(value))


def normalize_mac(mac: str) -> str:
    """Lower-case colon form; raises ValueError naming the value when it is not a MAC."""
    text = mac.strip().lower().replace("-", ":")
    if not _MAC_RE.match(text):
        raise ValueError(f"not a MAC address (6 octets, aa:bb:cc:dd:ee:ff): {mac!r}")
    return text


def dpid_str(dpid: int) -> str:
    """Datapath ids are shown as 16 hex digits, as OVS and the REST API print them."""
    return f"{dpid:016x}"


def is_multicast_mac(mac: str) -> bool:
    """The group bit: broadcast and multicast destinations."""
    return bool(int(mac.split(":")[0], 16) & 1)


def is_physical_port(port_no: int) -> bool:
    """Ports that can face a host or another switch (not LOCAL, CONTROLLER, ...)."""
    return 0 < port_no < OFPP_MAX


@dataclass(frozen=True)
class Port:
    port_no: int
    name: str
    hw_addr: str
    up: bool


@dataclass(frozen=True)
class Device:
    """A connected OpenFlow switch (a datapath)."""

    dpid: int
    ports: tuple[Port, ...]
    connected_since: float = field(compare=False)  # when, not what: a switch back with the same ports is the same device
    n_tables: int = 0

    def port(self, port_no: int) -> Port | None:
        for p in self.ports:
            if p.port_no == port_no:
                return p
        return None

    def up_ports(self) -> list[int]:
        """Up ports that can face a host or a switch (not LOCAL, not a tunnel port)."""
        tunnels = set(self.tunnel_ports().values())
        return [p.port_no for p in self.ports if p.up and is_physical_port(p.port_no) and p.port_no not in tunnels]

    @property
    def bridge(self) -> Port | None:
        """The switch's own (LOCAL) port: its name is the bridge's, its MAC the bridge's."""
        return self.port(OFPP_LOCAL)

    def tunnel_ports(self) -> dict[str, int]:
        """{kind: port number} of vtap's tunnel ports on this switch (see TUNNEL_KINDS)."""
        local = self.bridge
        if local is None:
            return {}
        prefix = local.name + "-"
        return {p.name[len(prefix):]: p.port_no for p in self.ports
                if p.name.startswith(prefix) and p.name[len(prefix):] in TUNNEL_KINDS}


@dataclass(frozen=True, order=True)
class Link:
    """One direction of an inter-switch link, as LLDP sees it: sent at src, received at dst."""

    src_dpid: int
    src_port: int
    dst_dpid: int
    dst_port: int

    def reversed(self) -> Link:
        return Link(self.dst_dpid, self.dst_port, self.src_dpid, self.src_port)


@dataclass(frozen=True)
class Host:
    """An end host, seen at its attachment point (edge switch and port)."""

    mac: str
    ips: tuple[str, ...]
    dpid: int
    port: int
    last_seen: float = field(compare=False, default=0.0)
