"""The OpenFlow pipeline every switch vtap manages holds, declared once, as data.

| table | name     | does                                                                |
|-------|----------|---------------------------------------------------------------------|
| 0     | classify | LLDP to the controller; copies in transit to table 3; transit and   |
|       |          | known hosts on; unknown sources on edge ports to the controller     |
| 1     | tap      | policy match at the tap point (copy group), then table 2            |
| 2     | forward  | ARP and IPv6 neighbour discovery to the controller (whatever the    |
|       |          | destination); unicast by destination MAC; broadcast on a loop-free  |
|       |          | tree                                                                |
| 3     | copy     | carries copies to the monitor                                       |
| 4     | shape    | a budgeted copy's flow hashes (sampling, monitor pool)              |
| 5     | send     | a budgeted copy: sampled out, or to which monitor, through its meter |
| 6     | truncate | a cut copy leaves its port (OVS truncates only from a flow's actions) |

Tables 4-6 are reached only by `resubmit` from a tap group's bucket (see compile/budget.py).

`PIPELINE` says, per table, which fields its rules may match, which tables they may go
to and which part of vtap owns them; `violations` checks a rule against it, and a unit
test checks every compiled rule. Every number a switch sees from vtap — cookies, group
ids, meter ids, copy VLAN ids — is allocated here, so that the reconciler reads back and
corrects only vtap's own rules and leaves foreign ones alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum

from vtap.model.rules import FlowRule


class Owner(IntEnum):
    """Which part of vtap a rule belongs to: the byte below the cookie's "vt"."""

    FORWARDING = 1
    TAP = 2
    COPY = 3


# Cookies: "vt" in the top 16 bits, the owner in the next byte, the rest free (a TAP
# rule's region id).
VTAP_COOKIE = 0x7674 << 48
VTAP_COOKIE_MASK = 0xFFFF << 48
OWNER_SHIFT = 40
OWNER_MASK = 0xFFFFFF << OWNER_SHIFT  # "vt" + owner
COOKIE_ID_MASK = (1 << OWNER_SHIFT) - 1


def cookie(owner: Owner, ident: int = 0) -> int:
    return VTAP_COOKIE | (owner << OWNER_SHIFT) | (ident & COOKIE_ID_MASK)


def cookie_owner(value: int) -> Owner | None:
    if not is_vtap_cookie(value):
        return None
    try:
        return Owner((value >> OWNER_SHIFT) & 0xFF)
    except ValueError:
        return None


def is_vtap_cookie(value: int) -> bool:
    return value & VTAP_COOKIE_MASK == VTAP_COOKIE


COOKIE_FORWARDING = cookie(Owner.FORWARDING)
COOKIE_TAP = cookie(Owner.TAP)
COOKIE_COPY = cookie(Owner.COPY)

# Group ids vtap allocates live in one range; groups outside it are not vtap's. It is
# split in three: tap groups (type all, one bucket per monitor); delivery groups (type
# ff, one per monitor at its edge switch, the only way copies reach a monitor: their
# bucket counts copies handed to a live port); forwarding groups (type ff, one per
# destination switch at every other switch: the next hop and a loop-free alternate,
# taken by the switch itself the moment the next hop's port goes down).
VTAP_GROUP_BASE = 0x76000000
VTAP_GROUP_MASK = 0xFF000000
GROUP_ID_MASK = 0x003FFFFF
DELIVERY_GROUP_BASE = 0x76400000
FORWARD_GROUP_BASE = 0x76800000
# Budgeted copies (compile/budget.py): a send group per (shape, monitor) at a tap switch
# (its bucket counts the copies sent, as a tap group's does); a cut copy's groups (fast
# failover toward a switch, or to a monitor's port) whose buckets hand it to table 6.
SEND_GROUP_BASE = 0x76C00000
BUDGET_ID_MASK = 0x001FFFFF  # send and cut groups share the last quarter of the range
CUT_GROUP_BASE = 0x76E00000


