"""TAP policies: what an operator declares, validated once, here.

The fields follow the seed's policy table: identifier fields (source and destination
MAC and IP), the monitor (MAC and/or IP), optional filters (IP protocol, VLAN id,
TCP/UDP ports), plus direction, transport, name, description and enabled.  A field
left out or given as "*" means "any".  Every error names its field.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from vtap.model.network import normalize_mac
from vtap.model.taas import TaasRef

IP_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132}
PORT_PROTOS = (6, 17)
MAX_POOL = 16
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Direction = Literal["forward", "reverse", "both"]
Transport = Literal["vlan", "rewrite", "gre", "erspan", "vxlan", "geneve"]
# Tunnel transports: the largest key each header carries (GRE key, ERSPAN session id, VNI).
TUNNEL_KEY_MAX = {"gre": 0xFFFFFFFF, "erspan": 0x3FF, "vxlan": 0xFFFFFF, "geneve": 0xFFFFFF}


def _any(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "*"))


def normalize_ip(value: str) -> str:
    """A single address ('10.0.0.1') or a CIDR prefix ('10.0.0.0/24'), IPv4 or IPv6.

    Host bits in a prefix are an error rather than silently dropped: '10.0.0.1/24'
    is more likely a typo than a wish for the whole /24.
    """
    try:
        return _normalized_ip(value.strip())
    except ValueError as exc:
        shown = repr(value) if len(value) <= 64 else repr(value[:61]) + "..."
        raise ValueError(f"not an IP address or CIDR prefix: {shown} ({str(exc)[:120]})") from None


@functools.lru_cache(maxsize=65536)  # a bulk apply names the same few addresses thousands of times (errors are not kept)
def _normalized_ip(text: str) -> str:
    if "/" in text:
        net = ipaddress.ip_network(text, strict=True)
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return str(net)
    return str(ipaddress.ip_address(text))


def check_name(value: str) -> str:
    """A name of a policy or a token: letters, digits, '.', '_' or '-' (1-64)."""
    if not NAME_RE.match(value):
        raise ValueError("1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


@functools.lru_cache(maxsize=65536)  # asked for every policy at every compile; few distinct addresses
def ip_version(value: str) -> int:
    return ipaddress.ip_network(value, strict=False).version


def is_single_address(value: str) -> bool:
    """One host's address, not a prefix (policy fields are normalised: '/32' is dropped)."""
    return "/" not in value


@dataclass(frozen=True)
class Ends:
    """One direction of a policy: the fields of the side packets come from, and go to."""

    src_mac: str | None
    src_ip: str | None
    src_port: int | None
    dst_mac: str | None
    dst_ip: str | None
    dst_port: int | None


