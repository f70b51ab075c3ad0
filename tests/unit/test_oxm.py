"""vtap's OXM encoder writes exactly the bytes os-ken's would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vtap.model.rules import match
from vtap.openflow.oxm import encode_match


def _osken(m) -> bytes:
    buf = bytearray()
    parser.OFPMatch(**dict(m)).serialize(buf, 0)
    return bytes(buf)


macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
ipv4 = st.binary(min_size=4, max_size=4).map(lambda b: ".".join(str(x) for x in b))
fields = st.fixed_dictionaries(
    {},
    optional={
        "in_port": st.integers(1, 0xFFFFFF00),
        "eth_dst": st.one_of(macs, st.tuples(macs, macs)),
        "eth_src": macs,
        "eth_type": st.just(0x0800),
        "vlan_vid": st.integers(0, 4095).map(lambda v: v | 0x1000),
        "ip_proto": st.sampled_from([6, 17]),
        "ipv4_src": st.one_of(ipv4, st.tuples(ipv4, st.just("255.255.255.0"))),
        "ipv4_dst": ipv4,
        "tcp_dst": st.integers(0, 65535),
        "ipv6_src": st.just("2001:db8::1"),
    },
)


@given(fields)
def test_same_bytes_as_osken(f):
    m = match(**f)
    assert encode_match(m) == _osken(m)


def test_empty_match():
    assert encode_match(()) == _osken(())
