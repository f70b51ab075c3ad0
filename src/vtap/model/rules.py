"""OpenFlow rule specs: what a switch should hold, independent of any wire format.

Flows and groups are frozen values so that desired and installed sets can be
compared with ordinary set operations; the openflow layer translates them to and
from os-ken messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from vtap.model.network import OFPP_CONTROLLER, OFPP_IN_PORT, OFPP_LOCAL

# A match is a sorted tuple of (OXM field name, value); masked values are (value, mask).
MatchValue = Union[int, str, tuple]
Match = tuple[tuple[str, MatchValue], ...]


def match(**fields: MatchValue) -> Match:
    """Build a canonical match: fields sorted by name, MACs lower-case."""
    out = []
    for name, value in fields.items():
        if isinstance(value, str):
            value = value.lower()
        out.append((name, value))
    return tuple(sorted(out))


@dataclass(frozen=True, order=True)
class Output:
    port: int

    def __str__(self) -> str:
        names = {OFPP_CONTROLLER: "CONTROLLER:65535", OFPP_IN_PORT: "IN_PORT", OFPP_LOCAL: "LOCAL"}
        return names.get(self.port) or f"output:{self.port}"


@dataclass(frozen=True, order=True)
class GroupAction:
    group_id: int

    def __str__(self) -> str:
        return f"group:{self.group_id}"


@dataclass(frozen=True, order=True)
class SetField:
    field: str
    value: MatchValue

    def __str__(self) -> str:
        return f"set_field:{self.value}->{self.field}"


@dataclass(frozen=True, order=True)
class PushVlan:
    ethertype: int = 0x8100

    def __str__(self) -> str:
        return f"push_vlan:0x{self.ethertype:04x}"


@dataclass(frozen=True, order=True)
class PopVlan:
    def __str__(self) -> str:
        return "pop_vlan"


@dataclass(frozen=True, order=True)
class ToController:
    """Send the packet's first `max_len` bytes to the controller through meter `meter_id`
    (only this action is metered: the packet's other actions are not). Open vSwitch's
    `controller(max_len=N,meter_id=M)` (NXAST_CONTROLLER2): OpenFlow 1.3 can meter only a
    whole flow, which would drop the original and its copies with the capture."""

    max_len: int
    meter_id: int

    def __str__(self) -> str:
        return f"controller(max_len={self.max_len},meter_id={self.meter_id})"


@dataclass(frozen=True, order=True)
class OutputTrunc:
    """Output the packet's first `max_len` bytes to `port` (Open vSwitch's NXAST_OUTPUT_TRUNC,
    `output(port=P,max_len=N)`): a copy cut to a snap length. OVS runs it from a flow's
    actions only, not from a group bucket (buckets are action sets)."""

    port: int
    max_len: int

    def __str__(self) -> str:
        return f"output(port={self.port},max_len={self.max_len})"


@dataclass(frozen=True, order=True)
class Resubmit:
    """Look the packet up in `table` and run that rule's actions here, then go on
    (NXAST_RESUBMIT_TABLE, `resubmit(,T)`); allowed as a bucket's last action."""

    table: int

    def __str__(self) -> str:
        return f"resubmit(,{self.table})"


@dataclass(frozen=True, order=True)
class Multipath:
    """Write a hash of the flow, reduced to 0..`links`-1, into bits `ofs`..`ofs+nbits-1` of
    register `dst` (NXAST_MULTIPATH). vtap hashes `symmetric_l3l4+udp`: IP addresses,
    protocol and TCP/UDP/SCTP ports, symmetric, so both directions of a flow get one value;
    `algorithm` is `modulo_n` (sampling) or `hrw` (highest random weight: a pool, where
    links keep their flows when others come or go)."""

    algorithm: str
    basis: int
    links: int
    dst: str
    ofs: int
    nbits: int

    def __str__(self) -> str:
        return (f"multipath(symmetric_l3l4+udp,{self.basis},{self.algorithm},{self.links},0,"
                f"{self.dst}[{self.ofs}..{self.ofs + self.nbits - 1}])")


