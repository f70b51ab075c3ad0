"""Switches configured over OVSDB (`vtap serve --tunnels ovsdb --ovsdb tcp:…`): the lab's
OVS serves its database on TCP, as a compute node's does, and the controller makes the
tunnel ports there through ovsdbapp — with no ovs-vsctl call (its PATH holds a recording
ovs-vsctl) — while a tunnel policy needs them, and removes them after the last one. The
node's own step (address, route, neighbour), which OVSDB cannot hold, comes from
`GET /api/v1/tunnels`; run, the copies reach the collector.

`linear,3`: h1 on s1, h2 on s2, h3 on s3 (the collector)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.integration.harness import Lab, create_tap, delete_tap, ip, mac, traffic, wait_tap
from tests.waiting import wait_until
from vtap.lab.collector import decap
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ovsdb")
    shim = workdir / "bin"
    shim.mkdir()
    record = workdir / "ovs-vsctl-calls"
    (shim / "ovs-vsctl").write_text(f'#!/bin/sh\necho "$@" >> {record}\nexec {shutil.which("ovs-vsctl")} "$@"\n')
    (shim / "ovs-vsctl").chmod(0o755)
    lab = Lab(parse_topo("linear,3"), workdir, ovsdb=True, ctl_env={"PATH": f"{shim}:{os.environ['PATH']}"})
    lab.record = record
    lab.net.pingAll(timeout="1")
    yield lab
    lab.close()


def tunnel_ports(lab: Lab) -> set[str]:
    return {p for sw in lab.net.switches for p in lab.ovs.vsctl("list-ports", sw.name).split() if "-" in p
            and p.split("-")[-1] in ("gre", "erspan1", "erspan2", "vxlan", "geneve")}


def test_tunnel_ports_come_over_ovsdb_with_the_policy_and_go_with_it(lab):
    assert tunnel_ports(lab) == set() and lab.ctl.get("/api/v1/tunnels") == []  # no tunnel policy, no ports
    tap = create_tap(lab, name="ovsdb-gre", src_ip=ip(1), dst_ip=ip(2), ip_proto="udp", monitor_ip=ip(3),
                     transport="gre", tunnel_key=5)
    want = {f"{sw.name}-{k}" for sw in lab.net.switches for k in ("gre", "erspan1", "erspan2", "vxlan", "geneve")}
    wait_until(lambda: tunnel_ports(lab) == want, 30, interval=0.5, message=lambda: str(tunnel_ports(lab)))
    setup = wait_until(lambda: (s := lab.ctl.get("/api/v1/tunnels")) and all(x["ports_made"] for x in s) and s, 30)
    assert {x["mode"] for x in setup} == {"ovsdb"} and len(setup) == 3
    wait_tap(lab, tap["id"], timeout=30)
    # The node's step, as its operator would run it (here the lab's OVS is the node's).
    for switch in setup:
        for step in switch["steps"]:
            subprocess.run(step.split(), check=True, capture_output=True, env=os.environ)
    cap = Capture(lab.net["h3"], lab.workdir / "ovsdb-col.pcap").start()
    try:
        got = traffic(lab, "h1", Flow(mac(1), mac(2), ip(1), ip(2), "udp", 4000, 5001), "ovsdb", 10, ["h2"])["h2"]
    finally:
        outer = [d for d in (decap(f) for _, f in cap.stop()) if d and (marked(d[2]) or "").startswith("ovsdb:")]
    assert len(got) == 10 and [(k, key) for k, key, _ in outer] == [("gre", 5)] * 10
    assert [inner for _, _, inner in outer] == got
    delete_tap(lab, tap["id"])
    wait_until(lambda: tunnel_ports(lab) == set(), 30, interval=0.5, message=lambda: str(tunnel_ports(lab)))
    assert lab.ctl.get("/api/v1/tunnels") == []
    assert not lab.record.exists(), lab.record.read_text()  # the controller never ran ovs-vsctl
