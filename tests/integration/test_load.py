"""Held against clients (issue 24): no request starves the loop that runs the switches.

`linear,3` with 5,000 policies installed (h1 -> h3, one UDP port each, copied to h2) and
one more tapped stream at 500 packets a second. While 50 clients call the health route
without a token as fast as they can, OpenFlow echo round trips (measured by a client of
the controller's OpenFlow port) stay under `ECHO_BOUND_S`, no link expires, no original
and no copy is lost, and a legitimate policy posted meanwhile turns active within 0.2 s.
Then SIGTERM under a packet-in flood: stopped within 3 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from tests.integration.echo_probe import EchoProbe
from tests.integration.harness import Lab, create_tap, ip, mac, wait_tap
from tests.waiting import wait_until
from vtap.control.memory import rss_mib
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked, send_frames, send_from

# 50 clients on one asyncio loop, each calling GET /api/v1/health without a token as fast
# as it can for the given seconds; prints the count of each status code (0: a failure).
HAMMER = """
import asyncio, json, sys, time
import httpx

async def client(api, until, codes):
    async with httpx.AsyncClient(base_url=api, timeout=10) as c:
        while time.monotonic() < until:
            try:
                code = (await c.get("/api/v1/health")).status_code
            except httpx.HTTPError:
                code = 0
            codes[code] = codes.get(code, 0) + 1

async def main(api, n, seconds):
    codes, until = {}, time.monotonic() + seconds
    await asyncio.gather(*(client(api, until, codes) for _ in range(n)))
    print(json.dumps(codes))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""
