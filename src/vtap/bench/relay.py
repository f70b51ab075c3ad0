"""`vtap bench relay`: can LLDP latency tell a relayed link from a real one?

    vtap bench relay [--seconds 20] [--out bench/results]

On `linear,3` under `vtap serve`, the controller times every LLDP frame from its
packet-out to its packet-in (`transit_ms` in `GET /api/v1/links`). The bench samples the
real links' transit, then starts a live relay between h1 and h3 (`vtap.lab.wormhole`:
two colluding hosts handing each other every LLDP frame over a Unix socket, the fastest
relay two processes on one machine can make), and samples both the real links and the
relayed one, idle and with both cores kept busy. A latency bound could tell a relay
from a link only if every relayed time were above every real one.

Writes bench/results/relay.json and relay.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vtap.bench.report import write_results
from vtap.lab.net import attachment
from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo

HOG = "while True: pass"


def sample(lab: LabSession, seconds: float) -> dict[tuple, list[float]]:
    """Each link's LLDP transit times (ms) over `seconds`: a new one per discovery round."""
    seen: dict[tuple, list[float]] = {}
    last: dict[tuple, float] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for link in lab.ctl.get("/api/v1/links"):
            key = (link["src_dpid"], link["src_port"], link["dst_dpid"], link["dst_port"])
            t = link.get("transit_ms")
            if t is not None and last.get(key) != t:
                seen.setdefault(key, []).append(t)
                last[key] = t
        time.sleep(0.2)
    return seen


def summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {"samples": len(s), "min_ms": round(s[0], 3), "p50_ms": round(statistics.median(s), 3),
            "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 3), "max_ms": round(s[-1], 3)} if s else {"samples": 0}


def split(samples: dict[tuple, list[float]], relayed: set[tuple]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"real": [], "relayed": []}
    for key, times in samples.items():
        out["relayed" if key in relayed else "real"] += times
    return out


def run(seconds: float, work: Path) -> dict[str, Any]:
    with LabSession(parse_topo("linear,3"), work) as lab:
        h1, h3 = lab.net["h1"], lab.net["h3"]
        idle = sample(lab, seconds)
        paths = (str(work / "h1.sock"), str(work / "h3.sock"))
        relays = [h1.popen([sys.executable, "-m", "vtap.lab.wormhole", h1.defaultIntf().name, paths[0], paths[1]]),
                  h3.popen([sys.executable, "-m", "vtap.lab.wormhole", h3.defaultIntf().name, paths[1], paths[0]])]
        try:
            t0 = time.monotonic()
            host_ends = {attachment(h) for h in (h1, h3)}

            def relayed_keys() -> set[tuple]:
                return {(l["src_dpid"], l["src_port"], l["dst_dpid"], l["dst_port"]) for l in lab.ctl.get("/api/v1/links")
                        if (int(l["src_dpid"], 16), l["src_port"]) in host_ends and (int(l["dst_dpid"], 16), l["dst_port"]) in host_ends}

            while len(relayed_keys()) < 2 and time.monotonic() - t0 < 30:
                time.sleep(0.1)
            made_in = time.monotonic() - t0
            relayed = relayed_keys()
            with_relay = sample(lab, seconds)
            hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
            try:
                loaded = sample(lab, seconds)
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
        finally:
            for relay in relays:
                relay.kill()
                relay.wait()
    phases = {"idle, no relay": split(idle, set()), "idle, relay on": split(with_relay, relayed),
              "both cores busy, relay on": split(loaded, relayed)}
    result = {"seconds": seconds, "relayed_links": len(relayed), "relayed_link_made_in_s": round(made_in, 2),
              "phases": {name: {kind: summary(times) for kind, times in p.items()} for name, p in phases.items()}}
    idle_relay = phases["idle, relay on"]
    if idle_relay["relayed"] and idle_relay["real"]:
        result["relay_adds_p50_ms"] = round(statistics.median(idle_relay["relayed"]) - statistics.median(idle_relay["real"]), 3)
    busy = phases["both cores busy, relay on"]
    result["bound_separates"] = bool(busy["relayed"] and busy["real"] and idle_relay["relayed"]
                                     and min(idle_relay["relayed"] + busy["relayed"]) > max(idle_relay["real"] + busy["real"]))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"### LLDP transit, packet-out to packet-in (`linear,3`; {result['seconds']:.0f} s a phase)\n",
             f"A live relay between h1 and h3 made {result['relayed_links']} link directions in "
             f"{result['relayed_link_made_in_s']} s.\n",
             "| phase | links | samples | min, ms | p50, ms | p95, ms | max, ms |", "|---|---|---|---|---|---|---|"]
    for name, kinds in result["phases"].items():
        for kind, s in kinds.items():
            if s.get("samples"):
                lines.append(f"| {name} | {kind} | {s['samples']} | {s['min_ms']} | {s['p50_ms']} | {s['p95_ms']} | {s['max_ms']} |")
    lines.append("")
    if "relay_adds_p50_ms" in result:
        lines.append(f"The relay adds {result['relay_adds_p50_ms']} ms at the median (idle). "
                     f"A latency bound separates every relayed time from every real one: "
                     f"{'yes' if result['bound_separates'] else 'no'}.\n")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="vtap-bench-relay-"))
    result = run(args.seconds, work)
    return write_results(result, markdown(result), args.out, "relay")
