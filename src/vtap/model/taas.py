"""Neutron's Tap-as-a-Service (TaaS), held as vtap policies: one state, not two.

A TaaS resource is the policies that serve it; each carries the resource's record
(`TaasRef`) in its spec, so the resource survives restarts and failovers as any policy
does, and its status is its policies' status:
- a **tap service** (a monitor port) is one disabled policy naming that port as its
  monitor: it copies nothing by itself;
- a **tap flow** (a source port, a direction as seen from the port, VLANs) is one policy
  per VLAN of its `vlan_filter` (one without a filter), matching the port's MAC, copying
  to its service's port;
- a **tap mirror** (a port, tunnel ids per direction, a remote IP) is one policy per
  direction, tunnelled (GRE, or ERSPAN type II) with that id as its key.

Pure: names, records, and the policies a resource is made of.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

DIRECTIONS = ("IN", "OUT", "BOTH")
MIRROR_TYPES = ("gre", "erspanv1")
VLAN_FILTER_RE = re.compile(r"^([0-9]+(-[0-9]+)?)(,([0-9]+(-[0-9]+)?))*$")  # neutron-lib's
MAX_VLANS = 64  # one policy per VLAN: a flow's filter names at most this many
# As seen from the VM's port: OUT is what it sends (the port's MAC the source), IN what it
# receives (the swapped ends), BOTH both.
POLICY_DIRECTION = {"OUT": "forward", "IN": "reverse", "BOTH": "both"}
NAMESPACE = uuid.UUID("6f1d2a4e-2c1b-5b8e-9a43-7d0e6c2f5a10")  # vtap's, for port and project ids


class TaasRef(BaseModel):
    """The TaaS resource a policy serves, with the resource's own fields (Neutron's names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["tap_service", "tap_flow", "tap_mirror"]
    id: str
    name: str = ""
    description: str = ""
    project_id: str
    port_id: str | None = None  # tap service: the monitor port; tap mirror: the mirrored port
    tap_service_id: str | None = None  # tap flow
    source_port: str | None = None  # tap flow
    direction: Literal["IN", "OUT", "BOTH"] | None = None  # tap flow
    vlan_filter: str | None = None  # tap flow
    # tap mirror: (direction, tunnel id) pairs, sorted; a tuple so that a policy's spec stays hashable
    directions: tuple[tuple[str, int], ...] | None = None
    remote_ip: str | None = None  # tap mirror
    mirror_type: Literal["gre", "erspanv1"] | None = None  # tap mirror


    @field_validator("directions", mode="before")
    @classmethod
    def _pairs(cls, v: object) -> object:
        return tuple(sorted(v.items())) if isinstance(v, dict) else v

    @property
    def tunnel_ids(self) -> dict[str, int]:
        return dict(self.directions or ())


def port_id(mac: str) -> str:
    """A host's Neutron port id: stable per MAC."""
    return str(uuid.uuid5(NAMESPACE, f"port:{mac}"))


def project_id(scope_json: str | None) -> str:
    """A token's project: its scope (tokens with one scope share a project); none: the admins'."""
    return uuid.uuid5(NAMESPACE, f"project:{scope_json or 'admin'}").hex


def parse_vlan_filter(text: str) -> list[int]:
    """The VLAN ids of a filter such as "9,18,27-36"; ValueError saying what is wrong."""
    if not VLAN_FILTER_RE.match(text):
        raise ValueError(f"'{text}' is not a valid input")
    vlans: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        a, b = int(low), int(high or low)
        if a > b or not 0 <= a <= 4095 or not 0 <= b <= 4095:
            raise ValueError(f"'{part}' is not a VLAN id or a range of them (0-4095, low-high)")
        vlans.update(range(a, b + 1))
        if len(vlans) > MAX_VLANS:
            raise ValueError(f"at most {MAX_VLANS} VLAN ids per tap flow (vtap keeps one policy per VLAN)")
    return sorted(vlans)


def tunnel_ids(directions: object) -> dict[str, int]:
    """A mirror's `directions`, checked: {"IN"|"OUT"|"BOTH": int}; ValueError naming the problem.

    The CLI sends `--directions IN=101,OUT=102` as one key, {"IN": "101,OUT=102"}: said so."""
    if not isinstance(directions, dict) or not directions:
        raise ValueError("directions: a map of IN, OUT and/or BOTH to tunnel ids, e.g. {\"IN\": 101, \"OUT\": 102}")
    out = {}
    for key, value in directions.items():
        if key not in DIRECTIONS:
            raise ValueError(f"Unexpected keys supplied: {key}")
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            hint = " (give each direction its own --directions, e.g. --directions IN=101 --directions OUT=102)" \
                if isinstance(value, str) and "=" in value else ""
            raise ValueError(f"'{value}' is not an integer{hint}")
        out[key] = int(value)
    if "BOTH" in out and len(out) > 1:
        raise ValueError("directions: BOTH already covers IN and OUT; give BOTH alone, or IN and/or OUT")
    if len(set(out.values())) != len(out):
        raise ValueError("directions: each direction needs its own tunnel id")
    return out


def status(states: list[str]) -> str:
    """A flow's or mirror's Neutron status from its policies' states."""
    if any(s in ("error", "degraded") for s in states):
        return "ERROR"
    if states and all(s == "active" for s in states):
        return "ACTIVE"
    return "DOWN"


def policy_name(ref: TaasRef, part: str = "") -> str:
    """The policy's name: after its resource (kind and id), and the part it serves."""
    short = {"tap_service": "svc", "tap_flow": "flow", "tap_mirror": "mirror"}[ref.kind]
    return f"taas-{short}-{ref.id[:8]}" + (f"-{part}" if part else "")


def service_specs(ref: TaasRef, monitor_mac: str) -> list:
    """A tap service: one disabled policy naming its port as the monitor."""
    from vtap.model.policy import TapSpec

    return [TapSpec(name=policy_name(ref), description=f"TaaS tap service {ref.name!r}: its monitor port",
                    enabled=False, dst_mac=monitor_mac, monitor_mac=monitor_mac, taas=ref)]


def flow_specs(ref: TaasRef, source_mac: str, monitor_mac: str) -> list:
    """A tap flow: one policy per VLAN of its filter, or one for all traffic of the port."""
    from vtap.model.policy import TapSpec

    assert ref.direction is not None
    common = dict(description=f"TaaS tap flow {ref.name!r}", src_mac=source_mac, direction=POLICY_DIRECTION[ref.direction],
                  monitor_mac=monitor_mac, taas=ref)
    if ref.vlan_filter is None:
        return [TapSpec(name=policy_name(ref), **common)]
    return [TapSpec(name=policy_name(ref, f"vlan{v}"), vlan_id=v, **common) for v in parse_vlan_filter(ref.vlan_filter)]


def mirror_specs(ref: TaasRef, port_mac: str) -> list:
    """A tap mirror: one tunnelled policy per direction, its tunnel id the key."""
    from vtap.model.policy import TapSpec

    assert ref.directions is not None and ref.remote_ip is not None
    transport = {"gre": {"transport": "gre"}, "erspanv1": {"transport": "erspan", "erspan_version": 1}}[ref.mirror_type or "gre"]
    return [TapSpec(name=policy_name(ref, key.lower()), description=f"TaaS tap mirror {ref.name!r}, {key}",
                    src_mac=port_mac, direction=POLICY_DIRECTION[key], monitor_ip=ref.remote_ip, tunnel_key=key_id,
                    taas=ref, **transport)
            for key, key_id in ref.directions]