def allocate_id(base: int, mask: int, stable: int, taken: Collection[int]) -> int:
    """A group's id in the range `base | mask`, from a `stable_hash` of what the group is
    (its buckets, its monitor, its destination), probing upward within the range past
    ids already taken. The same inputs give the same id on every compile and every
    switch, so an unchanged group keeps its id and is never rewritten."""
    gid = base | (stable & mask)
    while gid in taken:
        gid = base | ((gid + 1) & mask)
    return gid


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's own `hash` of a str is not)."""
    return zlib.crc32(text.encode())


def is_vtap_group(group_id: int) -> bool:
    return group_id & VTAP_GROUP_MASK == VTAP_GROUP_BASE


def is_forward_group(group_id: int) -> bool:
    return group_id & ~GROUP_ID_MASK == FORWARD_GROUP_BASE


# Meters: vtap's ids carry "vt" in their top 16 bits (below OFPM_MAX).
METER_PACKET_IN = 0x76740001
# Capture jobs' packets reach the controller through this meter only (the packet's other
# actions are not metered): a capture of a busy flow cannot swamp the controller or
# crowd out address resolution and discovery.
METER_CAPTURE = 0x76740002
CAPTURE_RATE_PPS = 2000
CAPTURE_BURST = 500
# LLDP from ports not proven to face a switch (edge and not yet known ports) reaches the
# controller through this meter; from proven link ports it is not metered. A host
# spraying LLDP then costs the controller at most this much, while a switch that joins
# late (one frame per port and round, more in the extra rounds as switches come up) is
# well within it.
METER_LLDP = 0x76740003
# Ports whose role is not known yet have a meter of their own: a host spraying LLDP on an
# edge port cannot keep a new link from being proven on another port of its switch.
METER_LLDP_UNKNOWN = 0x76740004
LLDP_RATE_PPS = 500
LLDP_BURST = 100


# A rate-limited policy's meters (one per tap switch and monitor): "u" (0x75) in the top byte.
POLICY_METER_BASE = 0x75000000
POLICY_METER_MASK = 0x00FFFFFF


def is_vtap_meter(meter_id: int) -> bool:
    return meter_id >> 16 == 0x7674 or meter_id >> 24 == POLICY_METER_BASE >> 24


ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_LLDP = 0x88CC
IPPROTO_ICMPV6 = 58
ICMPV6_NEIGHBOR_SOLICIT = 135
ICMPV6_NEIGHBOR_ADVERT = 136
MULTICAST_BIT = ("01:00:00:00:00:00", "01:00:00:00:00:00")
# 802.1D's reserved group addresses (STP, pause, LACP, 802.1X, LLDP ...): never forwarded by a bridge.
BRIDGE_GROUP = ("01:80:c2:00:00:00", "ff:ff:ff:ff:ff:f0")

# Copies in transit carry one of these VLAN ids (outer tag), one per monitor; hosts'
# frames with them are dropped at the edge, so a copy cannot be confused with traffic.
COPY_VID_FIRST = 0xF80  # 3968
COPY_VID_LAST = 0xFFE  # 4094
COPY_VID_MASK = (0x1F80, 0x1F80)  # OXM vlan_vid: present bit + top bits of the range
OFPVID_PRESENT = 0x1000

TABLE_CLASSIFY = 0
TABLE_TAP = 1
TABLE_FORWARD = 2
TABLE_COPY = 3
TABLE_SHAPE = 4
TABLE_SEND = 5
TABLE_TRUNCATE = 6

# Registers of a budgeted copy (OVS's reg0-reg7, zero when a packet enters a switch).
REG_SHAPE = "reg6"  # which shape (set by the tap group's bucket)
REG_HASH = "reg7"  # bits 0-15: the sampling hash; 16-31: the pool member by highest random weight
REG_SPARE = "reg5"  # bits 0-15: a live pool member, for flows of a member that is down
REG_CUT = "reg4"  # the snap length
REG_PORT = "reg3"  # the port a cut copy leaves by