Action = Union[Output, GroupAction, SetField, PushVlan, PopVlan, ToController, OutputTrunc, Resubmit, Multipath]


@dataclass(frozen=True, order=True)
class FlowRule:
    """One flow entry: apply `actions`, then continue at table `goto` (if any).

    The key (table, priority, match) identifies an entry in a switch, as OpenFlow's
    strict modify/delete does.
    """

    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    cookie: int = 0
    meter: int | None = None  # applied before the actions (rate-limits what they do)
    write: tuple[Action, ...] = ()  # written to the action set: run when the pipeline ends, after `actions`
    # The hash, kept once made (see __hash__); a field so that every instance's attributes
    # are laid out alike (an attribute added later slows every attribute access 3x).
    _hash: int | None = field(default_factory=lambda: None, init=False, compare=False, repr=False)

    @property
    def key(self) -> tuple[int, int, Match]:
        return (self.table, self.priority, self.match)

    def __hash__(self) -> int:
        # Kept once made: rule sets of thousands are hashed on every compile and diff,
        # and hashing re-walks every nested tuple (a dataclass keeps __hash__ defined here).
        h = self._hash
        if h is None:
            h = hash((self.table, self.priority, self.match, self.actions, self.goto, self.cookie, self.meter, self.write))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_hash": None}  # string hashes differ per process

    def __str__(self) -> str:
        head = f"cookie=0x{self.cookie:x}, table={self.table}, "
        fields = [f"priority={self.priority}"] + [f"{name}={_fmt_value(value)}" for name, value in self.match]
        acts = ([f"meter:{self.meter}"] if self.meter is not None else []) + [str(a) for a in self.actions]
        if self.write:
            acts.append("write_actions(" + ",".join(str(a) for a in self.write) + ")")
        if self.goto is not None:
            acts.append(f"goto_table:{self.goto}")
        return head + ",".join(fields) + " actions=" + (",".join(acts) or "drop")


@dataclass(frozen=True, order=True)
class Bucket:
    """A group bucket; in a fast-failover group, live while port `watch_port` is up."""

    actions: tuple[Action, ...]
    watch_port: int | None = None


@dataclass(frozen=True, order=True)
class GroupRule:
    """An OpenFlow group: type `all` (every bucket gets its own copy: the tap groups) or
    `ff` (fast failover: the first live bucket only: the monitors' delivery groups)."""

    group_id: int
    type: str = "all"
    buckets: tuple[Bucket, ...] = ()
    _hash: int | None = field(default_factory=lambda: None, init=False, compare=False, repr=False)  # as FlowRule's

    def __str__(self) -> str:
        buckets = ",".join("bucket=" + (f"watch_port:{b.watch_port}," if b.watch_port is not None else "")
                           + "actions=" + ",".join(str(a) for a in b.actions) for b in self.buckets)
        return f"group_id={self.group_id},type={self.type},{buckets}"

    def __hash__(self) -> int:
        h = self._hash  # kept once made, as FlowRule's
        if h is None:
            h = hash((self.group_id, self.type, self.buckets))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_hash": None}  # string hashes differ per process


@dataclass(frozen=True, order=True)
class Meter:
    """An OpenFlow meter dropping packets above `rate_pps` (burst `burst` packets)."""

    meter_id: int
    rate_pps: int
    burst: int

    def __str__(self) -> str:
        return f"meter={self.meter_id} pktps burst bands=type=drop rate={self.rate_pps} burst_size={self.burst}"


@dataclass(frozen=True)
class SwitchRules:
    """Everything vtap wants in one switch."""

    flows: frozenset[FlowRule] = frozenset()
    groups: frozenset[GroupRule] = frozenset()
    meters: frozenset[Meter] = frozenset()


def _fmt_value(value: MatchValue) -> str:
    if isinstance(value, tuple):
        v, m = value
        return f"{_fmt_value(v)}/{_fmt_value(m)}"
    if isinstance(value, int) and value > 9:
        return f"0x{value:x}"
    return str(value)
