"""Foundation benchmark: fat-tree bring-up, flow-mod throughput, controller memory.

    .venv/bin/python bench/foundation.py [--sizes 1000,10000] [--repeat 3]

1. `fattree,4` with the real controller (`vtap serve` as its own process): time from
   the switches being started to all of them connected, to every link discovered and
   every switch in sync, and then to a `pingall` with 0% loss; the controller's RSS then.
2. Flow-mods per second the controller pushes into one OVS bridge through its
   reconciler (diff, os-ken encoding, ONF bundle, barrier), one by one and in a bundle,
   against `ovs-ofctl add-flows` (plain and `--bundle`) of the same rules as the ceiling.

Prints a Markdown table and writes bench/results/foundation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vtap.compile.pipeline import COOKIE_FORWARDING, TABLE_FORWARD  # noqa: E402
from vtap.control.reconciler import SwitchReconciler  # noqa: E402
from vtap.lab.net import expected_links  # noqa: E402
from vtap.lab.ovs import PrivateOVS  # noqa: E402
from vtap.lab.session import LabSession  # noqa: E402
from vtap.lab.topos import parse_topo  # noqa: E402
from vtap.model.rules import FlowRule, Output, SwitchRules, match  # noqa: E402
from vtap.openflow import translate  # noqa: E402
from vtap.openflow.channel import Datapath, OpenFlowServer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_fattree(work: Path) -> dict:
    from mininet.log import setLogLevel

    with LabSession(parse_topo("fattree,4"), work) as lab:
        t_ready = time.monotonic()
        setLogLevel("error")
        loss = lab.net.pingAll(timeout="1")
        t_ping = time.monotonic() - t_ready
        t = lab.timings
        return {
            "switches": len(lab.net.switches),
            "hosts": len(lab.net.hosts),
            "links": len(expected_links(lab.net)),
            "build_s": round(t["build_s"], 2),
            "connected_s": round(t["connected_s"], 2),
            "discovered_in_sync_s": round(t["discovered_in_sync_s"], 2),
            "pingall_s": round(t_ping, 2),
            "pingall_loss_pct": loss,
            "ready_to_ping_s": round(t["discovered_in_sync_s"] + t_ping, 2),
            "controller_rss_mib": round(rss_kib(lab.ctl.proc.pid) / 1024, 1),
        }


def rules(n: int) -> list[FlowRule]:
    return [
        FlowRule(TABLE_FORWARD, 100, match(eth_dst=f"02:00:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"),
                 (Output(1),), cookie=COOKIE_FORWARDING)
        for i in range(n)
    ]


def ofctl_text(flows: list[FlowRule]) -> str:
    return "".join(
        f"cookie=0x{f.cookie:x},table={f.table},priority={f.priority},dl_dst={dict(f.match)['eth_dst']},actions=output:1\n"
        for f in flows
    )


class _Catcher:
    def __init__(self):
        self.connected: asyncio.Future = asyncio.get_running_loop().create_future()

    def switch_connected(self, dp: Datapath) -> None:
        if not self.connected.done():
            self.connected.set_result(dp)

    def switch_disconnected(self, dp: Datapath) -> None: ...
    def packet_in(self, dp: Datapath, msg) -> None: ...
    def port_status(self, dp: Datapath, msg) -> None: ...


async def bench_flowmods(ovs: PrivateOVS, sizes: list[int], repeat: int) -> list[dict]:
    catcher = _Catcher()
    server = OpenFlowServer(catcher, "127.0.0.1", 0)
    await server.start()
    ovs.vsctl("add-br", "bench0", "--", "set", "bridge", "bench0", "datapath_type=netdev", "fail_mode=secure",
              "protocols=OpenFlow13", "other-config:disable-in-band=true")
    ovs.vsctl("set-controller", "bench0", f"tcp:127.0.0.1:{server.port}")
    dp = await asyncio.wait_for(catcher.connected, 20)
    out = []
    try:
        for n in sizes:
            flows = rules(n)
            desired = SwitchRules(frozenset(flows))
            path = Path(tempfile.mkstemp(suffix=".flows")[1])
            path.write_text(ofctl_text(flows))
            row: dict = {"rules": n}
            samples: dict[str, list[float]] = {k: [] for k in ("vtap_bundle", "vtap_one_by_one", "ofctl", "ofctl_bundle")}
            for _ in range(repeat):
                for mode in samples:
                    ovs.ofctl("del-flows", "bench0")
                    await dp.barrier()
                    t = time.perf_counter()
                    if mode == "vtap_bundle":
                        # The real path: read back, diff, encode, bundle, barrier.
                        rec = SwitchReconciler(dp, desired=desired)
                        rec.start()
                        await rec.wait_synced(120)
                        await rec.stop()
                    elif mode == "vtap_one_by_one":
                        await dp.send_batch([translate.flow_add(f) for f in flows], atomic=False)
                    elif mode == "ofctl":
                        ovs.ofctl("add-flows", "bench0", str(path))
                    else:
                        ovs.ofctl("--bundle", "add-flows", "bench0", str(path))
                    dt = time.perf_counter() - t
                    count = sum("cookie=" in l for l in ovs.ofctl("--no-stats", "dump-flows", "bench0").splitlines())
                    assert count == n, (mode, count, n)
                    samples[mode].append(n / dt)
            for mode, rates in samples.items():
                row[f"{mode}_per_s"] = round(statistics.median(rates))
            row["vtap_bundle_vs_ofctl_bundle"] = round(row["vtap_bundle_per_s"] / row["ofctl_bundle_per_s"], 2)
            path.unlink()
            out.append(row)
    finally:
        ovs.vsctl("del-br", "bench0")
        await server.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="vtap-bench-"))

    fattree = bench_fattree(work / "fattree")
    ovs = PrivateOVS(work / "flowmods").start()
    ovs.export()
    try:
        flowmods = asyncio.run(bench_flowmods(ovs, sizes, args.repeat))
    finally:
        ovs.stop()
        ovs.restore_env()

    ovs_version = subprocess.run(["ovs-vswitchd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    result = {
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "kernel": platform.release(), "ovs": ovs_version,
                    "python": platform.python_version()},
        "fattree4": fattree,
        "flowmods": flowmods,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "foundation.json").write_text(json.dumps(result, indent=2) + "\n")

    f = fattree
    print(f"\n### fattree,4 bring-up ({f['switches']} switches, {f['hosts']} hosts, {f['links']} link directions)\n")
    print("| step | seconds |\n|---|---|")
    print(f"| Mininet builds the topology | {f['build_s']} |")
    print(f"| all switches connected | {f['connected_s']} |")
    print(f"| every link discovered, every switch in sync | {f['discovered_in_sync_s']} |")
    print(f"| pingall ({f['pingall_loss_pct']:.0f}% loss) took | {f['pingall_s']} |")
    print(f"| switches started -> pingall done | {f['ready_to_ping_s']} |")
    print(f"\nController RSS with the fat-tree connected and all hosts known: {f['controller_rss_mib']} MiB\n")
    print("### Flow-mods per second into one bridge (median of", args.repeat, "runs)\n")
    print("| rules | vtap, bundle | vtap, one by one | ovs-ofctl add-flows | ovs-ofctl --bundle add-flows | vtap bundle / ofctl bundle |")
    print("|---|---|---|---|---|---|")
    for r in flowmods:
        print(f"| {r['rules']} | {r['vtap_bundle_per_s']:,} | {r['vtap_one_by_one_per_s']:,} | {r['ofctl_per_s']:,} | "
              f"{r['ofctl_bundle_per_s']:,} | {r['vtap_bundle_vs_ofctl_bundle']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
