"""Who may do what: roles, and the scope of what an operator may tap and where copies may go.

A TAP copies other people's traffic, so the right to create one is scoped twice: by
what is tapped (`sources`: every identifier the policy gives must lie inside one of
them) and by where the copies go (`monitors`). A policy that names only its source (or
only its destination) taps everything that host sends (or receives), whoever the peer:
that is in scope. Only a policy with no identifier at all taps "any": for admins.
Pure: checked the same way for a new policy, an update (old and new) and a delete.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vtap.model.network import normalize_mac
from vtap.model.policy import MatchSpec, normalize_ip


class Role(StrEnum):
    VIEWER = "viewer"  # reads
    OPERATOR = "operator"  # policies and capture jobs, within its scope
    ADMIN = "admin"  # everything, tokens included
    SENSOR = "sensor"  # reads, and writes the reports of the monitors in its scope (`vtap sensor`), nothing else

    def may(self, needed: Role) -> bool:
        if needed == Role.SENSOR:
            return self in (Role.SENSOR, Role.ADMIN)
        if self == Role.SENSOR:
            return needed == Role.VIEWER
        order = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
        return order.index(self) >= order.index(needed)


def _entry(value: Any, what: str) -> str:
    """A MAC, or an IP address or CIDR prefix, normalised; ValueError naming the value."""
    if not isinstance(value, str):
        raise ValueError(f"{what} entries are strings: a MAC, an IP address or a CIDR prefix")
    try:
        return normalize_mac(value)
    except ValueError:
        pass
    try:
        return normalize_ip(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a MAC nor an IP address or CIDR prefix") from None


class Scope(BaseModel):
    """What an operator may tap (`sources`) and where it may send copies (`monitors`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[str, ...] = Field((), description="MACs and CIDR prefixes every tapped identifier must lie in")
    monitors: tuple[str, ...] = Field((), description="monitor MACs and IP addresses (or prefixes) copies may go to")

    @field_validator("sources", "monitors", mode="before")
    @classmethod
    def _entries(cls, v: Any) -> tuple[str, ...]:
        if not isinstance(v, (list, tuple)):
            raise ValueError("a list of MACs, IP addresses or CIDR prefixes")
        return tuple(_entry(x, "scope") for x in v)


def _is_mac(value: str) -> bool:
    try:
        return normalize_mac(value) == value
    except ValueError:
        return False


def _inside(value: str, allowed: tuple[str, ...]) -> bool:
    """A MAC equals an allowed MAC; an address or prefix lies within an allowed prefix."""
    if _is_mac(value):
        return value in allowed
    net = ipaddress.ip_network(value, strict=False)
    for a in allowed:
        if _is_mac(a):
            continue
        outer = ipaddress.ip_network(a, strict=False)
        if outer.version == net.version and net.subnet_of(outer):
            return True
    return False


def host_inside(allowed: tuple[str, ...], mac: str, ips: tuple[str, ...] = ()) -> bool:
    """Whether a host lies inside scope entries: its MAC is listed, or one of its addresses
    lies within a listed prefix (how a project sees a Neutron port)."""
    return _inside(mac, allowed) or any(_inside(ip, allowed) for ip in ips)


def scope_violations(spec: MatchSpec, scope: Scope) -> list[tuple[str, str]]:
    """(field, why) for every part of `spec` outside `scope`; empty when it is inside."""
    out = []
    given = [(name, getattr(spec, name)) for name in ("src_mac", "src_ip", "dst_mac", "dst_ip") if getattr(spec, name)]
    if not given:
        out.append(("src_ip", "no identifier given: the policy taps any traffic, which only an admin may"))
    for name, value in given:
        if not _inside(value, scope.sources):
            out.append((name, f"{value} is outside your scope's sources"))
    for name in ("monitor_mac", "monitor_ip"):
        value = getattr(spec, name, None)  # a capture job's match has no monitor
        if value and not _inside(value, scope.monitors):
            out.append((name, f"{value} is outside your scope's monitors"))
    for value in getattr(spec, "monitor_pool", None) or ():
        if not _inside(value, scope.monitors):
            out.append(("monitor_pool", f"{value} is outside your scope's monitors"))
    return out
