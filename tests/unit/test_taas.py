"""TaaS resources as vtap policies (pure): the policies each resource is made of."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from vtap.model.taas import TaasRef, flow_specs, mirror_specs, parse_vlan_filter, service_specs, status, tunnel_ids

A, B = "00:00:00:00:00:01", "00:00:00:00:00:02"


def ref(kind: str, **kw) -> TaasRef:
    return TaasRef(kind=kind, id="0566403b-1111-2222-3333-444455556666", project_id="p", **kw)


@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 20)), min_size=1, max_size=6))
def test_a_vlan_filter_names_each_id_of_its_ranges(parts):
    text = ",".join(f"{a}-{min(a + n, 4095)}" if n else str(a) for a, n in parts)
    want = sorted({v for a, n in parts for v in range(a, min(a + n, 4095) + 1)})
    if len(want) > 64:
        with pytest.raises(ValueError, match="at most 64"):
            parse_vlan_filter(text)
    else:
        assert parse_vlan_filter(text) == want


@pytest.mark.parametrize("text", ["", "9,", "a", "9-", "10-9", "4096", "1;2"])
def test_a_bad_vlan_filter_is_refused(text):
    with pytest.raises(ValueError):
        parse_vlan_filter(text)


def test_every_resources_policies_are_hashable_and_named_after_it():
    """A spec is hashed by the compiler's caches: a mirror's directions are pairs, not a dict."""
    specs = (service_specs(ref("tap_service", port_id="x"), B)
             + flow_specs(ref("tap_flow", direction="IN", vlan_filter="9,18", tap_service_id="s", source_port="y"), A, B)
             + mirror_specs(ref("tap_mirror", directions={"OUT": 2, "IN": 1}, remote_ip="10.0.0.9", mirror_type="erspanv1",
                                port_id="z"), A))
    assert len({hash(s) for s in specs}) == len(specs) == 5
    assert [s.name for s in specs] == ["taas-svc-0566403b", "taas-flow-0566403b-vlan9", "taas-flow-0566403b-vlan18",
                                       "taas-mirror-0566403b-in", "taas-mirror-0566403b-out"]
    flow = specs[1]
    assert (flow.src_mac, flow.direction, flow.vlan_id, flow.monitor_mac) == (A, "reverse", 9, B)  # IN: to the port
    mirror_in = specs[3]
    assert (mirror_in.transport, mirror_in.erspan_version, mirror_in.tunnel_key, mirror_in.direction) == ("erspan", 1, 1, "reverse")
    assert specs[3].taas.tunnel_ids == {"IN": 1, "OUT": 2}
    assert TaasRef.model_validate_json(specs[3].taas.model_dump_json()) == specs[3].taas  # stored and read back


@pytest.mark.parametrize("given_, error", [
    ({"IN": "101,OUT=102"}, "--directions IN=101 --directions OUT=102"),
    ({"SIDE": 1}, "Unexpected keys supplied: SIDE"),
    ({"BOTH": 1, "IN": 2}, "BOTH already covers"),
    ({"IN": 1, "OUT": 1}, "its own tunnel id"),
    ({}, "a map of IN, OUT and/or BOTH"),
    ({"IN": True}, "is not an integer"),
])
def test_bad_directions_say_what_is_wrong(given_, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        tunnel_ids(given_)


def test_directions_from_the_cli_are_strings_and_become_numbers():
    assert tunnel_ids({"IN": "101", "OUT": 102}) == {"IN": 101, "OUT": 102}


@pytest.mark.parametrize("states, want", [(["active", "active"], "ACTIVE"), (["active", "pending"], "DOWN"),
                                          (["active", "degraded"], "ERROR"), ([], "DOWN"), (["error"], "ERROR")])
def test_status_of_a_resource_is_its_policies(states, want):
    assert status(states) == want
