"""`vtap bench controlplane`: TAP policies at scale on fattree,4, real controller and OVS.

    vtap bench controlplane [--latency 200] [--sizes 1000,10000] [--one-bridge] [--quick]

1. Latency from `POST /api/v1/taps` to status `active` (every rule confirmed by a
   barrier on every switch concerned), one policy at a time: p50, p95, p99.
2. Time to apply 1,000 and then 10,000 policies posted back to back (until all are
   active), and the switch rules per second that took, against the ceiling: the same
   flows and groups loaded into the same bridges with `ovs-ofctl --bundle add-flows`
   and `add-groups`.
3. The controller's RSS with 10,000 policies.
4. Time for copies to resume after a link on the copy path fails (a paced stream,
   captured at the monitor), and time from a controller restart to every policy
   `active` again.

Policies: distinct (source host, destination host, UDP destination port) triples, each
copied to a third host, so that no two overlap. Prints Markdown; writes
bench/results/controlplane.json and .md (controlplane-one-bridge with --one-bridge).
"""

from __future__ import annotations

import threading
import tempfile
import time
from pathlib import Path

import httpx

from vtap.bench.report import write_results
from vtap.lab.ovs import PrivateOVS
from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked, read_pcap, send_from


def policies(start: int, count: int, port_base: int, sources: range = range(1, 17)) -> list[dict]:
    out = []
    k = 0
    port = port_base
    while len(out) < count:
        for i in sources:
            for j in range(1, 17):
                if i == j:
                    continue
                m = (i + 4) % 16 + 1
                if m in (i, j):
                    m = (i + 8) % 16 + 1
                if k >= start:
                    out.append({"name": f"p{k}", "src_ip": f"10.0.0.{i}", "dst_ip": f"10.0.0.{j}", "ip_proto": "udp",
                                "dst_port": port, "monitor_ip": f"10.0.0.{m}"})
                    if len(out) == count:
                        return out
                k += 1
        port += 1
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def post_latency(client: httpx.Client, bodies: list[dict]) -> dict:
    """POST -> active (every rule confirmed by barrier), one policy at a time."""
    lat = []
    for body in bodies:
        t = time.perf_counter()
        resp = client.post("/api/v1/taps", json=body)
        if resp.status_code != 201:
            raise RuntimeError(resp.text)
        tap = resp.json()
        while client.get(f"/api/v1/taps/{tap['id']}").json()["status"] != "active":
            time.sleep(0.002)
        lat.append((time.perf_counter() - t) * 1000)
    return {"n": len(lat), "p50": round(pct(lat, 50), 1), "p95": round(pct(lat, 95), 1),
            "p99": round(pct(lat, 99), 1), "max": round(max(lat), 1)}


def rss_with_event_stream(ctl, seconds: float) -> dict:
    """The controller's peak RSS while the web UI's event stream is open (an event a second
    carrying every policy's status and counters), with every policy of the last size in."""
    events = 0
    stop = threading.Event()

    def read() -> None:
        nonlocal events
        headers = {"authorization": f"Bearer {ctl.token}"}
        with httpx.Client(base_url=ctl.api, headers=headers, timeout=60) as c, c.stream("GET", "/api/v1/events") as resp:
            for line in resp.iter_lines():
                events += line.startswith("event:")
                if stop.is_set():
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    before, peak = rss_mib(ctl.proc.pid), 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, rss_mib(ctl.proc.pid))
        time.sleep(0.25)
    stop.set()
    reader.join(timeout=60)
    return {"seconds": seconds, "events": events, "rss_before_mib": before, "peak_rss_mib": peak}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def switch_rule_count(ovs: PrivateOVS, net) -> tuple[int, int]:
    flows = groups = 0
    for sw in net.switches:
        flows += sum("cookie=" in l for l in ovs.ofctl("--no-stats", "dump-flows", sw.name).splitlines())
        groups += sum("group_id=" in l for l in ovs.ofctl("dump-groups", sw.name).splitlines())
    return flows, groups


