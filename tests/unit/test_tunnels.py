"""Remote collectors on the strict fake fabric: a tap point's copy leaves in its switch's
tunnel port with the collector and the policy's key; the outer packet, back in on the
switch's LOCAL port, is forwarded to the collector and never copied (compile/tunnels.py).
Real OVS runs the same rules in tests/integration/test_tunnels.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from tests.unit.fabric import Fabric, view_from_topo
from tests.unit.test_taps import at, clean, ip, mac, send, tap
from vtap.compile.network import compile_network
from vtap.compile.pipeline import violations
from vtap.compile.tunnels import route_mark
from vtap.lab.topos import parse_topo
from vtap.model.network import OFPP_LOCAL, TUNNEL_KINDS, Port
from vtap.model.policy import TapSpec
from vtap.model.state import PolicyState
from vtap.model.view import NetworkView

TUNNEL_PORT_BASE = 100


def with_tunnel_ports(view: NetworkView, kinds=TUNNEL_KINDS) -> NetworkView:
    """Every switch with its LOCAL port (named after it) and vtap's tunnel ports."""
    devices = {}
    for dpid, dev in view.devices.items():
        name = f"s{dpid:x}"
        extra = [Port(OFPP_LOCAL, name, f"0a:00:00:00:{dpid >> 8 & 0xff:02x}:{dpid & 0xff:02x}", True)]
        extra += [Port(TUNNEL_PORT_BASE + i, f"{name}-{k}", f"0e:00:00:00:00:{i:02x}", True)
                  for i, k in enumerate(TUNNEL_KINDS) if k in kinds]
        devices[dpid] = replace(dev, ports=dev.ports + tuple(extra))
    return NetworkView(devices=devices, links=view.links, hosts=view.hosts)


def udp(src: int, dst: int, sport: int = 4000) -> dict:
    return {"eth_src": mac(src), "eth_dst": mac(dst), "eth_type": 0x0800, "ipv4_src": ip(src), "ipv4_dst": ip(dst),
            "ip_proto": 17, "udp_src": sport, "udp_dst": 53}


def build(taps, kinds=TUNNEL_KINDS):
    view = with_tunnel_ports(view_from_topo(parse_topo("fattree,4")), kinds)
    desired, comp = compile_network(view, taps)
    for rules in desired.values():
        for f in rules.flows:
            assert violations(f) == [], str(f)
    return Fabric(view, desired), comp


def tunnelled(fab: Fabric, trace, dpid: int) -> list[dict]:
    ports = {p: k for k, p in fab.view.devices[dpid].tunnel_ports().items()}
    return [dict(f, kind=ports[p]) for d, p, f in trace.frames if d == dpid and p in ports]


@pytest.mark.parametrize("transport,version,kind", [("gre", None, "gre"), ("erspan", None, "erspan1"),
                                                    ("erspan", 2, "erspan2"), ("vxlan", None, "vxlan"),
                                                    ("geneve", None, "geneve")])
def test_the_copy_enters_the_tap_switchs_tunnel_port_with_collector_and_key(transport, version, kind):
    fab, comp = build([tap(7, src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(9), transport=transport,
                           erspan_version=version)])
    assert comp.states[7].state == PolicyState.COMPILED
    pkt = udp(1, 16)
    trace = send(fab, 1, pkt)
    assert [clean(f) for f in at(fab, 16, trace)] == [pkt]
    assert at(fab, 9, trace) == []  # no copy VLAN, no direct copy: only the tunnel
    d = fab.view.hosts[mac(1)].dpid
    (copy,) = tunnelled(fab, trace, d)
    assert (copy["kind"], copy["tun_ipv4_dst"], copy["tunnel_id"], copy["pkt_mark"]) == (kind, ip(9), 7, route_mark(d))
    assert clean({k: v for k, v in copy.items() if k not in ("kind", "tun_ipv4_dst", "tunnel_id", "pkt_mark")}) == pkt