class MatchSpec(BaseModel):
    """Which packets: the identifier fields, the filters and the direction, validated once.
    A TAP policy (`TapSpec`) and a capture job (`vtap.model.capture.CaptureSpec`) share it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    src_mac: str | None = Field(None, description="source MAC, or * for any")
    src_ip: str | None = Field(None, description="source IPv4/IPv6 address or CIDR prefix")
    dst_mac: str | None = None
    dst_ip: str | None = None
    ip_proto: int | None = Field(None, description="IP protocol number, or tcp/udp/icmp")
    vlan_id: int | None = Field(None, ge=0, le=4095)
    src_port: int | None = Field(None, ge=0, le=65535, description="TCP/UDP source port (needs ip_proto tcp or udp)")
    dst_port: int | None = Field(None, ge=0, le=65535)
    direction: Direction = "forward"

    @field_validator("src_mac", "dst_mac", mode="before")
    @classmethod
    def _mac(cls, v: Any) -> str | None:
        return _mac_or_any(v)

    @field_validator("src_ip", "dst_ip", mode="before")
    @classmethod
    def _ip(cls, v: Any) -> str | None:
        if _any(v):
            return None
        if not isinstance(v, str):
            raise ValueError("must be an IP address or CIDR prefix string")
        return normalize_ip(v)

    @field_validator("ip_proto", mode="before")
    @classmethod
    def _proto(cls, v: Any) -> int | None:
        if _any(v):
            return None
        if isinstance(v, str):
            key = v.strip().lower()
            if key in IP_PROTOS:
                return IP_PROTOS[key]
            if key.isdigit():
                v = int(key)
            else:
                raise ValueError(f"unknown protocol {v!r}: use a number 0-255 or one of {', '.join(IP_PROTOS)}")
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
            raise ValueError("must be a number 0-255 or one of " + ", ".join(IP_PROTOS))
        return v

    @field_validator("vlan_id", "src_port", "dst_port", mode="before")
    @classmethod
    def _star_int(cls, v: Any) -> Any:
        return None if _any(v) else v

    @field_validator("src_port", "dst_port")
    @classmethod
    def _port_needs_tcp_udp(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("ip_proto") not in PORT_PROTOS:
            raise ValueError("a TCP/UDP port needs ip_proto tcp (6) or udp (17)")
        return v

    @field_validator("dst_ip")
    @classmethod
    def _same_family(cls, v: str | None, info: ValidationInfo) -> str | None:
        src = info.data.get("src_ip")
        if v and src and ip_version(src) != ip_version(v):
            raise ValueError("src_ip and dst_ip must be of the same IP version")
        return v

    def needs_identifiers(self) -> bool:
        return True

    @model_validator(mode="after")
    def _identifiers(self) -> MatchSpec:
        if self.needs_identifiers() and not any((self.src_mac, self.src_ip, self.dst_mac, self.dst_ip)):
            raise ValueError("at least one identifier field is needed: src_mac, src_ip, dst_mac or dst_ip")
        return self

    def match_fields(self) -> dict[str, Any]:
        """Only the match: what a capture of a policy's packets copies from it."""
        return {name: getattr(self, name) for name in MatchSpec.model_fields}

    def directions(self) -> list[Ends]:
        """The directions, as written (`forward`), swapped (`reverse`) or both."""
        forward = Ends(self.src_mac, self.src_ip, self.src_port, self.dst_mac, self.dst_ip, self.dst_port)
        reverse = Ends(self.dst_mac, self.dst_ip, self.dst_port, self.src_mac, self.src_ip, self.src_port)
        return {"forward": [forward], "reverse": [reverse], "both": [forward, reverse]}[self.direction]

    @property
    def ip_version(self) -> int | None:
        """The IP version the match is about: from its addresses, else 4 when it filters
        on a protocol (icmpv6: 6), else None (not IP-specific: matches any EtherType)."""
        for ip in (self.src_ip, self.dst_ip):
            if ip:
                return ip_version(ip)
        if self.ip_proto is not None:
            return 6 if self.ip_proto == 58 else 4
        return None


def _mac_or_any(v: Any) -> str | None:
    if _any(v):
        return None
    if not isinstance(v, str):
        raise ValueError("must be a MAC address string")
    return normalize_mac(v)


