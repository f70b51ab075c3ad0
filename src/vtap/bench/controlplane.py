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

import json
import subprocess
import sys
import threading
import tempfile
import time
from pathlib import Path

import httpx

from vtap.bench.report import write_results
from vtap.control.memory import rss_mib
from vtap.lab.ovs import PrivateOVS
from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked, read_pcap, send_from


def policies(start: int, count: int, port_base: int, sources: range = range(1, 17), hosts: int = 16) -> list[dict]:
    """Policies `start` to `start + count` of the sequence: every (source, destination)
    pair of `hosts` hosts with one UDP port, then the next port; each copied to a third host."""
    out = []
    k = 0
    port = port_base
    while len(out) < count:
        for i in sources:
            for j in range(1, hosts + 1):
                if i == j:
                    continue
                m = (i + hosts // 4) % hosts + 1
                if m in (i, j):
                    m = (i + hosts // 2) % hosts + 1
                if k >= start:
                    out.append({"name": f"p{k}", "src_ip": f"10.0.0.{i}", "dst_ip": f"10.0.0.{j}", "ip_proto": "udp",
                                "dst_port": port, "monitor_ip": f"10.0.0.{m}"})
                    if len(out) == count:
                        return out
                k += 1
        port += 1
    return out


def post_latency(client: httpx.Client, bodies: list[dict], ids: list[int] | None = None) -> dict:
    """POST -> active (every rule confirmed by barrier), one policy at a time (their ids
    appended to `ids`)."""
    lat = []
    for body in bodies:
        t = time.perf_counter()
        resp = client.post("/api/v1/taps", json=body)
        if resp.status_code != 201:
            raise RuntimeError(resp.text)
        tap = resp.json()
        if ids is not None:
            ids.append(tap["id"])
        while client.get(f"/api/v1/taps/{tap['id']}").json()["status"] != "active":
            time.sleep(0.002)
        lat.append((time.perf_counter() - t) * 1000)
    return {"n": len(lat), "p50": round(pct(lat, 50), 1), "p95": round(pct(lat, 95), 1),
            "p99": round(pct(lat, 99), 1), "max": round(max(lat), 1)}


def rss_with_event_stream(ctl, client: httpx.Client, seconds: float, page: list[int]) -> dict:
    """The controller's peak RSS while the web UI's event stream is open, with every
    policy of the size in, watching one page of policies as the UI does (`?ids=`), and
    the events' sizes: the first (the page's snapshot) and the largest after it (deltas
    and the summary), while one policy of the page changes half-way; when the first came
    (after the board's first look at every policy), and how many a second after it."""
    sizes: list[int] = []
    times: list[float] = []
    stop = threading.Event()

    def read() -> None:
        headers = {"authorization": f"Bearer {ctl.token}"}
        watch = {"ids": ",".join(map(str, page))}
        with httpx.Client(base_url=ctl.api, headers=headers, timeout=60) as c, \
                c.stream("GET", "/api/v1/events", params=watch) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    sizes.append(len(line) - 5)
                    times.append(time.monotonic())
                if stop.is_set():
                    return

    reader = threading.Thread(target=read, daemon=True)
    opened = time.monotonic()
    reader.start()
    before, peak = rss_mib(ctl.proc.pid), 0.0
    end = time.monotonic() + seconds
    changed = False
    while time.monotonic() < end:
        peak = max(peak, rss_mib(ctl.proc.pid))
        if not changed and time.monotonic() > end - seconds / 2:
            changed = True
            change_one(client, page[0])
        time.sleep(0.25)
    stop.set()
    reader.join(timeout=60)
    return {"seconds": seconds, "events": len(sizes), "rss_before_mib": before, "peak_rss_mib": peak,
            "first_event_bytes": sizes[0] if sizes else 0, "largest_later_event_bytes": max(sizes[1:], default=0),
            "first_event_s": round(times[0] - opened, 2) if times else None,
            "events_per_s_after_first": round((len(times) - 1) / (times[-1] - times[0]), 2) if len(times) > 1 else None}


def change_one(client: httpx.Client, tap_id: int) -> None:
    """Change one stored policy's description (a change the event stream must carry)."""
    tap = client.get(f"/api/v1/taps/{tap_id}")
    tap.raise_for_status()
    body = {k: v for k, v in tap.json().items() if k not in ("id", "status", "status_reason", "switches")}
    body["description"] = "changed" if body.get("description") != "changed" else "changed again"
    client.put(f"/api/v1/taps/{tap_id}", json=body).raise_for_status()


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
        try:
            health = client.get("/api/v1/health").json()
        except httpx.TimeoutException:
            continue  # a controller busy (a traced one, say) for longer than the client waits
        if health["taps"] == expected and health["taps_by_status"].get("active", 0) == expected:
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError("policies did not all become active")


def declarative(lab: LabSession, count: int, sources: range, hosts: int, settle_s: float) -> dict:
    """`PUT /api/v1/taps` of the whole set at once, fresh (after a prune to nothing);
    the same set again with `vtap apply -f` (the CLI: a file read, sent, answered);
    then one policy changed among them."""
    client = lab.ctl.http
    everything = policies(0, count, 1000, sources, hosts)
    client.put("/api/v1/taps", json=[], params={"prune": "true"}, timeout=600).raise_for_status()
    wait_all_active(client, 0, 600)
    time.sleep(1)
    t0 = time.monotonic()
    client.put("/api/v1/taps", json=everything, timeout=600).raise_for_status()
    t_answered = time.monotonic()
    t_active = wait_all_active(client, count, 600)
    rss_active = rss_mib(lab.ctl.proc.pid)
    rss_settled = settled_rss(lab, settle_s)
    path = lab.workdir / "everything.json"
    path.write_text(json.dumps(everything))
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "vtap", "apply", "-f", str(path), "--json", "--api", lab.ctl.api,
                          "--token", lab.ctl.token], capture_output=True, text=True, timeout=600)
    again_s = time.monotonic() - t
    if out.returncode != 0:
        raise RuntimeError(f"vtap apply -f: {out.stderr.strip()[-500:]}")
    tap = client.get("/api/v1/taps", params={"offset": count // 2, "limit": 1}, timeout=600).json()[0]
    body = {k: v for k, v in tap.items() if k not in ("id", "status", "status_reason", "switches")}
    body["dst_port"] = 65000
    t = time.perf_counter()
    client.put(f"/api/v1/taps/{tap['id']}", json=body).raise_for_status()
    while client.get(f"/api/v1/taps/{tap['id']}").json()["status"] != "active":
        time.sleep(0.002)
    update_ms = (time.perf_counter() - t) * 1000
    return {"policies": count, "answered_s": round(t_answered - t0, 2), "all_active_s": round(t_active - t0, 2),
            "same_again_s": round(again_s, 2), "same_again_unchanged": json.loads(out.stdout)["unchanged"],
            "update_one_ms": round(update_ms, 1), "rss_active_mib": rss_active, "rss_settled_mib": rss_settled}


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


PAGE = 50  # policies the web UI shows (and its event stream watches) at a time
POST_EACH_MAX = 10_000  # up to this many policies, each one POSTed alone; beyond, :batch of BATCH
BATCH = 1_000


def bulk_apply(lab: LabSession, sizes: list[int], sources: range, hosts: int, stream_s: float,
               traced_at: int | None, settle_s: float) -> tuple[list[dict], dict]:
    """Policies posted back to back up to each cumulative size, until all are active: the
    time that took, the rules it added to the switches and the controller's RSS; then at
    that size the event stream's figures and a restart's. At `traced_at`, also the
    controller's memory by structure (a traced run of its own)."""
    applied, memory = [], {}
    done = 0
    base_flows, base_groups = switch_rule_count(lab.ovs, lab.net)
    for size in sizes:
        client = lab.ctl.http
        batch = policies(done, size - done, 1000, sources, hosts)
        t0 = time.monotonic()
        ids = post_all(client, batch, one_by_one=size <= POST_EACH_MAX)
        t_posted = time.monotonic()
        t_active = wait_all_active(client, size, 1800)
        flows, groups = switch_rule_count(lab.ovs, lab.net)
        added = (flows - base_flows) + (groups - base_groups)
        row = {
            "policies": size, "posted_s": round(t_posted - t0, 2), "all_active_s": round(t_active - t0, 2),
            "posted_as": "one POST each" if size <= POST_EACH_MAX else f":batch of {BATCH:,}",
            "active_after_last_post_s": round(t_active - t_posted, 2),
            "switch_flows": flows, "switch_groups": groups, "rules_added": added,
            "rules_per_s": round(added / (t_active - t0)), "controller_rss_mib": rss_mib(lab.ctl.proc.pid),
        }
        row["event_stream"] = rss_with_event_stream(lab.ctl, client, stream_s, ids[:PAGE])
        row["restart"] = restart(lab, size, settle_s)
        if size == traced_at:
            memory = traced_memory(lab, size)
        applied.append(row)
        base_flows, base_groups = flows, groups
        done = size
    return applied, memory


def post_all(client: httpx.Client, bodies: list[dict], *, one_by_one: bool) -> list[int]:
    """POST the policies, each alone or in batches; their ids."""
    ids = []
    if one_by_one:
        for body in bodies:
            resp = client.post("/api/v1/taps", json=body)
            if resp.status_code != 201:
                raise RuntimeError(resp.text)
            ids.append(resp.json()["id"])
        return ids
    for i in range(0, len(bodies), BATCH):
        resp = client.post("/api/v1/taps:batch", json=bodies[i:i + BATCH], timeout=600)
        if resp.status_code != 201:
            raise RuntimeError(resp.text[:500])
        ids += [t["id"] for t in resp.json()]
    return ids


def wait_compile_checked(client: httpx.Client, timeout: float) -> dict:
    """Health, once a restart's reused compile was compiled afresh and compared: the
    in-place compile needs that fresh one (a change meanwhile waits seconds for it) and
    its memo is most of the compile's memory, so what follows a restart is measured
    after it."""
    deadline = time.monotonic() + timeout
    while True:
        health = client.get("/api/v1/health").json()
        if health.get("startup_compile") != "reused" or "compile_checked" in health.get("startup", {}):
            return health
        if time.monotonic() > deadline:
            raise RuntimeError("the restarted controller did not check its reused compile")
        time.sleep(0.2)


def restart(lab: LabSession, expected: int, settle_s: float) -> dict:
    """Stop the controller, start it again: until every policy is active again, and the
    new process's own steps (`startup` in health, seconds from its start)."""
    t = time.monotonic()
    lab.ctl.stop()
    stopped = time.monotonic()
    lab.ctl.start()
    # Counting every policy's state (what health does for a token) takes ~0.15 s of the
    # controller's loop at 10,000: asked 20 times a second during the start, it slowed
    # the start it measured. The token-less health's `startup` steps are asked until
    # the switches confirmed their rules, and only then the counts.
    deadline = time.monotonic() + 1800
    while "rules_confirmed" not in httpx.get(f"{lab.ctl.api}/api/v1/health", timeout=30).json().get("startup", {}):
        if time.monotonic() > deadline:
            raise RuntimeError("the restarted controller's switches did not confirm their rules")
        time.sleep(0.05)  # token-less requests are limited to 50 a second per address
    all_active = wait_all_active(lab.ctl.http, expected, 1800)
    health = wait_compile_checked(lab.ctl.http, 1800)
    return {"all_active_s": round(all_active - t, 2), "stop_s": round(stopped - t, 2),
            "startup": health.get("startup", {}), "startup_cpu": health.get("startup_cpu", {}),
            "rss_settled_mib": settled_rss(lab, settle_s)}


SETTLE_S = 15.0  # after a bulk change: the reconcilers' passes done, the freed pages given back (GIVE_BACK_S)


def settled_rss(lab: LabSession, seconds: float) -> float:
    """The controller's RSS once a bulk change has settled (`seconds` after): what it
    holds, where the RSS at the moment every policy is active also holds the change's
    passing peak."""
    time.sleep(seconds)
    return rss_mib(lab.ctl.proc.pid)


TRACED_WAIT_S = 300  # how long the traced run may take to have every policy active
TRACED_MAX = 10_000  # the most policies a traced run is tried with


def traced_memory(lab: LabSession, expected: int) -> dict:
    """The controller's memory by structure with `expected` policies, from a run under
    tracemalloc (slower, and heavier by the traces: its RSS is not the figure); the
    controller is started untraced again after."""
    lab.ctl.stop()
    untraced = lab.ctl.extra_args
    lab.ctl.extra_args = (*untraced, "--trace-memory", "16")
    try:
        lab.ctl.start(wait_s=TRACED_WAIT_S / 2)
        wait_all_active(lab.ctl.http, expected, TRACED_WAIT_S)
        wait_compile_checked(lab.ctl.http, TRACED_WAIT_S)
        memory = lab.ctl.http.get("/api/v1/memory", timeout=600).json()
    except RuntimeError as exc:  # traced, a controller is many times slower and may not settle: the run goes on
        memory = {"error": str(exc)[:300]}
    finally:
        lab.ctl.stop()
        lab.ctl.extra_args = untraced
        lab.ctl.start()
    wait_all_active(lab.ctl.http, expected, 1800)
    return {"policies": expected, **memory}


def loaded_latency(client: httpx.Client, installed: int, sources: range, count: int, hosts: int) -> dict:
    """`post_latency` of `count` more policies with `installed` in place; those are then
    removed again, and the `installed` ones left active."""
    extra = [{**b, "name": f"late{i}"} for i, b in enumerate(policies(0, count, 61000, sources, hosts))]
    ids: list[int] = []
    latency = {**post_latency(client, extra, ids), "installed": installed}
    for tap_id in ids:
        client.delete(f"/api/v1/taps/{tap_id}")
    wait_all_active(client, installed, 600)
    return latency


def ping_ring(net, deadline_s: int = 90) -> None:
    """Each host pings the next (the last the first), all at once, again until an answer
    or `deadline_s` (a fabric still converging answers late, and a ping whose first ARP
    went unanswered gives up after 3 s): the controller learns every host from its
    frames in one round. The all-pairs ping of fattree,8 (16,256 pairs, one after
    another) took longer than 10 minutes."""
    hosts = net.hosts
    again = f"for i in $(seq {deadline_s}); do ping -c 1 -W 1 -q $0 && exit 0; sleep 1; done; exit 1"
    pings = [(h, h.popen(["sh", "-c", again, hosts[(i + 1) % len(hosts)].IP()],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) for i, h in enumerate(hosts)]
    silent = [h.name for h, proc in pings if proc.wait() != 0]
    if silent:
        raise RuntimeError(f"no answer to the ping of {len(silent)} hosts: {', '.join(silent[:5])}")


def main(args) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.latency, sizes = 20, [200]
    topo = parse_topo(args.topo)
    hosts = len(topo.hosts())
    sources = range(1, 2) if args.one_bridge else range(1, hosts + 1)
    # Traced, a controller runs many times slower (10,000 policies took minutes): the
    # smallest size is traced, and its per-policy bytes say what grows with the policies;
    # above TRACED_MAX none (traced, 100,000 never settled: five minutes lost a run).
    traced_at = sizes[0] if sizes[0] <= TRACED_MAX and not args.no_trace else None
    work = Path(tempfile.mkdtemp(prefix="vtap-bench-cp-"))
    result: dict = {"topo": args.topo}
    with LabSession(topo, work) as lab:
        ovs, ctl, net = lab.ovs, lab.ctl, lab.net
        ping_ring(net)
        client = ctl.http

        # 0. Copies resuming after a link on the copy path fails.
        result["copy_failover"] = copy_failover(lab, client)

        # 1. POST -> active, one at a time.
        result["latency_ms"] = post_latency(client, policies(0, args.latency, 60000, hosts=hosts))
        for tap in client.get("/api/v1/taps").json():
            client.delete(f"/api/v1/taps/{tap['id']}")
        wait_all_active(client, 0, 60)
        time.sleep(1)

        # 2. Bulk apply; at each size the event stream and a restart; the memory by structure.
        settle_s = 3.0 if args.quick else SETTLE_S
        result["apply"], result["memory"] = bulk_apply(lab, sizes, sources, hosts, 3.0 if args.quick else 10.0, traced_at,
                                                       settle_s)
        largest = result["apply"][-1]
        result["event_stream"] = largest["event_stream"]
        result["restart_all_active_s"] = largest["restart"]["all_active_s"]
        result["restart_policies"] = sizes[-1]
        # The same latency with every policy of the last size installed (then removed again).
        result["latency_loaded_ms"] = loaded_latency(lab.ctl.http, sizes[-1], sources, 10 if args.quick else 50, hosts)
        result["ceiling_ofctl_bundle"] = ceiling(ovs, net, work)
        result["declarative"] = declarative(lab, sizes[-1], sources, hosts, settle_s)

    result["one_bridge"] = args.one_bridge
    result["quick"] = args.quick
    name = ("controlplane" + ("-one-bridge" if args.one_bridge else "") + ("" if args.topo == "fattree,4" else "-" + args.topo.replace(",", ""))
            + ("-quick" if args.quick else ""))
    return write_results(result, markdown(result), args.out, name)


def markdown(result: dict) -> str:
    lines: list[str] = []
    p = lines.append
    l = result["latency_ms"]
    p(f"### POST -> active, one policy at a time (n={l['n']}, {result['topo']})\n")
    p(f"| p50 | p95 | p99 | max |\n|---|---|---|---|\n| {l['p50']} ms | {l['p95']} ms | {l['p99']} ms | {l['max']} ms |")
    m = result["latency_loaded_ms"]
    p(f"\nThe same with {m['installed']:,} policies installed (n={m['n']}): p50 {m['p50']} ms, p95 {m['p95']} ms, "
      f"p99 {m['p99']} ms, max {m['max']} ms.")
    p("\n### Applying policies posted back to back\n")
    p("Policies tap at " + ("h1's edge switch only (one bridge)" if result["one_bridge"] else "every edge switch") + "\n")
    p("| policies (cumulative) | posted as | all posted | all active | active after the last post | flows / groups in the switches | rules added per s | controller RSS |")
    p("|---|---|---|---|---|---|---|---|")
    for a in result["apply"]:
        p(f"| {a['policies']:,} | {a['posted_as']} | {a['posted_s']} s | {a['all_active_s']} s | {a['active_after_last_post_s']} s | "
          f"{a['switch_flows']:,} / {a['switch_groups']} | {a['rules_per_s']:,} | {a['controller_rss_mib']} MiB |")
    p("\n### At each size: the web UI's event stream, and a restart\n")
    p("The stream watches one page of 50 policies, as the UI does (`GET /api/v1/events?ids=`); one of them changes "
      "half-way.\n")
    p("| policies | events in the window (the first at; then a second) | first event (the page's snapshot) | largest event after it | RSS, stream open (peak) "
      "| restart: all active | of which stopping | the new process: imported / store loaded / switches back / compiled / rules confirmed / compile checked |")
    p("|---|---|---|---|---|---|---|---|")
    for a in result["apply"]:
        e, r = a["event_stream"], a["restart"]
        st, cpu = r["startup"], r.get("startup_cpu", {})
        steps = " / ".join((f"{st[k]:.2f}" + (f" ({cpu[k]:.2f} CPU)" if k in cpu else "")) if k in st else "-" for k in
                           ("imported", "store_loaded", "switches_back", "first_compile", "rules_confirmed", "compile_checked"))
        pace = (f" (at {e['first_event_s']} s; then {e['events_per_s_after_first']}/s)"
                if e.get("events_per_s_after_first") is not None else "")
        p(f"| {a['policies']:,} | {e['events']} in {e['seconds']:g} s{pace} | {e['first_event_bytes'] / 1024:,.1f} KiB | "
          f"{e['largest_later_event_bytes'] / 1024:,.1f} KiB | {e['peak_rss_mib']} MiB | {r['all_active_s']} s | "
          f"{r['stop_s']} s | {steps} s |")
    mem = result.get("memory") or {}
    if mem.get("by_structure"):
        p(f"\n### Memory by structure, {mem['policies']:,} policies (tracemalloc, `GET /api/v1/memory`)\n")
        p(f"Traced live: {mem['traced_mib']} MiB (the traced run's RSS, {mem['rss_mib']} MiB, includes the traces).\n")
        p("| structure (the vtap module that made it) | MiB | blocks | bytes per policy |\n|---|---|---|---|")
        for row in mem["by_structure"][:15]:
            p(f"| {row['structure']} | {row['mib']} | {row['blocks']:,} | {row['mib'] * 2 ** 20 / mem['policies']:,.0f} |")
    c = result["ceiling_ofctl_bundle"]
    p(f"\nCeiling: the same {c['rules']:,} flows and groups reloaded with `ovs-ofctl --bundle add-flows` / `add-groups`, "
      f"switch by switch: {c['seconds']} s, {c['rules_per_s']:,} rules/s.")
    d = result["declarative"]
    p(f"\nDeclarative apply (`PUT /api/v1/taps`, one request) of {d['policies']:,} policies, fresh: answered in "
      f"{d['answered_s']} s, all active {d['all_active_s']} s after it was sent "
      f"({d['all_active_s'] / c['seconds']:.1f}x the ovs-ofctl ceiling above); the same set again with `vtap apply -f`: "
      f"{d['same_again_s']} s, {d['same_again_unchanged']:,} unchanged; one policy changed among them: active after "
      f"{d['update_one_ms']} ms. Controller RSS when all were active: {d['rss_active_mib']} MiB; settled: "
      f"{d['rss_settled_mib']} MiB.")
    p("\nRSS settled after each restart: " + ", ".join(f"{a['restart']['rss_settled_mib']} MiB at {a['policies']:,}"
                                                      for a in result["apply"]) + ".")
    f = result["copy_failover"]
    p(f"\nLink failover: link {f['link']}, on both the tapped flow's path and the copy's, taken down under a "
      f"{f['rate_pps']} pps tapped stream: {f['sent'] - f['received']} of {f['sent']} originals and {f['lost']} of "
      f"{f['sent']} copies lost (largest gap between consecutive copies within a second of the failure: {f['gap_ms']} ms).")
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
