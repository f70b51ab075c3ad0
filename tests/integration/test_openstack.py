"""The real OpenStack clients against vtap's TaaS API (`tree,2,2`, `vtap serve --tunnels
local`): python-openstackclient's `openstack tap service|flow|mirror ...` and openstacksdk,
configured as the README says (`admin_token`, endpoint `.../v2.0`), with real packets:
the monitor port gets exact copies of the tapped port's traffic both ways, a mirror's
GRE copies carry its tunnel ids, and another project sees none of it.

s2 holds h1 (the tapped VM) and h2 (the monitor port); s3 holds h3 (its peer) and h4
(a remote collector)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openstack
import pytest

from tests.integration.harness import Lab, ip, mac, traffic, vtap_rules
from tests.waiting import wait_until
from vtap.lab.collector import decap
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked

OPENSTACK = str(Path(sys.executable).with_name("openstack"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("tree,2,2"), tmp_path_factory.mktemp("openstack"), serve_args=("--tunnels", "local"))
    lab.net.pingAll(timeout="1")  # every host known: a port
    yield lab
    lab.close()


def cli(lab: Lab, *args: str, token: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`openstack ...` as a user runs it, configured by environment (no Keystone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env |= {"OS_AUTH_TYPE": "admin_token", "OS_TOKEN": token or lab.ctl.token, "OS_ENDPOINT": f"{lab.ctl.api}/v2.0"}
    res = subprocess.run([OPENSTACK, *args], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res


def cli_json(lab: Lab, *args: str, **kw):
    return json.loads(cli(lab, *args, "-f", "json", **kw).stdout)


def udp(src: int, dst: int, dport: int) -> Flow:
    return Flow(mac(src), mac(dst), ip(src), ip(dst), "udp", 4000, dport)


def flows_active(lab: Lab) -> list[dict] | None:
    rows = cli_json(lab, "tap", "flow", "list")
    return rows if rows and all(r["Status"] == "ACTIVE" for r in rows) else None


def test_a_tap_flow_made_with_the_cli_copies_both_directions_exactly(lab):
    svc = cli_json(lab, "tap", "service", "create", "--port", ip(2), "--name", "svc")
    assert svc["port_id"] == next(p["ID"] for p in cli_json(lab, "port", "list") if p["MAC Address"] == mac(2))
    flow = cli_json(lab, "tap", "flow", "create", "--port", ip(1), "--tap-service", "svc", "--direction", "BOTH",
                    "--name", "f1")
    assert (flow["direction"], flow["tap_service_id"]) == ("BOTH", svc["id"])
    rows = wait_until(lambda: flows_active(lab), 20, interval=0.5)
    assert [(r["Name"], r["Direction"]) for r in rows] == [("f1", "BOTH")]
    out = traffic(lab, "h1", udp(1, 3, 5001), "os-out", 30, ["h3", "h2"])
    back = traffic(lab, "h3", udp(3, 1, 5002), "os-in", 30, ["h1", "h2"])
    assert len(out["h3"]) == 30 and out["h2"] == out["h3"]  # what the port sends, byte for byte
    assert len(back["h1"]) == 30 and back["h2"] == back["h1"]  # and what it receives
    # The flow is vtap policies, named after it, in vtap's own API.
    policies = [t["name"] for t in lab.ctl.get("/api/v1/taps") if (t.get("taas") or {}).get("id") == flow["id"]]
    assert policies == [f"taas-flow-{flow['id'][:8]}"]
    # A VLAN filter: one policy per VLAN; untagged traffic is not its business.
    vlans = cli_json(lab, "tap", "flow", "create", "--port", ip(1), "--tap-service", "svc", "--direction", "OUT",
                     "--vlan-filter", "9,18", "--name", "f2")
    assert vlans["vlan_filter"] == "9,18" and len(vlans["vtap_policies"]) == 2
    cli(lab, "tap", "flow", "delete", "f2")
    # Deleting the service deletes its flows and their rules.
    cli(lab, "tap", "service", "delete", "svc")
    assert cli_json(lab, "tap", "flow", "list") == [] and cli_json(lab, "tap", "service", "list") == []
    assert not [t for t in lab.ctl.get("/api/v1/taps") if t.get("taas")]
    wait_until(lambda: vtap_rules(lab) == [], 15, interval=0.5, message=lambda: str(vtap_rules(lab)))
    after = traffic(lab, "h1", udp(1, 3, 5001), "os-gone", 10, ["h3", "h2"])
    assert len(after["h3"]) == 10 and after["h2"] == []


def test_a_tap_mirror_sends_gre_copies_with_its_tunnel_ids(lab):
    m = cli_json(lab, "tap", "mirror", "create", "--port", ip(3), "--directions", "IN=101", "--directions", "OUT=102",
                 "--remote-ip", ip(4), "--mirror-type", "gre", "--name", "m1")
    assert m["directions"] == {"IN": 101, "OUT": 102} and m["remote_ip"] == ip(4)
    wait_until(lambda: cli_json(lab, "tap", "mirror", "show", "m1").get("vtap_status") == "ACTIVE", 30, interval=0.5,
               message=lambda: str(cli_json(lab, "tap", "mirror", "show", "m1")) + str(lab.ctl.get("/api/v1/taps")))
    cap = Capture(lab.net["h4"], lab.workdir / "mirror.pcap").start()
    try:
        got_in = traffic(lab, "h1", udp(1, 3, 6001), "m-in", 10, ["h3"])["h3"]
        got_out = traffic(lab, "h3", udp(3, 1, 6002), "m-out", 10, ["h1"])["h1"]
    finally:
        outer = [d for d in (decap(f) for _, f in cap.stop()) if d]

    def copies(key: int, sender: int, tag: str) -> list[bytes]:
        """The GRE copies with `key` of the UDP frames `sender` sent (not, say, ICMP errors quoting them)."""
        src = bytes.fromhex(mac(sender).replace(":", ""))
        return [inner for kind, k, inner in outer if (kind, k) == ("gre", key) and inner[6:12] == src
                and inner[23] == 17 and (marked(inner) or "").startswith(tag + ":")]

    assert len(got_in) == 10 and len(got_out) == 10
    assert copies(101, 1, "m-in") == got_in  # into the port: IN, byte for byte
    assert copies(102, 3, "m-out") == got_out  # out of it: OUT
    assert copies(102, 1, "m-in") == [] and copies(101, 3, "m-out") == []  # each direction its own key
    bad = cli(lab, "tap", "mirror", "create", "--port", ip(3), "--directions", "IN=101", "--remote-ip", ip(4),
              "--mirror-type", "gre", check=False)
    assert bad.returncode == 1 and "Tap Mirror with tunnel_id 101 already exists" in bad.stderr
    cli(lab, "tap", "mirror", "delete", "m1")
    assert cli_json(lab, "tap", "mirror", "list") == []


def test_openstacksdk_does_the_same(lab):
    conn = openstack.connect(auth_type="admin_token", auth={"endpoint": f"{lab.ctl.api}/v2.0", "token": lab.ctl.token},
                             load_yaml_config=False, load_envvars=False)
    ports = {p.mac_address: p for p in conn.network.ports()}
    svc = conn.network.create_tap_service(name="sdk-svc", port_id=ports[mac(2)].id)
    flow = conn.network.create_tap_flow(name="sdk-flow", tap_service_id=svc.id, source_port=ports[mac(1)].id,
                                        direction="OUT")
    assert [f.name for f in conn.network.tap_flows()] == ["sdk-flow"]
    wait_until(lambda: conn.network.get_tap_flow(flow.id).status == "ACTIVE", 20, interval=0.5)
    got = traffic(lab, "h1", udp(1, 3, 5003), "sdk", 20, ["h3", "h2"])
    assert len(got["h3"]) == 20 and got["h2"] == got["h3"]
    assert conn.network.find_tap_service("sdk-svc", ignore_missing=False).id == svc.id
    conn.network.delete_tap_service(svc)
    assert list(conn.network.tap_flows()) == [] and list(conn.network.tap_services()) == []


def test_another_project_sees_none_of_it_and_cannot_tap_its_ports(lab):
    svc = cli_json(lab, "tap", "service", "create", "--port", ip(2), "--name", "theirs")
    other = lab.ctl.http.post("/api/v1/tokens", json={"name": "other-project", "role": "operator", "scope": {
        "sources": [f"{ip(3)}/32"], "monitors": [ip(4)]}}).json()["token"]
    assert cli_json(lab, "tap", "service", "list", token=other) == []
    assert {p["MAC Address"] for p in cli_json(lab, "port", "list", token=other)} == {mac(3), mac(4)}
    refused = cli(lab, "tap", "flow", "create", "--port", svc["port_id"], "--tap-service", svc["id"], "--direction",
                  "IN", token=other, check=False)
    assert refused.returncode == 1 and "No Port found for" in refused.stderr  # the client found none: not its port
    mine = cli_json(lab, "tap", "service", "create", "--port", ip(4), "--name", "mine", token=other)
    flow = cli_json(lab, "tap", "flow", "create", "--port", ip(3), "--tap-service", "mine", "--direction", "IN",
                    token=other)
    assert flow["project_id"] == mine["project_id"] != svc["project_id"]
    audit = lab.ctl.http.get("/api/v1/audit", params={"target": f"taas:{flow['id']}"}).json()
    assert [(r["actor"], r["action"], r["result"]) for r in audit] == [("other-project", "taas.tap_flow.create", "201")]
    cli(lab, "tap", "service", "delete", "mine", token=other)
    cli(lab, "tap", "service", "delete", "theirs")
