"""Cluster mode with three etcd members (`fattree,4`, three `vtap serve` instances): the
instances follow whichever member answers; one member down changes nothing for them."""

from __future__ import annotations

import pytest

from tests.integration.harness import Lab, traffic
from tests.integration.test_cluster import FLOW, cluster_of, create, wait_status
from tests.waiting import wait_until
from vtap.lab.topos import parse_topo


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("fattree,4"), tmp_path_factory.mktemp("cluster-etcd3"), cluster=3, etcd_members=3)
    lab.net.pingAll(timeout="1")
    yield lab
    lab.close()


def test_one_leader_and_policies_through_any_instance_with_an_etcd_member_down(lab):
    assert lab.etcd.url.count(",") == 2
    infos = [cluster_of(c) for c in lab.ctls]
    assert sorted(i["role"] for i in infos) == ["follower", "follower", "leader"]
    leader = lab.leader()
    follower = next(c for c in lab.ctls if c is not leader)
    tap = create(follower, "three-members")
    wait_status(leader, tap)
    got = traffic(lab, "h1", FLOW, "e3", 50, ["h16", "h9"])
    assert len(got["h16"]) == 50 and got["h9"] == got["h16"]
    # The member every instance talks to first goes away: they move to the others.
    first = lab.etcd.members[0][0]
    lab.etcd.stop_member(first)
    try:
        assert follower.http.delete(f"/api/v1/taps/{tap}").status_code == 204
        again = wait_until(lambda: (r := follower.http.post("/api/v1/taps", json={"name": "member-down", "src_ip": "10.0.0.1",
                                                                                   "dst_ip": "10.0.0.16", "monitor_ip": "10.0.0.9"})).status_code == 201 and r,
                           10).json()["id"]
        assert lab.leader() is leader  # the leader's lease lived on through another member
        wait_status(follower, again)
        got = traffic(lab, "h1", FLOW, "e3down", 50, ["h16", "h9"])
        assert len(got["h16"]) == 50 and got["h9"] == got["h16"]
        assert leader.http.delete(f"/api/v1/taps/{again}").status_code == 204
    finally:
        lab.etcd.start_member(first)