class TapSpec(MatchSpec):
    """A TAP policy as the operator writes it (REST body, CLI flags, stored JSON)."""

    @model_validator(mode="before")
    @classmethod
    def _given_at_default_is_not_given(cls, data: Any) -> Any:
        """A field given at its default value is taken as not given (the values are the
        same): pydantic keeps with each model the set of the fields given, and a stored
        spec, every field written, held a set of 22 names, 2.2 KiB of a policy's 3.8."""
        if not isinstance(data, dict):
            return data
        defaults = _defaults(cls)
        return {k: v for k, v in data.items() if k not in defaults or v != defaults[k]}

    name: str = Field(description="unique name", json_schema_extra={"pattern": NAME_RE.pattern})
    description: str = Field("", max_length=1024)
    enabled: bool = True
    monitor_mac: str | None = Field(None, description="the monitor host's MAC")
    monitor_ip: str | None = Field(None, description="the monitor host's IP (resolved to its MAC)")
    transport: Transport = "vlan"
    tunnel_key: int | None = Field(None, ge=0, le=0xFFFFFFFF,
                                   description="GRE key, ERSPAN session id (0-1023) or VNI (24 bits) of a tunnel "
                                               "transport; default: the policy's id")
    erspan_version: int | None = Field(None, ge=1, le=2, description="ERSPAN type II (1, default) or III (2)")
    monitor_pool: tuple[str, ...] | None = Field(
        None, min_length=1, max_length=MAX_POOL,
        description="monitors (MACs or IPs) to spread flows over, instead of monitor_mac/monitor_ip: both directions "
                    "of a flow reach the same one; a monitor whose port goes down hands its share to the others")
    snaplen: int | None = Field(None, ge=64, le=9216, description="cut each copy to its first N bytes (64-9216)")
    sample: int = Field(1, ge=1, le=65535, description="copy 1 in N flows, whole flows in both directions (1: all)")
    rate_limit_pps: int | None = Field(None, ge=1, le=10_000_000,
                                       description="copies per second beyond which this policy's copies are dropped")
    taas: TaasRef | None = Field(None, description="read-only: the TaaS tap service, flow or mirror this policy "
                                                   "serves (written by /v2.0/taas only)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("monitor_mac", mode="before")
    @classmethod
    def _monitor_mac(cls, v: Any) -> str | None:
        return _mac_or_any(v)

    @field_validator("monitor_ip", mode="before")
    @classmethod
    def _monitor_ip(cls, v: Any) -> str | None:
        if _any(v):
            return None
        if not isinstance(v, str) or "/" in v:
            raise ValueError("must be a single IP address (the monitor host)")
        return normalize_ip(v)

    @field_validator("monitor_pool", mode="before")
    @classmethod
    def _pool(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            return v  # None, or pydantic's own type error ("Input should be a valid tuple")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, str) or _any(item):
                raise ValueError(f"entry {i}: a monitor's MAC or IP address is needed")
            if "/" in item:
                raise ValueError(f"entry {i}: a single address, not a prefix: {item[:64]!r}")
            try:
                value = normalize_mac(item)
            except ValueError:
                try:
                    value = normalize_ip(item)
                except ValueError:
                    raise ValueError(f"entry {i}: not a MAC or IP address: {item[:64]!r}") from None
            if value in out:
                raise ValueError(f"entry {i}: {value} is named twice")
            out.append(value)
        return tuple(out)

    @field_validator("tunnel_key")
    @classmethod
    def _tunnel_key(cls, v: int | None, info: ValidationInfo) -> int | None:
        transport = info.data.get("transport")
        if v is not None and transport in TUNNEL_KEY_MAX and v > TUNNEL_KEY_MAX[transport]:
            raise ValueError(f"{v} is out of range for {transport} (0-{TUNNEL_KEY_MAX[transport]})")
        return v

    @field_validator("erspan_version")
    @classmethod
    def _erspan_version(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("transport") != "erspan":
            raise ValueError("goes with transport erspan")
        return v

    @model_validator(mode="after")
    def _monitor(self) -> TapSpec:
        if self.monitor_pool is not None and (self.monitor_mac or self.monitor_ip):
            raise ValueError("monitor_pool replaces monitor_mac and monitor_ip: give one or the other")
        if not (self.monitor_mac or self.monitor_ip or self.monitor_pool):
            raise ValueError("a monitor is needed: monitor_mac and/or monitor_ip, or monitor_pool")
        if self.transport == "rewrite" and self.shaped:
            raise ValueError("snaplen, sample, rate_limit_pps and monitor_pool need transport vlan")
        if self.transport in TUNNEL_KEY_MAX:
            self._check_tunnel()
        elif self.tunnel_key is not None:
            raise ValueError("tunnel_key goes with a tunnel transport: gre, erspan, vxlan or geneve")
        if self.monitor_ip and self.transport == "rewrite" and self.ip_version and ip_version(self.monitor_ip) != self.ip_version:
            raise ValueError("with transport rewrite, monitor_ip must be of the tapped traffic's IP version")
        return shared_fields_set(self)

    def _check_tunnel(self) -> None:
        """A tunnel's collector is an IP address (monitor_mac, if given, is the next hop's
        MAC: a gateway); its key must fit the header."""
        if not self.monitor_ip:
            raise ValueError(f"monitor_ip: transport {self.transport} needs the collector's address in monitor_ip")
        if self.monitor_pool or self.shaped:
            raise ValueError(f"transport {self.transport}: copy budgets and monitor_pool need transport vlan")

    @property
    def tunnel(self) -> bool:
        return self.transport in TUNNEL_KEY_MAX

    @property
    def shaped(self) -> bool:
        """Whether copies are budgeted (cut, sampled, rate-limited or spread over a pool):
        then they take the copy-budget tables of the pipeline (compile/budget.py)."""
        return bool(self.monitor_pool or self.snaplen or self.sample > 1 or self.rate_limit_pps)

    @property
    def monitors(self) -> tuple[str, ...]:
        """The monitors named: the pool's members, or the one monitor (its MAC, else IP)."""
        return self.monitor_pool or ((self.monitor_mac or self.monitor_ip),)


class Tap(BaseModel):
    """A stored policy: its id and spec. Status lives with the controller, not here."""

    model_config = ConfigDict(frozen=True)

    id: int
    spec: TapSpec

    @model_validator(mode="after")
    def _shared(self) -> Tap:
        return shared_fields_set(self)

    @classmethod
    def of(cls, ident: int, spec: TapSpec) -> Tap:
        """`Tap(id=ident, spec=spec)` for an id and a spec valid already (a stored row's
        id, a validated spec), without validating them again: 0.6 us instead of 4.3 (a
        PUT of 100,000 policies makes 200,000, a restart 100,000)."""
        if type(ident) is not int or not isinstance(spec, TapSpec):
            raise TypeError(f"Tap.of takes an int and a TapSpec, not {type(ident).__name__} and {type(spec).__name__}")
        tap = cls.__new__(cls)
        object.__setattr__(tap, "__dict__", {"id": ident, "spec": spec})
        object.__setattr__(tap, "__pydantic_fields_set__", _TAP_FIELDS)
        object.__setattr__(tap, "__pydantic_extra__", None)
        object.__setattr__(tap, "__pydantic_private__", None)
        return tap


FIELDS_SETS_MAX = 4096  # distinct sets of given fields shared; beyond, each model keeps its own
_fields_sets: dict[frozenset[str], set[str]] = {}


def shared_fields_set(model: BaseModel) -> BaseModel:
    """The model, holding a set of the fields given that is shared with every other model
    given the same fields. pydantic keeps that set with each model: 728 bytes of a stored
    policy's ~2.2 KiB, and 216 of its Tap's, the same few sets ten thousand times over.
    Sharing is sound for frozen models only (pydantic adds to the set on assignment, and
    copies it before a `model_copy` adds to it)."""
    assert model.model_config.get("frozen"), type(model)
    given = model.__pydantic_fields_set__
    key = frozenset(given)
    shared = _fields_sets.get(key)
    if shared is None:
        if len(_fields_sets) >= FIELDS_SETS_MAX:
            return model
        shared = _fields_sets[key] = set(key)
    object.__setattr__(model, "__pydantic_fields_set__", shared)
    return model


_TAP_FIELDS = _fields_sets.setdefault(frozenset(("id", "spec")), {"id", "spec"})  # every Tap's (shared_fields_set)


@dataclass(frozen=True)
class PolicyPlan:
    """What making the stored policies equal to a declared set does, by policy name."""

    added: list[Tap]
    changed: list[tuple[Tap, Tap]]  # (before, after), same id
    removed: list[Tap]
    unchanged: list[Tap]

    def numbered(self, first: int) -> PolicyPlan:
        """This plan with its new policies given the ids from `first` on, in order (the
        store's next ids; `plan_changes` leaves them 0)."""
        return PolicyPlan([Tap.of(first + i, t.spec) for i, t in enumerate(self.added)], self.changed, self.removed,
                          self.unchanged)


def plan_changes(by_name: Mapping[str, Tap], declared: list[TapSpec], *, prune: bool) -> PolicyPlan:
    """Match declared policies to stored ones (`by_name`: every stored policy by name
    with `prune`, else at least those `declared` names) by name: new names are added (id
    0 until stored), others changed when their fields differ, and with `prune` stored
    names the declaration leaves out are removed. A name declared twice is an error
    naming it. Without `prune` it reads only the names declared: a `:batch` of 1,000
    among 100,000 policies costs what 1,000 do."""
    seen: set[str] = set()
    for spec in declared:
        if spec.name in seen:
            raise ValueError(f"name: {spec.name!r} is declared twice")
        seen.add(spec.name)
    added, changed, unchanged = [], [], []
    for spec in declared:
        old = by_name.get(spec.name)
        if old is None:
            added.append(Tap.of(0, spec))
        elif old.spec != spec:
            changed.append((old, Tap.of(old.id, spec)))
        else:
            unchanged.append(old)
    removed = sorted((t for name, t in by_name.items() if name not in seen), key=lambda t: t.id) if prune else []
    return PolicyPlan(added, changed, removed, unchanged)


def index_name(by_name: dict[str, Tap], old: Tap | None, new: Tap | None) -> None:
    """`by_name` (stored policies by name, kept beside those by id for `plan_changes`)
    with the policy `old` gone and `new` come (a rename is both)."""
    if old is not None and by_name.get(old.spec.name) is old:
        del by_name[old.spec.name]
    if new is not None:
        by_name[new.spec.name] = new


@functools.cache
def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The fields of `model` that have a default, and their default."""
    return {name: f.default for name, f in model.model_fields.items() if not f.is_required()}