# Priorities, per table.
PRIO_LLDP_LINK = 1010  # table 0: LLDP on a proven link port (unmetered) or a port not known yet (its own meter)
PRIO_LLDP = 1000  # LLDP anywhere else, through the LLDP meter
PRIO_COPY_IN = 900  # a copy VLAN id on an authenticated inter-switch port
PRIO_TUNNEL_OUT = 880  # a tunnelled copy, back in on LOCAL from the bridge's own MAC
PRIO_RESERVED_VID = 850  # a copy VLAN id anywhere else: dropped
PRIO_BRIDGE_GROUP = 800  # 802.1D group addresses (LLDP apart, above): dropped
PRIO_TRANSIT = 500
PRIO_KNOWN_HOST = 400
PRIO_UNKNOWN_SOURCE = 300
PRIO_TAP_BASE = 1000  # table 1: + specificity in bits
PRIO_RECOVERY_BASE = 1000  # table 2: + specificity in bits (rewrite transport)
# Address resolution goes to the controller above unicast forwarding: every ARP and ND
# frame, replies included, tells the controller which addresses a MAC uses.
PRIO_NEIGHBOUR = 200
PRIO_HOST_DST = 100
PRIO_FLOOD = 50
PRIO_DEFAULT = 0
PRIO_COPY = 100  # table 3
PRIO_BUDGET = 100  # tables 4-6

# The fields a TAP policy can match (its regions; the rewrite transport's recovery rules).
POLICY_FIELDS = frozenset({
    "in_port", "eth_src", "eth_dst", "eth_type", "vlan_vid", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst",
    "ip_proto", "tcp_src", "tcp_dst", "udp_src", "udp_dst", "sctp_src", "sctp_dst",
})


@dataclass(frozen=True)
class Table:
    """One flow table: what its rules may match, where they may go, who owns them."""

    table_id: int
    name: str
    matches: frozenset[str]
    next_tables: frozenset[int]
    owners: frozenset[Owner]


PIPELINE: tuple[Table, ...] = (
    Table(TABLE_CLASSIFY, "classify", frozenset({"in_port", "eth_type", "eth_src", "eth_dst", "vlan_vid"}),
          frozenset({TABLE_TAP, TABLE_FORWARD, TABLE_COPY}), frozenset({Owner.FORWARDING, Owner.COPY})),
    Table(TABLE_TAP, "tap", POLICY_FIELDS, frozenset({TABLE_FORWARD}), frozenset({Owner.FORWARDING, Owner.TAP})),
    Table(TABLE_FORWARD, "forward", POLICY_FIELDS | {"icmpv6_type"}, frozenset(), frozenset({Owner.FORWARDING, Owner.TAP})),
    Table(TABLE_COPY, "copy", frozenset({"vlan_vid"}), frozenset(), frozenset({Owner.COPY})),
    Table(TABLE_SHAPE, "shape", frozenset({REG_SHAPE}), frozenset(), frozenset({Owner.TAP})),
    Table(TABLE_SEND, "send", frozenset({REG_SHAPE, REG_HASH, REG_SPARE}), frozenset(), frozenset({Owner.TAP})),
    Table(TABLE_TRUNCATE, "truncate", frozenset({REG_PORT, REG_CUT}), frozenset(), frozenset({Owner.COPY})),
)
TABLES = {t.table_id: t for t in PIPELINE}


def violations(rule: FlowRule) -> list[str]:
    """How `rule` breaks the declared pipeline (empty when it does not)."""
    table = TABLES.get(rule.table)
    if table is None:
        return [f"table {rule.table} is not in the pipeline"]
    out = []
    extra = {name for name, _ in rule.match} - table.matches
    if extra:
        out.append(f"table {table.name} does not match on {', '.join(sorted(extra))}")
    if rule.goto is not None and rule.goto not in table.next_tables:
        out.append(f"table {table.name} may not go to table {rule.goto}")
    owner = cookie_owner(rule.cookie)
    if owner not in table.owners:
        out.append(f"table {table.name} holds no rules of cookie 0x{rule.cookie:x} (owner {owner})")
    return out