def test_the_outer_packet_from_local_goes_to_the_collector_and_is_not_copied():
    fab, _ = build([tap(1, src_ip=ip(1), monitor_ip=ip(9), transport="vxlan"),
                    tap(2, dst_ip=ip(9), monitor_ip=ip(5))])  # a policy on traffic to the collector: outer packets skip it
    d = fab.view.hosts[mac(1)].dpid
    local = fab.view.devices[d].bridge
    outer = {"eth_src": local.hw_addr, "eth_dst": mac(9), "eth_type": 0x0800, "ipv4_src": "10.255.0.1",
             "ipv4_dst": ip(9), "ip_proto": 17, "udp_src": 50000, "udp_dst": 4789}
    trace = fab.inject(d, OFPP_LOCAL, outer)
    assert [clean(f) for f in at(fab, 9, trace)] == [outer]
    assert at(fab, 5, trace) == []


def test_two_keys_to_one_collector_are_two_copies_each_with_its_key():
    fab, _ = build([tap(3, src_ip=ip(1), monitor_ip=ip(9), transport="vxlan"),
                    tap(4, src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(9), transport="vxlan", tunnel_key=4000),
                    tap(5, src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(9), transport="vxlan", tunnel_key=4000)])
    d = fab.view.hosts[mac(1)].dpid
    keys = sorted(c["tunnel_id"] for c in tunnelled(fab, send(fab, 1, udp(1, 16)), d))
    assert keys == [3, 4000]  # 4 and 5 share a key: one copy
    assert sorted(c["tunnel_id"] for c in tunnelled(fab, send(fab, 1, udp(1, 15)), d)) == [3]


def test_a_switch_without_the_tunnel_port_degrades_the_policy_and_a_key_too_large_is_an_error():
    _, comp = build([tap(1, src_ip=ip(1), monitor_ip=ip(9), transport="geneve")], kinds=("vxlan",))
    assert comp.states[1].state == PolicyState.DEGRADED and "no geneve tunnel port" in comp.states[1].reason
    _, comp = build([tap(2000, src_ip=ip(1), monitor_ip=ip(9), transport="erspan")])
    assert comp.states[2000].state == PolicyState.ERROR and "set tunnel_key" in comp.states[2000].reason
    _, comp = build([tap(3, src_ip=ip(1), monitor_ip="192.0.2.9", transport="gre")])
    assert comp.states[3].state == PolicyState.PENDING and "192.0.2.9" in comp.states[3].reason


def test_a_collector_behind_a_gateway_is_reached_through_the_gateways_mac():
    fab, comp = build([tap(1, src_ip=ip(1), monitor_ip="192.0.2.9", monitor_mac=mac(12), transport="gre")])
    assert comp.states[1].state == PolicyState.COMPILED
    d = fab.view.hosts[mac(1)].dpid
    (copy,) = tunnelled(fab, send(fab, 1, udp(1, 16)), d)
    assert copy["tun_ipv4_dst"] == "192.0.2.9"


@pytest.mark.parametrize("body,field", [
    ({"transport": "ipip", "monitor_ip": ip(9)}, "transport"),
    ({"transport": "vxlan", "monitor_ip": ip(9), "tunnel_key": 1 << 24}, "tunnel_key"),
    ({"transport": "erspan", "monitor_ip": ip(9), "tunnel_key": 1024}, "tunnel_key"),
    ({"transport": "gre", "monitor_ip": ip(9), "erspan_version": 2}, "erspan_version"),
    ({"transport": "vxlan", "monitor_mac": mac(9)}, "monitor_ip"),
    ({"transport": "vlan", "monitor_ip": ip(9), "tunnel_key": 5}, "tunnel_key"),
])
def test_bad_tunnel_input_names_the_field(body, field):
    with pytest.raises(ValidationError) as exc:
        TapSpec(name="t", src_ip=ip(1), **body)
    e = exc.value.errors()[0]
    assert e["loc"] == (field,) or field in e["msg"], e