def wait_all_active(client: httpx.Client, expected: int, timeout: float) -> float:
    """Until `expected` policies are stored and all active, from the health summary's
    counts: listing 10,000 policies five times a second would load the controller it
    measures."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = client.get("/api/v1/health").json()
        if health["taps"] == expected and health["taps_by_status"].get("active", 0) == expected:
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError("policies did not all become active")


def declarative(client: httpx.Client, count: int, sources: range) -> dict:
    """`PUT /api/v1/taps` of the whole set at once, fresh (after a prune to nothing);
    the same set again (nothing to do); then one policy changed among them."""
    everything = policies(0, count, 1000, sources)
    client.put("/api/v1/taps", json=[], params={"prune": "true"}, timeout=600).raise_for_status()
    wait_all_active(client, 0, 600)
    time.sleep(1)
    t0 = time.monotonic()
    client.put("/api/v1/taps", json=everything, timeout=600).raise_for_status()
    t_answered = time.monotonic()
    t_active = wait_all_active(client, count, 600)
    t = time.monotonic()
    again = client.put("/api/v1/taps", json=everything, timeout=600).json()
    again_s = time.monotonic() - t
    tap = client.get("/api/v1/taps").json()[count // 2]
    body = {k: v for k, v in tap.items() if k not in ("id", "status", "status_reason", "switches")}
    body["dst_port"] = 65000
    t = time.perf_counter()
    client.put(f"/api/v1/taps/{tap['id']}", json=body).raise_for_status()
    while client.get(f"/api/v1/taps/{tap['id']}").json()["status"] != "active":
        time.sleep(0.002)
    update_ms = (time.perf_counter() - t) * 1000
    return {"policies": count, "answered_s": round(t_answered - t0, 2), "all_active_s": round(t_active - t0, 2),
            "same_again_s": round(again_s, 2), "same_again_unchanged": again["unchanged"], "update_one_ms": round(update_ms, 1)}


def ceiling(ovs: PrivateOVS, net, work: Path) -> dict:
    """Reload every switch's current flows and groups with ovs-ofctl bundles; rules/s."""
    total_rules = 0
    total_s = 0.0
    for sw in net.switches:
        flows = [l.strip() for l in ovs.ofctl("--no-stats", "dump-flows", sw.name).splitlines() if "cookie=" in l]
        groups = [l.strip() for l in ovs.ofctl("dump-groups", sw.name).splitlines() if "group_id=" in l]
        ff, gf = work / f"{sw.name}.flows", work / f"{sw.name}.groups"
        ff.write_text("\n".join(flows) + "\n")
        gf.write_text("\n".join(groups) + "\n")
        ovs.ofctl("del-flows", sw.name)
        ovs.ofctl("del-groups", sw.name)
        t = time.perf_counter()
        if groups:
            ovs.ofctl("add-groups", sw.name, str(gf))
        ovs.ofctl("--bundle", "add-flows", sw.name, str(ff))
        total_s += time.perf_counter() - t
        total_rules += len(flows) + len(groups)
    return {"rules": total_rules, "seconds": round(total_s, 2), "rules_per_s": round(total_rules / total_s)}


def bulk_apply(lab: LabSession, client: httpx.Client, sizes: list[int], sources: range) -> list[dict]:
    """Policies posted back to back up to each cumulative size, until all are active: the
    time that took, the rules it added to the switches and the controller's RSS."""
    applied = []
    done = 0
    base_flows, base_groups = switch_rule_count(lab.ovs, lab.net)
    for size in sizes:
        batch = policies(done, size - done, 1000, sources)
        t0 = time.monotonic()
        for body in batch:
            resp = client.post("/api/v1/taps", json=body)
            if resp.status_code != 201:
                raise RuntimeError(resp.text)
        t_posted = time.monotonic()
        t_active = wait_all_active(client, size, 600)
        flows, groups = switch_rule_count(lab.ovs, lab.net)
        added = (flows - base_flows) + (groups - base_groups)
        applied.append({
            "policies": size, "posted_s": round(t_posted - t0, 2), "all_active_s": round(t_active - t0, 2),
            "active_after_last_post_s": round(t_active - t_posted, 2),
            "switch_flows": flows, "switch_groups": groups, "rules_added": added,
            "rules_per_s": round(added / (t_active - t0)), "controller_rss_mib": rss_mib(lab.ctl.proc.pid),
        })
        base_flows, base_groups = flows, groups
        done = size
    return applied


def loaded_latency(client: httpx.Client, installed: int, sources: range, count: int) -> dict:
    """`post_latency` of `count` more policies with `installed` in place; those are then
    removed again, and the `installed` ones left active."""
    extra = [{**b, "name": f"late{i}"} for i, b in enumerate(policies(0, count, 61000, sources))]
    latency = {**post_latency(client, extra), "installed": installed}
    for tap in client.get("/api/v1/taps").json():
        if tap["name"].startswith("late"):
            client.delete(f"/api/v1/taps/{tap['id']}")
    wait_all_active(client, installed, 600)
    return latency


