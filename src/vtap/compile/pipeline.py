"""The OpenFlow pipeline layout shared by every switch vtap manages.

| table | name     | does                                                                |
|-------|----------|---------------------------------------------------------------------|
| 0     | classify | LLDP to the controller; transit and known hosts on; unknown sources |
|       |          | on edge ports to the controller (host learning, moves)              |
| 1     | tap      | policy match at the tap point (copy group), then table 2            |
| 2     | forward  | ARP and IPv6 neighbour discovery to the controller (whatever the    |
|       |          | destination); unicast by destination MAC; broadcast on a loop-free  |
|       |          | tree                                                                |
| 3     | copy     | carries copies to the monitor                                       |

Cookies: every rule vtap installs carries VTAP_COOKIE in its top 16 bits, so that the
reconciler reads back and corrects only its own rules and leaves foreign ones alone.
The next byte says which part of vtap owns the rule.
"""

from __future__ import annotations

TABLE_CLASSIFY = 0
TABLE_TAP = 1
TABLE_FORWARD = 2
TABLE_COPY = 3

VTAP_COOKIE = 0x7674 << 48  # "vt"
VTAP_COOKIE_MASK = 0xFFFF << 48
OWNER_SHIFT = 40
OWNER_FORWARDING = 1
OWNER_TAP = 2
OWNER_COPY = 3

COOKIE_FORWARDING = VTAP_COOKIE | (OWNER_FORWARDING << OWNER_SHIFT)

ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_LLDP = 0x88CC
IPPROTO_ICMPV6 = 58
ICMPV6_NEIGHBOR_SOLICIT = 135
ICMPV6_NEIGHBOR_ADVERT = 136
MULTICAST_BIT = ("01:00:00:00:00:00", "01:00:00:00:00:00")

# Copies in transit carry one of these VLAN ids (outer tag), one per monitor; hosts'
# frames with them are dropped at the edge, so a copy cannot be confused with traffic.
COPY_VID_FIRST = 0xF80  # 3968
COPY_VID_LAST = 0xFFE  # 4094
COPY_VID_MASK = (0x1F80, 0x1F80)  # OXM vlan_vid: present bit + top bits of the range
OFPVID_PRESENT = 0x1000

# Priorities, per table.
PRIO_RESERVED_VID = 950
PRIO_COPY_IN = 900
PRIO_LLDP = 1000
PRIO_TRANSIT = 500
PRIO_KNOWN_HOST = 400
PRIO_UNKNOWN_SOURCE = 300
PRIO_TAP_BASE = 1000  # + specificity in bits
PRIO_RECOVERY_BASE = 1000  # + specificity in bits, table 2 (rewrite transport)
PRIO_COPY = 100
# Address resolution goes to the controller above unicast forwarding: every ARP and ND
# frame, replies included, tells the controller which addresses a MAC uses.
PRIO_NEIGHBOUR = 200
PRIO_HOST_DST = 100
PRIO_FLOOD = 50
PRIO_DEFAULT = 0


# Group ids vtap allocates live in one range; groups outside it are not vtap's.
VTAP_GROUP_BASE = 0x76000000
VTAP_GROUP_MASK = 0xFF000000


def is_vtap_group(group_id: int) -> bool:
    return group_id & VTAP_GROUP_MASK == VTAP_GROUP_BASE


# Meters: vtap's ids carry "vt" in their top 16 bits (below OFPM_MAX).
METER_PACKET_IN = 0x76740001


def is_vtap_meter(meter_id: int) -> bool:
    return meter_id >> 16 == 0x7674


def is_vtap_cookie(cookie: int) -> bool:
    return cookie & VTAP_COOKIE_MASK == VTAP_COOKIE
