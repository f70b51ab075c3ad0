"""`vtap bench foundation`: fat-tree bring-up, flow-mod throughput, controller memory.

    vtap bench foundation [--fattrees 4,6,8] [--sizes 1000,10000] [--repeat 3] [--quick] [--out bench/results]

1. `fattree,k` (k = 4, 6, 8 by default) with the real controller (`vtap serve` as its
   own process) on a network that talks (IPv6 on everywhere, every host chattering from
   the first second): time from the last switch connecting to every link proven, every
   port's role known and every switch in sync; packet-ins per second during that and
   after it; a `pingall` (k <= 6); the controller's RSS then.
2. Flow-mods per second the controller pushes into one OVS bridge through its
   reconciler (diff, os-ken encoding, ONF bundle, barrier), one by one and in a bundle,
   against `ovs-ofctl add-flows` (plain and `--bundle`) of the same rules as the ceiling.

Prints Markdown; writes bench/results/foundation.json and foundation.md
(foundation-quick.* with --quick, so a smoke run never replaces the measured figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from vtap.bench.report import write_results
from vtap.control.memory import rss_mib
from vtap.compile.pipeline import COOKIE_FORWARDING, TABLE_FORWARD
from vtap.control.reconciler import SwitchReconciler
from vtap.lab.convergence import measure
from vtap.lab.net import expected_links
from vtap.lab.ovs import PrivateOVS
from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo
from vtap.model.rules import FlowRule, Output, SwitchRules, match
from vtap.openflow import translate
from vtap.openflow.channel import Datapath, OpenFlowServer

BRIDGE = "bench0"
# How the rules get into the bridge: vtap's reconciler (one bundle), vtap's channel one
# flow-mod at a time, and ovs-ofctl without and with a bundle (the ceiling).
MODES = ("vtap_bundle", "vtap_one_by_one", "ofctl", "ofctl_bundle")
# Small enough to take seconds, yet more than one row in the flow-mod table.
QUICK_SIZES = [100, 1000]


def bench_fattree(k: int, work: Path, *, ping: bool) -> dict[str, Any]:
    """Bring up fattree,k under `vtap serve` on a network that talks (Linux defaults, every
    host chattering from the first second): convergence after the last switch connected,
    packet-ins during and after it; then pingall once (with `ping`) and the controller's RSS."""
    with LabSession(parse_topo(f"fattree,{k}"), work, chatter=True, ready_timeout=240) as lab:
        conv = measure(lab)
        t_ready = time.monotonic()
        loss = lab.net.pingAll(timeout="1") if ping else None
        t_ping = time.monotonic() - t_ready
        t = lab.timings
        return {
            "k": k,
            "switches": len(lab.net.switches),
            "hosts": len(lab.net.hosts),
            "links": len(expected_links(lab.net)),
            "build_s": round(t["build_s"], 2),
            "discovered_in_sync_s": round(t["discovered_in_sync_s"], 2),
            **conv.as_dict(),
            "pingall_s": round(t_ping, 2) if ping else None,
            "pingall_loss_pct": loss,
            "controller_rss_mib": rss_mib(lab.ctl.proc.pid),
        }


def rules(n: int) -> list[FlowRule]:
    """`n` distinct forwarding rules, one per destination MAC 02:00:<i as 4 bytes>."""
    macs = (":".join(f"{b:02x}" for b in (2 << 40 | i).to_bytes(6, "big")) for i in range(n))
    return [FlowRule(TABLE_FORWARD, 100, match(eth_dst=mac), (Output(1),), cookie=COOKIE_FORWARDING) for mac in macs]


def ofctl_text(flows: list[FlowRule]) -> str:
    """The same rules in `ovs-ofctl add-flows` syntax, so both sides load identical tables."""
    return "".join(
        f"cookie=0x{f.cookie:x},table={f.table},priority={f.priority},dl_dst={dict(f.match)['eth_dst']},actions=output:1\n"
        for f in flows
    )


class _FirstSwitch:
    """A SwitchHandler that only hands over the first switch to connect: the bench
    drives that one channel itself, without the controller's applications."""

    def __init__(self) -> None:
        self.connected: asyncio.Future[Datapath] = asyncio.get_running_loop().create_future()

    def switch_connected(self, dp: Datapath) -> None:
        if not self.connected.done():
            self.connected.set_result(dp)

    def switch_disconnected(self, dp: Datapath) -> None: ...
    def packet_in(self, dp: Datapath, msg: Any) -> None: ...
    def port_status(self, dp: Datapath, msg: Any) -> None: ...