def main(args) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.latency, sizes = 20, [200]
    sources = range(1, 2) if args.one_bridge else range(1, 17)
    work = Path(tempfile.mkdtemp(prefix="vtap-bench-cp-"))
    result: dict = {}
    with LabSession(parse_topo("fattree,4"), work) as lab:
        ovs, ctl, net = lab.ovs, lab.ctl, lab.net
        net.pingAll(timeout="1")
        client = ctl.http

        # 0. Copies resuming after a link on the copy path fails.
        result["copy_failover"] = copy_failover(lab, client)

        # 1. POST -> active, one at a time.
        result["latency_ms"] = post_latency(client, policies(0, args.latency, 60000))
        for tap in client.get("/api/v1/taps").json():
            client.delete(f"/api/v1/taps/{tap['id']}")
        wait_all_active(client, 0, 60)
        time.sleep(1)

        # 2. Bulk apply.
        result["apply"] = bulk_apply(lab, client, sizes, sources)
        # The same latency with every policy of the last size installed (then removed again).
        result["latency_loaded_ms"] = loaded_latency(client, sizes[-1], sources, 10 if args.quick else 50)
        result["event_stream"] = rss_with_event_stream(ctl, 3.0 if args.quick else 10.0)
        # 3. Controller restart with every policy in place.
        t = time.monotonic()
        ctl.stop()
        ctl.start()
        client = ctl.http
        result["restart_all_active_s"] = round(wait_all_active(client, sizes[-1], 600) - t, 2)
        result["restart_policies"] = sizes[-1]
        result["ceiling_ofctl_bundle"] = ceiling(ovs, net, work)
        result["declarative"] = declarative(client, sizes[-1], sources)

    result["one_bridge"] = args.one_bridge
    result["quick"] = args.quick
    name = "controlplane" + ("-one-bridge" if args.one_bridge else "") + ("-quick" if args.quick else "")
    return write_results(result, markdown(result), args.out, name)


def markdown(result: dict) -> str:
    lines: list[str] = []
    p = lines.append
    l = result["latency_ms"]
    p(f"### POST -> active, one policy at a time (n={l['n']}, fattree,4)\n")
    p(f"| p50 | p95 | p99 | max |\n|---|---|---|---|\n| {l['p50']} ms | {l['p95']} ms | {l['p99']} ms | {l['max']} ms |")
    m = result["latency_loaded_ms"]
    p(f"\nThe same with {m['installed']:,} policies installed (n={m['n']}): p50 {m['p50']} ms, p95 {m['p95']} ms, "
      f"p99 {m['p99']} ms, max {m['max']} ms.")
    p("\n### Applying policies posted back to back\n")
    p("Policies tap at " + ("h1's edge switch only (one bridge)" if result["one_bridge"] else "every edge switch") + "\n")
    p("| policies (cumulative) | all POSTs answered | all active | active after the last POST | flows / groups in the switches | rules added per s | controller RSS |")
    p("|---|---|---|---|---|---|---|")
    for a in result["apply"]:
        p(f"| {a['policies']:,} | {a['posted_s']} s | {a['all_active_s']} s | {a['active_after_last_post_s']} s | "
          f"{a['switch_flows']:,} / {a['switch_groups']} | {a['rules_per_s']:,} | {a['controller_rss_mib']} MiB |")
    e = result["event_stream"]
    p(f"\nWith the web UI's event stream open for {e['seconds']:g} s ({e['events']} events, each with every policy): "
      f"controller RSS {e['rss_before_mib']} MiB before, {e['peak_rss_mib']} MiB at most.")
    c = result["ceiling_ofctl_bundle"]
    p(f"\nCeiling: the same {c['rules']:,} flows and groups reloaded with `ovs-ofctl --bundle add-flows` / `add-groups`, "
      f"switch by switch: {c['seconds']} s, {c['rules_per_s']:,} rules/s.")
    d = result["declarative"]
    p(f"\nDeclarative apply (`PUT /api/v1/taps`, one request) of {d['policies']:,} policies, fresh: answered in "
      f"{d['answered_s']} s, all active {d['all_active_s']} s after it was sent "
      f"({d['all_active_s'] / c['seconds']:.1f}x the ovs-ofctl ceiling above); the same set again: "
      f"{d['same_again_s']} s, {d['same_again_unchanged']:,} unchanged; one policy changed among them: active after "
      f"{d['update_one_ms']} ms.")
    f = result["copy_failover"]
    p(f"\nLink failover: link {f['link']}, on both the tapped flow's path and the copy's, taken down under a "
      f"{f['rate_pps']} pps tapped stream: {f['sent'] - f['received']} of {f['sent']} originals and {f['lost']} of "
      f"{f['sent']} copies lost (largest gap between consecutive copies within a second of the failure: {f['gap_ms']} ms).")
    p(f"\nController restart with {result['restart_policies']:,} policies: all active again {result['restart_all_active_s']} s "
      "after the restart began.")
    return "\n".join(lines) + "\n"


