"""vtap's LLDP frames, built and read with struct offsets, against os-ken's packet
library as the reference: the same bytes out, the same claim read from any LLDP frame
os-ken builds, and nothing read where os-ken reads nothing (truncated, malformed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, lldp, packet

from vtap.control.discovery import (
    CHASSIS_PREFIX,
    NONCE_BYTES,
    PROOF_OUI,
    PROOF_SUBTYPE,
    TAG_BYTES,
    LldpClaim,
    _tag,
    lldp_frame,
    parse_lldp,
)

macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


def reference_frame(tlvs: list, src: str = "02:00:00:00:00:01") -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=lldp.LLDP_MAC_NEAREST_BRIDGE, src=src, ethertype=0x88CC))
    pkt.add_protocol(lldp.lldp(tuple(tlvs)))
    pkt.serialize()
    return bytes(pkt.data)


def reference_parse(data: bytes) -> LldpClaim | None:
    """What vtap read from a frame with os-ken's parser (before it read them itself)."""
    try:
        frame = packet.Packet(data).get_protocol(lldp.lldp)
    except Exception:
        return None
    if frame is None or len(frame.tlvs) < 2:
        return None
    chassis, port = frame.tlvs[0], frame.tlvs[1]
    if not isinstance(chassis, lldp.ChassisID) or not chassis.chassis_id.startswith(CHASSIS_PREFIX):
        return None
    try:
        claim = LldpClaim(int(chassis.chassis_id[len(CHASSIS_PREFIX):], 16), int(port.port_id), chassis.chassis_id, port.port_id)
    except (ValueError, AttributeError):
        return None
    for tlv in frame.tlvs[2:]:
        if isinstance(tlv, lldp.OrganizationallySpecific) and tlv.oui == PROOF_OUI and tlv.subtype == PROOF_SUBTYPE:
            info = bytes(tlv.info)
            if len(info) == NONCE_BYTES + TAG_BYTES:
                return LldpClaim(claim.dpid, claim.port, claim.chassis, claim.port_id, info[:NONCE_BYTES], info[NONCE_BYTES:])
    return claim


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 32 - 1), macs, st.binary(min_size=32, max_size=32),
       st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES))
def test_a_frame_is_byte_for_byte_the_one_os_ken_builds_and_reads_back_as_its_claim(dpid, port_no, mac, key, nonce):
    chassis, port_id = CHASSIS_PREFIX + b"%016x" % dpid, b"%d" % port_no
    expected = reference_frame([
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED, chassis_id=chassis),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=port_id),
        lldp.TTL(ttl=120),
        lldp.OrganizationallySpecific(oui=PROOF_OUI, subtype=PROOF_SUBTYPE, info=nonce + _tag(key, chassis, port_id, nonce)),
        lldp.End(),
    ], mac)
    frame = lldp_frame(dpid, port_no, mac, key, nonce)
    assert frame == expected
    assert parse_lldp(frame) == reference_parse(frame) == LldpClaim(dpid, port_no, chassis, port_id, nonce,
                                                                    _tag(key, chassis, port_id, nonce))


chassis_ids = st.one_of(st.binary(min_size=1, max_size=40),
                        st.text("0123456789abcdefx ", min_size=0, max_size=20).map(lambda t: CHASSIS_PREFIX + t.encode()))
port_ids = st.one_of(st.binary(min_size=1, max_size=12), st.integers(-5, 2 ** 40).map(lambda n: b"%d" % n))
org_tlvs = st.builds(lambda oui, sub, info: lldp.OrganizationallySpecific(oui=oui, subtype=sub, info=info),
                     st.one_of(st.just(PROOF_OUI), st.binary(min_size=3, max_size=3)),
                     st.one_of(st.just(PROOF_SUBTYPE), st.integers(0, 255)),
                     st.binary(min_size=0, max_size=40))
other_tlvs = st.one_of(org_tlvs, st.builds(lambda n: lldp.SystemName(system_name=n), st.binary(min_size=1, max_size=30)),
                       st.builds(lambda d: lldp.PortDescription(port_description=d), st.binary(min_size=1, max_size=30)))


@settings(max_examples=400, deadline=None)
@given(chassis_ids, st.integers(1, 7), port_ids, st.integers(1, 7), st.lists(other_tlvs, max_size=4), st.integers(0, 200))
def test_any_lldp_frame_os_ken_builds_reads_as_os_ken_read_it_whole_or_cut(chassis, chassis_sub, port_id, port_sub, rest, cut):
    tlvs = [lldp.ChassisID(subtype=chassis_sub, chassis_id=chassis), lldp.PortID(subtype=port_sub, port_id=port_id),
            lldp.TTL(ttl=120), *rest, lldp.End()]
    frame = reference_frame(tlvs)
    assert parse_lldp(frame) == reference_parse(frame)
    if cut < len(lldp.lldp(tuple(tlvs))):  # cut anywhere in its TLVs (not in os-ken's padding): no End, nothing read
        assert parse_lldp(frame[:14 + cut]) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_bytes_that_are_not_an_lldp_frame_read_as_nothing(data):
    assert parse_lldp(data) is None or parse_lldp(data) == reference_parse(data)
    assert parse_lldp(data[:12] + b"\x08\x00" + data[14:]) is None  # not LLDP by its type


def test_a_packet_in_is_told_apart_by_its_ethernet_type_without_parsing_it():
    from vtap.control.relay import packet_in_reason
    from vtap.control.discovery import is_lldp

    eth = b"\xff" * 6 + b"\x02" + b"\x00" * 5
    assert is_lldp(lldp_frame(1, 1, "02:00:00:00:00:01", b"k" * 32, b"n" * 8)) and not is_lldp(eth + b"\x08\x06" + b"\x00" * 28)
    assert packet_in_reason(eth + b"\x08\x06" + b"\x00" * 28) == "arp"
    ns = eth + b"\x86\xdd" + bytes(4) + b"\x00\x20\x3a\xff" + bytes(32) + bytes((135,)) + bytes(23)
    assert packet_in_reason(ns) == "nd" and packet_in_reason(ns[:54]) == "other"
    assert packet_in_reason(eth + b"\x08\x00" + bytes(40)) == "other"
    assert packet_in_reason(eth[:13]) == "unparsable"
