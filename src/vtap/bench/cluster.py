"""`vtap bench controlplane --cluster`: three `vtap serve` instances on one etcd, fattree,4.

1. POST -> active through a follower, one policy at a time (the follower writes into
   etcd; the leader compiles and installs; the follower shows the leader's published
   state): p50, p95, p99.
2. Leader failover under a 1,000 pps tapped stream, `runs` times: `kill -9` of the
   leader; the time until another instance is MASTER at every switch; originals and
   copies lost and duplicated (captured at receiver and monitor). The killed instance is
   started again (as a follower) before the next run.

Prints Markdown; writes bench/results/controlplane-cluster.json and .md.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from vtap.bench.report import write_results
from vtap.bench.controlplane import failover_policy, pct, policies, stream_frames, tapped_stream, wait_flowing
from vtap.lab.process import ControllerProcess
from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import marked


def latency_through_follower(follower: ControllerProcess, bodies: list[dict]) -> dict:
    lat = []
    for body in bodies:
        t = time.perf_counter()
        resp = follower.http.post("/api/v1/taps", json=body)
        if resp.status_code != 201:
            raise RuntimeError(resp.text)
        tap_id = resp.json()["id"]
        while follower.http.get(f"/api/v1/taps/{tap_id}").json()["status"] != "active":
            time.sleep(0.002)
        lat.append((time.perf_counter() - t) * 1000)
    for t in follower.http.get("/api/v1/taps").json():
        follower.http.delete(f"/api/v1/taps/{t['id']}")
    return {"n": len(lat), "p50": round(pct(lat, 50), 1), "p95": round(pct(lat, 95), 1), "p99": round(pct(lat, 99), 1),
            "max": round(max(lat), 1)}


def master_everywhere(c: ControllerProcess, switches: int) -> bool:
    try:
        info = c.http.get("/api/v1/cluster", timeout=1).json()
    except Exception:
        return False
    return info["role"] == "leader" and [s["role"] for s in info["switches"]] == ["master"] * switches


def failover(lab: LabSession, rate_pps: int = 1000, seconds: float = 8.0) -> dict:
    leader = lab.leader()
    others = [c for c in lab.ctls if c is not leader]
    tap = failover_policy(leader.http)
    caps, sender, count = tapped_stream(lab, "cf", rate_pps, seconds)
    wait_flowing(caps["h9"], "cf")  # kill the leader mid-stream, not before it began
    time.sleep(seconds / 4)
    killed = time.monotonic()
    os.kill(leader.proc.pid, signal.SIGKILL)
    leader.proc.wait()
    new, took = None, float("nan")
    while new is None and time.monotonic() - killed < 30:
        new = next((c for c in others if master_everywhere(c, len(lab.net.switches))), None)
        if new is not None:
            took = time.monotonic() - killed
        else:
            time.sleep(0.02)
    sender.join()
    got = {h: [f for _, f in stream_frames(cap, "cf")] for h, cap in caps.items()}
    (new or others[0]).http.delete(f"/api/v1/taps/{tap['id']}")
    leader.start(token=lab.ctl.token)  # back, as a follower, for the next run
    marks = [marked(f) for f in got["h9"]]
    return {"rate_pps": rate_pps, "sent": count, "received": len(got["h16"]), "copies": len(got["h9"]),
            "lost_originals": count - len(set(marked(f) for f in got["h16"])), "lost_copies": count - len(set(marks)),
            "duplicated_copies": len(marks) - len(set(marks)), "failover_s": round(took, 2),
            "new_leader": new.api if new else None}


def main(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="vtap-bench-cluster-"))
    result: dict = {"instances": 3, "etcd_members": 1}
    with LabSession(parse_topo("fattree,4"), work, cluster=3) as lab:
        lab.net.pingAll(timeout="1")
        result["lease_ttl_s"] = lab.leader().get("/api/v1/cluster")["lease_ttl_s"]
        follower = next(c for c in lab.ctls if c is not lab.leader())
        result["latency_via_follower_ms"] = latency_through_follower(follower, policies(0, 20 if args.quick else args.latency, 60000))
        result["failover"] = [failover(lab) for _ in range(1 if args.quick else 3)]
    return write_results(result, markdown(result), args.out, "controlplane-cluster")


def markdown(r: dict) -> str:
    lat = r["latency_via_follower_ms"]
    lines = [
        f"Cluster: {r['instances']} instances, {r['etcd_members']} etcd member, lease TTL {r['lease_ttl_s']} s, fattree,4",
        "",
        "| figure | value |",
        "|---|---|",
        f"| POST -> active through a follower ({lat['n']} policies, one at a time) | p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
        f"p99 {lat['p99']} ms, max {lat['max']} ms |",
    ]
    for i, f in enumerate(r["failover"], 1):
        lines.append(f"| kill -9 of the leader, run {i}: until another is MASTER at all 20 switches | {f['failover_s']} s |")
        lines.append(f"| run {i} under {f['rate_pps']} pps ({f['sent']} sent): originals lost, copies lost, copies duplicated "
                     f"| {f['lost_originals']}, {f['lost_copies']}, {f['duplicated_copies']} |")
    return "\n".join(lines) + "\n"