def failover_policy(client: httpx.Client) -> dict:
    """The failover benches' policy, active: h1 -> h16, UDP port 7000, copied to h9."""
    tap = client.post("/api/v1/taps", json={"name": "failover", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.16",
                                            "ip_proto": "udp", "dst_port": 7000, "monitor_ip": "10.0.0.9"}).json()
    while client.get(f"/api/v1/taps/{tap['id']}").json()["status"] != "active":
        time.sleep(0.05)
    return tap


def tapped_stream(lab: LabSession, tag: str, rate_pps: int, seconds: float) -> tuple[dict[str, Capture], threading.Thread, int]:
    """tcpdump at the receiver h16 and the monitor h9, then a paced stream of `failover_policy`'s
    traffic from h1, started: (captures, sender, packets it sends)."""
    caps = {h: Capture(lab.net[h], lab.workdir / f"{tag}-{h}.pcap").start() for h in ("h9", "h16")}
    count = int(rate_pps * seconds)
    flow = Flow("00:00:00:00:00:01", "00:00:00:00:00:10", "10.0.0.1", "10.0.0.16", "udp", 6000, 7000)
    sender = threading.Thread(target=send_from, args=(lab.net["h1"], flow, tag, count), kwargs={"interval": 1 / rate_pps})
    sender.start()
    return caps, sender, count


def stream_frames(cap: Capture, tag: str) -> list[tuple[float, bytes]]:
    """Stop a capture of `tapped_stream`: (time, frame) of the stream's own frames."""
    src = bytes.fromhex("000000000001")
    return [(t, f) for t, f in cap.stop() if f[6:12] == src and (marked(f) or "").startswith(tag + ":")]


def wait_flowing(cap: Capture, tag: str, timeout: float = 20.0) -> None:
    """Until a frame of the stream `tag` is in the capture's file (tcpdump writes it unbuffered)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any((marked(f) or "").startswith(tag + ":") for _, f in read_pcap(cap.path)):
            return
        time.sleep(0.1)


def copy_failover(lab: LabSession, client: httpx.Client, rate_pps: int = 1000, seconds: float = 4.0) -> dict:
    """A paced stream h1 -> h16 tapped to h9; the first link of the copy path goes down mid-stream."""
    tap = failover_policy(client)
    paths = client.get(f"/api/v1/taps/{tap['id']}/paths").json()
    a, b = (int(d, 16) for d in paths["copies"][0]["switches"][:2])
    by_dpid = {int(s.dpid, 16): s for s in lab.net.switches}
    sa, sb = by_dpid[a], by_dpid[b]
    caps, sender, count = tapped_stream(lab, "fo", rate_pps, seconds)
    wait_flowing(caps["h9"], "fo")  # the sender takes a while to build its frames: fail the link mid-stream
    time.sleep(seconds / 3)
    t_down = time.time()
    lab.net.configLinkStatus(sa.name, sb.name, "down")
    sender.join()
    copies = sorted(t for t, _ in stream_frames(caps["h9"], "fo"))
    received = stream_frames(caps["h16"], "fo")
    lab.net.configLinkStatus(sa.name, sb.name, "up")
    client.delete(f"/api/v1/taps/{tap['id']}")
    # The largest gap between consecutive copies in the second around the failure (the
    # stream's own pacing jitter is a few ms).
    near = [t for t in copies if t_down - 0.5 <= t <= t_down + 1.5]
    gap = max((b - a for a, b in zip(near, near[1:])), default=float("nan"))
    time.sleep(3)  # the link comes back; LLDP rediscovers it
    return {"link": f"{sa.name}-{sb.name}", "rate_pps": rate_pps, "sent": count, "received": len(received),
            "copies": len(copies), "lost": count - len(copies), "gap_ms": round(gap * 1000, 1)}
