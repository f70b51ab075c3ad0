"""The TaaS API (/v2.0) on a controller with known hosts and no switches: Neutron's
shapes, fields, checks and errors, resources held as policies, projects as scopes.
The real clients against a real lab: tests/integration/test_openstack.py."""

from __future__ import annotations

import httpx
import pytest

from vtap.api.app import create_app
from vtap.api.auth import Tokens
from vtap.api.guard import Guard
from vtap.control.controller import Controller
from vtap.model import audit
from vtap.model.access import Role, Scope
from vtap.model.network import Host
from vtap.model.taas import port_id
from vtap.store.sqlite import Store

MACS = [f"00:00:00:00:00:0{i}" for i in range(1, 5)]


@pytest.fixture
async def api(tmp_path):
    store = Store(tmp_path)
    store.save_hosts([Host(mac, (f"10.0.0.{i + 1}",), 0xA, i + 1) for i, mac in enumerate(MACS)])
    ctl = Controller(store)
    tokens = Tokens(store)
    app = create_app(ctl, tokens)
    _, admin = await tokens.mint("admin", Role.ADMIN, None, None)
    _, ops = await tokens.mint("ops", Role.OPERATOR, Scope(sources=("10.0.0.0/31",), monitors=("10.0.0.2",)), None)
    _, viewer = await tokens.mint("view", Role.VIEWER, None, None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client, ctl, {"admin": admin, "ops": ops, "viewer": viewer}


def h(token: str) -> dict:
    return {"X-Auth-Token": token}


async def test_ports_are_hosts_with_stable_ids_and_neutrons_filters(api):
    client, _, tok = api
    ports = (await client.get("/v2.0/ports", headers=h(tok["admin"]))).json()["ports"]
    assert [p["mac_address"] for p in ports] == MACS
    assert ports[0]["id"] == port_id(MACS[0]) and ports[0]["fixed_ips"] == [{"subnet_id": "", "ip_address": "10.0.0.1"}]
    assert ports[0]["binding:host_id"] == "000000000000000a" and ports[0]["name"] == "10.0.0.1"
    one = (await client.get("/v2.0/ports", params={"fixed_ips": "ip_address=10.0.0.3"}, headers=h(tok["admin"]))).json()
    assert [p["mac_address"] for p in one["ports"]] == [MACS[2]]
    by_name = (await client.get("/v2.0/ports", params={"name": "10.0.0.2"}, headers=h(tok["admin"]))).json()
    assert [p["mac_address"] for p in by_name["ports"]] == [MACS[1]]
    missing = await client.get("/v2.0/ports/not-a-uuid", headers=h(tok["admin"]))
    assert missing.status_code == 404 and missing.json()["NeutronError"]["type"] == "PortNotFound"
    # A project sees the ports of its scope: sources 10.0.0.0/31 and monitor 10.0.0.2.
    mine = (await client.get("/v2.0/ports", headers=h(tok["ops"]))).json()["ports"]
    assert [p["mac_address"] for p in mine] == MACS[:2]


async def test_no_token_is_neutrons_401(api):
    client, _, _ = api
    resp = await client.get("/v2.0/taas/tap_services")
    assert resp.status_code == 401 and resp.json()["NeutronError"]["type"] == "HTTPUnauthorized"


async def test_a_service_and_its_flow_are_policies_and_go_together(api):
    client, ctl, tok = api
    svc = await client.post("/v2.0/taas/tap_services", headers=h(tok["ops"]),
                            json={"tap_service": {"name": "svc", "port_id": port_id(MACS[1])}})
    assert svc.status_code == 201, svc.text
    s = svc.json()["tap_service"]
    assert (s["name"], s["description"], s["port_id"], s["status"]) == ("svc", "", port_id(MACS[1]), "ACTIVE")
    assert s["tenant_id"] == s["project_id"] and s["vtap_policies"] == [f"taas-svc-{s['id'][:8]}"]
    flow = await client.post("/v2.0/taas/tap_flows", headers=h(tok["ops"]), json={"tap_flow": {
        "name": "f1", "tap_service_id": s["id"], "source_port": port_id(MACS[0]), "direction": "BOTH",
        "vlan_filter": "9,18"}})
    assert flow.status_code == 201, flow.text
    f = flow.json()["tap_flow"]
    assert (f["direction"], f["vlan_filter"], f["status"]) == ("BOTH", "9,18", "DOWN")  # no switch: not installed
    specs = {t.spec.name: t.spec for t in ctl.taps.values()}
    p = specs[f"taas-flow-{f['id'][:8]}-vlan9"]
    assert (p.src_mac, p.direction, p.vlan_id, p.monitor_mac, p.enabled) == (MACS[0], "both", 9, MACS[1], True)
    assert specs[f"taas-svc-{s['id'][:8]}"].enabled is False  # the service copies nothing by itself
    listed = (await client.get("/v2.0/taas/tap_flows", headers=h(tok["viewer"]))).json()["tap_flows"]
    assert listed == []  # a viewer without a scope sees no project's resources
    listed = (await client.get("/v2.0/taas/tap_flows", params={"name": "f1"}, headers=h(tok["admin"]))).json()
    assert [x["id"] for x in listed["tap_flows"]] == [f["id"]]
    # vtap's own API shows the policies and will not change them.
    tap_id = next(t.id for t in ctl.taps.values() if t.spec.name == p.name)
    gone = await client.delete(f"/api/v1/taps/{tap_id}", headers={"Authorization": f"Bearer {tok['admin']}"})
    assert gone.status_code == 409 and "/v2.0/taas/tap_flows/" in gone.text
    renamed = await client.put(f"/v2.0/taas/tap_flows/{f['id']}", headers=h(tok["ops"]), json={"tap_flow": {"name": "g"}})
    assert renamed.status_code == 200 and renamed.json()["tap_flow"]["name"] == "g"
    assert all(t.spec.taas.name == "g" for t in ctl.taps.values() if t.spec.taas.kind == "tap_flow")
    assert (await client.delete(f"/v2.0/taas/tap_services/{s['id']}", headers=h(tok["ops"]))).status_code == 204
    assert ctl.taps == {}  # the service took its flow with it


@pytest.mark.parametrize("body, status, kind, words", [
    ({}, 400, "HTTPBadRequest", "Unable to find 'tap_flow' in request body"),
    ({"tap_flow": {"direction": "IN"}}, 400, "HTTPBadRequest", "Required attribute 'tap_service_id' not specified"),
    ({"tap_flow": {"tap_service_id": "x", "source_port": "y", "direction": "SIDEWAYS"}}, 400, "HTTPBadRequest",
     "SIDEWAYS is not in valid_values"),
    ({"tap_flow": {"tap_service_id": "x", "source_port": "y", "direction": "IN", "vlan_filter": "9,,1"}}, 400,
     "HTTPBadRequest", "Invalid input for vlan_filter"),
    ({"tap_flow": {"tap_service_id": "x", "source_port": "y", "direction": "IN", "status": "ACTIVE"}}, 400,
     "HTTPBadRequest", "Attribute 'status' not allowed in POST"),
    ({"tap_flow": {"tap_service_id": "x", "source_port": "y", "direction": "IN", "foo": 1}}, 400, "HTTPBadRequest",
     "Unrecognized attribute(s) 'foo'"),
    ({"tap_flow": {"tap_service_id": "nope", "source_port": "y", "direction": "IN"}}, 404, "TapServiceNotFound",
     "Tap Service  nope does not exist"),
])
async def test_bad_flows_get_neutrons_answers(api, body, status, kind, words):
    client, ctl, tok = api
    resp = await client.post("/v2.0/taas/tap_flows", headers=h(tok["admin"]), json=body)
    err = resp.json()["NeutronError"]
    assert (resp.status_code, err["type"]) == (status, kind) and words in err["message"], resp.text
    assert ctl.taps == {}


async def test_a_port_outside_the_project_is_not_found_and_nothing_is_made(api):
    client, ctl, tok = api
    svc = await client.post("/v2.0/taas/tap_services", headers=h(tok["ops"]),
                            json={"tap_service": {"port_id": port_id(MACS[1])}})
    assert svc.status_code == 201
    outside = await client.post("/v2.0/taas/tap_flows", headers=h(tok["ops"]), json={"tap_flow": {
        "tap_service_id": svc.json()["tap_service"]["id"], "source_port": port_id(MACS[3]), "direction": "IN"}})
    assert outside.status_code == 404 and outside.json()["NeutronError"]["type"] == "PortNotFound"
    assert len(ctl.taps) == 1


async def test_mirrors_tunnel_each_direction_and_tunnel_ids_are_unique(api):
    client, ctl, tok = api
    body = {"tap_mirror": {"name": "m1", "port_id": port_id(MACS[0]), "directions": {"IN": "101", "OUT": 102},
                           "remote_ip": "10.0.0.9", "mirror_type": "gre"}}
    made = await client.post("/v2.0/taas/tap_mirrors", headers=h(tok["admin"]), json=body)
    assert made.status_code == 201, made.text
    m = made.json()["tap_mirror"]
    assert m["directions"] == {"IN": 101, "OUT": 102} and "status" not in m
    keys = sorted((t.spec.direction, t.spec.transport, t.spec.tunnel_key, t.spec.monitor_ip) for t in ctl.taps.values())
    assert keys == [("forward", "gre", 102, "10.0.0.9"), ("reverse", "gre", 101, "10.0.0.9")]
    again = await client.post("/v2.0/taas/tap_mirrors", headers=h(tok["admin"]), json=body)
    assert again.status_code == 409 and again.json()["NeutronError"]["type"] == "TapMirrorTunnelConflict"
    comma = {"tap_mirror": {**body["tap_mirror"], "directions": {"IN": "201,OUT=202"}}}
    bad = await client.post("/v2.0/taas/tap_mirrors", headers=h(tok["admin"]), json=comma)
    assert bad.status_code == 400 and "--directions IN=101 --directions OUT=102" in bad.json()["NeutronError"]["message"]


async def test_only_name_and_description_change(api):
    client, _, tok = api
    svc = (await client.post("/v2.0/taas/tap_services", headers=h(tok["admin"]),
                             json={"tap_service": {"port_id": port_id(MACS[1])}})).json()["tap_service"]
    resp = await client.put(f"/v2.0/taas/tap_services/{svc['id']}", headers=h(tok["admin"]),
                            json={"tap_service": {"port_id": port_id(MACS[2])}})
    assert resp.status_code == 400 and "Cannot update read-only attribute port_id" in resp.text


async def test_each_policy_a_resource_changes_has_its_own_audit_record(api):
    """A TaaS request audits itself and each policy it made, renamed or removed, with
    the policy as it was and became (the policies' history stays whole), through the
    guard that writes the audit (`api/guard.py`)."""
    _, ctl, tok = api
    guarded = Guard(create_app(ctl, Tokens(ctl.store)), ctl.store, Tokens(ctl.store), ["t"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t") as client:
        svc = (await client.post("/v2.0/taas/tap_services", headers=h(tok["admin"]),
                                 json={"tap_service": {"name": "svc", "port_id": port_id(MACS[1])}})).json()["tap_service"]
        flow = (await client.post("/v2.0/taas/tap_flows", headers=h(tok["admin"]), json={"tap_flow": {
            "name": "f1", "tap_service_id": svc["id"], "source_port": port_id(MACS[0]), "direction": "IN"}})).json()["tap_flow"]
        (tap,) = [t for t in ctl.taps.values() if t.spec.taas.kind == "tap_flow"]
        await client.put(f"/v2.0/taas/tap_flows/{flow['id']}", headers=h(tok["admin"]), json={"tap_flow": {"name": "g"}})
        await client.delete(f"/v2.0/taas/tap_flows/{flow['id']}", headers=h(tok["admin"]))
        records = await ctl.store.audit_records(target=f"tap:{tap.id}")
        assert [r["action"] for r in records] == ["tap.create", "tap.update", "tap.delete"]
        assert records[0]["before"] is None and records[0]["after"] == tap.spec.model_dump(mode="json")
        assert (records[1]["before"]["taas"]["name"], records[1]["after"]["taas"]["name"]) == ("f1", "g")
        assert records[2]["before"]["taas"]["name"] == "g" and records[2]["after"] is None
        assert audit.verify(await ctl.store.audit_records())[0]