async def load_once(mode: str, dp: Datapath, ovs: PrivateOVS, flows: list[FlowRule], path: Path) -> float:
    """Empty the bridge, load `flows` the `mode` way, check all arrived; seconds taken."""
    ovs.ofctl("del-flows", BRIDGE)
    await dp.barrier()
    t = time.perf_counter()
    if mode == "vtap_bundle":
        # The real path: read back, diff, encode, bundle, barrier.
        rec = SwitchReconciler(dp, desired=SwitchRules(frozenset(flows)), generation=1)
        rec.start()
        await rec.wait_synced(120)
        await rec.stop()
    elif mode == "vtap_one_by_one":
        await dp.send_batch([translate.flow_add(f) for f in flows], atomic=False)
    elif mode == "ofctl":
        ovs.ofctl("add-flows", BRIDGE, str(path))
    else:
        ovs.ofctl("--bundle", "add-flows", BRIDGE, str(path))
    dt = time.perf_counter() - t
    count = sum("cookie=" in line for line in ovs.ofctl("--no-stats", "dump-flows", BRIDGE).splitlines())
    if count != len(flows):
        raise RuntimeError(f"{mode}: {count} flows in {BRIDGE}, expected {len(flows)}")
    return dt


async def bench_flowmods(ovs: PrivateOVS, sizes: list[int], repeat: int, work: Path) -> list[dict[str, Any]]:
    """One row per size: the median rules/s of each mode over `repeat` interleaved runs."""
    handler = _FirstSwitch()
    server = OpenFlowServer(handler, "127.0.0.1", 0)
    await server.start()
    ovs.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev", "fail_mode=secure",
              "protocols=OpenFlow13", "other-config:disable-in-band=true")
    ovs.vsctl("set-controller", BRIDGE, f"tcp:127.0.0.1:{server.port}")
    out = []
    try:
        dp = await asyncio.wait_for(handler.connected, 20)
        for n in sizes:
            flows = rules(n)
            path = work / f"{n}.flows"
            path.write_text(ofctl_text(flows))
            samples: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(repeat):
                for mode in MODES:
                    samples[mode].append(n / await load_once(mode, dp, ovs, flows, path))
            row: dict[str, Any] = {"rules": n}
            row.update({f"{mode}_per_s": round(statistics.median(rates)) for mode, rates in samples.items()})
            row["vtap_bundle_vs_ofctl_bundle"] = round(row["vtap_bundle_per_s"] / row["ofctl_bundle_per_s"], 2)
            out.append(row)
    finally:
        ovs.vsctl("--if-exists", "del-br", BRIDGE)
        await server.stop()
    return out


def machine() -> dict[str, Any]:
    """What the figures depend on, recorded beside them."""
    ovs = subprocess.run(["ovs-vswitchd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"cpus": len(os.sched_getaffinity(0)), "kernel": platform.release(), "ovs": ovs,
            "python": platform.python_version()}


def main(args: argparse.Namespace) -> int:
    """`vtap bench foundation`: the two parts one after the other, then the reports."""
    sizes = QUICK_SIZES if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 1 if args.quick else args.repeat
    work = Path(tempfile.mkdtemp(prefix="vtap-bench-fd-"))
    ks = [4] if args.quick else [int(k) for k in args.fattrees.split(",")]
    fattrees = [bench_fattree(k, work / f"fattree{k}", ping=k <= 6) for k in ks]
    # A bridge of its own on a fresh OVS, after the lab's is gone: only one userspace
    # OVS can run at a time.
    ovs = PrivateOVS(work / "flowmods").start()
    ovs.export()
    try:
        flowmods = asyncio.run(bench_flowmods(ovs, sizes, repeat, work))
    finally:
        ovs.stop()
        ovs.restore_env()
    result = {"machine": machine(), "fattrees": fattrees, "flowmods": flowmods, "repeat": repeat, "quick": args.quick}
    return write_results(result, markdown(result), args.out, "foundation" + ("-quick" if args.quick else ""))


def markdown(result: dict[str, Any]) -> str:
    """The two tables the README quotes, from the JSON alone (so they can be rebuilt)."""
    lines = [
        "### Coming up on a network that talks (fattree,k; IPv6 on everywhere, every host chattering)\n",
        "| k | switches | hosts | link directions | last switch connected -> converged, s | first connected -> converged, s "
        "| packet-ins/s during | packet-ins/s per switch after | pingall | RSS, MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in result["fattrees"]:
        ping = f"{f['pingall_loss_pct']:.0f}% loss, {f['pingall_s']} s" if f["pingall_loss_pct"] is not None else "not run"
        lines.append(f"| {f['k']} | {f['switches']} | {f['hosts']} | {f['links']} | {f['converged_after_last_connect_s']} | "
                     f"{f['converged_after_first_connect_s']} | {f['packet_ins_per_s_during']} | "
                     f"{f['packet_ins_per_switch_s_after']} | {ping} | {f['controller_rss_mib']} |")
    lines += [
        "\nConverged: every link proven both ways, every port's role known, every switch in sync.\n",
        f"### Flow-mods per second into one bridge (median of {result['repeat']} runs)\n",
        "| rules | vtap, bundle | vtap, one by one | ovs-ofctl add-flows | ovs-ofctl --bundle add-flows | vtap bundle / ofctl bundle |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['rules']:,} | {r['vtap_bundle_per_s']:,} | {r['vtap_one_by_one_per_s']:,} | {r['ofctl_per_s']:,} | "
              f"{r['ofctl_bundle_per_s']:,} | {r['vtap_bundle_vs_ofctl_bundle']} |" for r in result["flowmods"]]
    return "\n".join(lines) + "\n"