# Bulk clients at once, for the given seconds, in one process: one re-declares the whole
# set (`PUT /api/v1/taps`) with one block of 50 policies' ports toggled each time (a
# GitOps loop: each apply changes 50 policies); one creates 50 new policies at a time
# (`POST /api/v1/taps:batch`); two send a 25 MiB set (200,000 policies) whose last one
# is invalid, parsed and validated whole before its 422; one scrapes /metrics each
# second. Prints the count of each status code (0: a failure; "metrics -1": a scrape
# missing policies).
BULK = """
import asyncio, json, sys, time
import httpx

async def client(api, token, kind, bodies, until, codes):
    async with httpx.AsyncClient(base_url=api, timeout=60, headers={"authorization": "Bearer " + token,
                                                                    "content-type": "application/json"}) as c:
        n = 0
        while time.monotonic() < until:
            try:
                if kind == "metrics":  # a Prometheus scraping every second
                    await asyncio.sleep(1)
                    r = await c.get("/metrics")
                    code = r.status_code if r.text.count("vtap_tap_copied_packets_total{") >= 5000 else -1
                elif kind == "batch":
                    code = (await c.post("/api/v1/taps:batch", content=bodies(n))).status_code
                else:
                    code = (await c.put("/api/v1/taps", content=bodies[n % len(bodies)])).status_code
            except httpx.HTTPError:
                code = 0
            key = f"{kind} {code}"
            codes[key] = codes.get(key, 0) + 1
            n += 1

async def main(api, token, n, seconds):
    base = [{"name": f"load{i}", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "ip_proto": "udp", "dst_port": 20000 + i,
             "monitor_ip": "10.0.0.2"} for i in range(n)]
    declared, toggled = [], set()
    for step in range(40):  # block (step mod 20) toggled: each set differs from the one before by 50 policies
        toggled ^= {step % 20}
        specs = [dict(s, dst_port=s["dst_port"] + 10000) if i // 50 in toggled else s for i, s in enumerate(base)]
        declared.append(json.dumps(specs).encode())
    batch = lambda k: json.dumps([dict(base[0], name=f"batch{k}-{i}", dst_port=40000 + 50 * k + i) for i in range(50)]).encode()
    big = [dict(base[0], name=f"big{i}", dst_port=1 + i % 60000) for i in range(200000)]
    big[-1]["dst_port"] = 70000
    bad = [json.dumps(big).encode()]
    codes, until = {}, time.monotonic() + seconds
    await asyncio.gather(client(api, token, "apply", declared, until, codes), client(api, token, "batch", batch, until, codes),
                         client(api, token, "apply", bad, until, codes), client(api, token, "apply", bad, until, codes),
                         client(api, token, "metrics", None, until, codes))
    print(json.dumps(codes))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
"""
POLICIES = 5000
# The clients stand in for clients on other machines: on this machine (2 cores shared
# with OVS, the hosts and the controller) they run at the lowest priority, so that what
# is measured is what their requests cost the controller, not their own parsing and
# encoding taking the controller's CPU (seen in CI: 250 ms stalls all spent runnable).
CLIENT = ["nice", "-n", "19", sys.executable, "-c"]
ECHO_BOUND_S = 0.25  # the worst OpenFlow echo round trip allowed under the load below (README: the bound)
RATE_PPS = 500


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("linear,3"), tmp_path_factory.mktemp("load"))
    specs = [{"name": f"load{i}", "src_ip": ip(1), "dst_ip": ip(3), "ip_proto": "udp", "dst_port": 20000 + i,
              "monitor_ip": ip(2)} for i in range(POLICIES)]
    resp = lab.ctl.http.put("/api/v1/taps", json=specs, timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    wait_until(lambda: lab.ctl.get("/api/v1/health")["taps_by_status"].get("active") == POLICIES, 120, interval=0.5)
    yield lab
    lab.close()


def tapped_stream(lab: Lab, seconds: float, during) -> tuple[dict[str, list[bytes]], object]:
    """h1 -> h3 at 500 packets a second for `seconds`, tapped to h2, while `during()` runs;
    the frames each got, and what `during` returned."""
    caps = {n: Capture(lab.net[n], lab.workdir / f"load-{n}-{time.monotonic_ns()}.pcap").start() for n in ("h3", "h2")}
    count = int(seconds * RATE_PPS)
    flow = Flow(mac(1), mac(3), ip(1), ip(3), "udp", 5, 9999)
    sender = threading.Thread(target=send_from, args=(lab.net["h1"], flow, "ld", count), kwargs={"interval": 1 / RATE_PPS})
    sender.start()
    try:
        result = during()
    finally:
        sender.join()
    src = bytes.fromhex(mac(1).replace(":", ""))
    got = {n: [f for _, f in c.stop() if f[6:12] == src and (marked(f) or "").startswith("ld:")] for n, c in caps.items()}
    return got, result


def watched(lab: Lab, name: str, port: int):
    """What runs during the stream: an OpenFlow echo probe; a legitimate policy posted each
    5 s (4 in all), timed until active; the links and the controller's RSS every 0.5 s."""
    def during() -> dict:
        probe = EchoProbe(lab.ctl.of_port).start()
        links, latencies, rss = [], [], []
        try:
            for k in range(4):
                t0 = time.perf_counter()
                tap = create_tap(lab, name=f"{name}{k}", src_ip=ip(3), dst_ip=ip(1), ip_proto="udp", dst_port=port + k,
                                 monitor_ip=ip(2))
                while lab.ctl.get(f"/api/v1/taps/{tap['id']}")["status"] != "active" and time.perf_counter() - t0 < 10:
                    time.sleep(0.005)
                latencies.append(time.perf_counter() - t0)
                end = time.monotonic() + 5 - (time.perf_counter() - t0)
                while time.monotonic() < end:
                    links.append(lab.ctl.get("/api/v1/health")["links"])
                    rss.append(rss_mib(lab.ctl.proc.pid))
                    time.sleep(0.5)
        finally:
            probe.stop()
        return {"links": links, "latencies": latencies, "probe": probe, "rss": rss}

    return during


def test_health_hammered_without_a_token_starves_nothing(lab):
    stream = create_tap(lab, name="stream", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=9999, monitor_ip=ip(2))
    wait_tap(lab, stream["id"])
    before = lab.ctl.get("/api/v1/health")
    # The 50 clients run in a process of their own (one asyncio loop), so that they do not
    # take the interpreter lock from the echo probe measuring the controller here.
    hammer = subprocess.Popen([*CLIENT, HAMMER, lab.ctl.api, "50", "20"], stdout=subprocess.PIPE, text=True)

    got, r = tapped_stream(lab, 21, watched(lab, "legit", 30000))
    codes = {int(k): v for k, v in json.loads(hammer.communicate(timeout=60)[0]).items()}
    after = lab.ctl.get("/api/v1/health")
    probe = r["probe"]
    print(f"health calls by status {codes}; echo p50 {probe.percentile(50) * 1000:.1f} ms, p99 "
          f"{probe.percentile(99) * 1000:.1f} ms, worst {probe.worst() * 1000:.1f} ms over {len(probe.rtts)}; "
          f"POST -> active {[round(x * 1000) for x in r['latencies']]} ms; loop lag {after['loop_lag_max_ms']} ms")
    assert codes.get(429, 0) > 0 and sum(codes.values()) > 1000  # hammered, and held back
    assert len(probe.rtts) > 200 and probe.lost <= 1 and probe.worst() < ECHO_BOUND_S
    assert set(r["links"]) == {4}
    assert after["lldp_refused"]["replayed"] == before["lldp_refused"]["replayed"]
    assert max(r["latencies"]) < 0.2, r["latencies"]
    assert len(got["h3"]) == 21 * RATE_PPS and got["h2"] == got["h3"]


def test_concurrent_bulk_puts_starve_nothing(lab):
    """Four bulk clients at once for 20 s (the whole set re-declared, batches created, two
    25 MiB bodies refused after their last policy) and a Prometheus scraping, under the
    tapped stream: the same properties as under the health hammer."""
    before, rss_before = lab.ctl.get("/api/v1/health"), rss_mib(lab.ctl.proc.pid)
    bulk = subprocess.Popen([*CLIENT, BULK, lab.ctl.api, lab.ctl.token, str(POLICIES), "20"],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # the clients have built their bodies

    got, r = tapped_stream(lab, 21, watched(lab, "bulk-legit", 31000))
    codes = json.loads(bulk.communicate(timeout=120)[0])
    after = lab.ctl.get("/api/v1/health")
    probe = r["probe"]
    print(f"bulk PUTs and scrapes by status {codes}; echo p50 {probe.percentile(50) * 1000:.1f} ms, p99 "
          f"{probe.percentile(99) * 1000:.1f} ms, worst {probe.worst() * 1000:.1f} ms over {len(probe.rtts)}; "
          f"POST -> active {[round(x * 1000) for x in r['latencies']]} ms; loop lag {after['loop_lag_max_ms']} ms; "
          f"RSS {rss_before:.0f} -> max {max(r['rss']):.0f} MiB")
    assert set(codes) == {"apply 200", "apply 422", "batch 201", "metrics 200"}, codes
    # The load was there (each client's requests answered, at whatever pace the machine allows).
    assert codes["apply 200"] >= 2 and codes["apply 422"] >= 2 and codes["batch 201"] >= 2, codes
    assert len(probe.rtts) > 200 and probe.lost <= 1 and probe.worst() < ECHO_BOUND_S
    assert set(r["links"]) == {4}
    assert after["lldp_refused"]["replayed"] == before["lldp_refused"]["replayed"]
    assert max(r["latencies"]) < 0.2, r["latencies"]
    assert len(got["h3"]) == 21 * RATE_PPS and got["h2"] == got["h3"]
    # None of the 200,000 policies of a refused body was stored.
    assert not any(t["name"].startswith("big") for t in lab.ctl.get("/api/v1/taps"))


def test_sigterm_under_a_packet_in_flood_stops_within_3_s(lab):
    """h1 sends frames from 5,000 random source MACs as fast as it can (each one a
    packet-in while the per-port host cap lasts, then metered), and LLDP in vtap's
    format (unmetered before; now metered off link ports): the controller stops on
    SIGTERM within 3 s, and comes back."""
    from scapy.layers.l2 import Ether

    frames = [bytes(Ether(src=f"02:aa:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01", dst="ff:ff:ff:ff:ff:ff",
                          type=0x88B5) / (b"x" * 46)) for i in range(5000)]
    flood = send_frames(lab.net["h1"], frames * 4, lab.workdir / "flood.bin", interval=0.0, wait=False)
    try:
        time.sleep(2)
        t0 = time.monotonic()
        assert lab.ctl.stop() == 0
        stopped = time.monotonic() - t0
    finally:
        flood.wait(timeout=60)
    print(f"SIGTERM -> stopped in {stopped:.2f} s under the flood")
    assert stopped <= 3.0
    lab.ctl.start()
    lab.wait_health(switches=3, links=4, timeout=30)
