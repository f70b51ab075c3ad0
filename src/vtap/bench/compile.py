"""`python -m vtap.bench.compile`: one policy change among 10,000, per kind of policy, in
the compiler alone (pure Python: no OVS, no controller).

    python -m vtap.bench.compile [--count 10000] [--repeats 5] [--kinds plain,pool] [--out DIR]
    python -m vtap.bench.compile --memory [--count 100000]

Per kind (plain, budgeted, tunnelled, rewrite, pool), `count` policies of that kind on
fattree,4 (the policies of `vtap bench controlplane`: distinct source, destination and
UDP port, each copied to a third host), compiled once with a memo as the controller
keeps one; then one policy changed at a time, as the controller compiles after a
request: its port updated, disabled, enabled, deleted and added back. Each change's
`compile_network` is timed (median over `repeats` rounds), and whether it took the
in-place path (compile/taps/inplace.py) or the whole compile is said beside it.

The kinds differ in how the copy travels, which is what decides whether the compiler
can change its last compilation in place: a copy budget (cut, sampled, rate-limited:
tables 4-6 and meters), a tunnel to a remote collector (each encapsulation, keyed),
the seed's destination rewrite (with recovery rules at the monitor's switch), a pool
of monitors. The view has every switch's LOCAL and tunnel ports, so tunnelled
policies compile as on a switch that `vtap serve --tunnels` set up.

`--memory` says instead what one whole compile of `count` plain policies holds: the
process's RSS before any policy, with the policies, and with their compile, the
collector run and the C heap trimmed each time (as the controller does after a
compile). One size per process: a second size in the same process would start from
the first one's arenas.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from vtap.bench.controlplane import policies
from vtap.compile.network import compile_network
from vtap.compile.taps import TapMemo
from vtap.control.memory import give_back, rss_mib
from vtap.lab.topos import VtapTopo, host_params, parse_topo
from vtap.model.network import OFPP_LOCAL, TUNNEL_KINDS, Device, Host, Link, Port
from vtap.model.policy import Tap, TapSpec
from vtap.model.view import NetworkView

TUNNEL_PORT_BASE = 100
BUDGETS = ({"snaplen": 128}, {"sample": 4}, {"rate_limit_pps": 1000})
TUNNELS = ("gre", "vxlan", "erspan", "geneve")


def topo_view(topo: VtapTopo) -> NetworkView:
    """The view a controller builds for `topo` once it has seen every host (as the unit
    tests' `view_from_topo`), each switch with its LOCAL port and vtap's tunnel ports."""
    dpid = {n: int(topo.nodeInfo(n)["dpid"], 16) for n in topo.switches()}
    ports: dict[int, list[Port]] = {d: [] for d in dpid.values()}
    links, hosts = set(), {}
    for a, b in topo.links():
        pa, pb = topo.port(a, b)
        for node, port in ((a, pa), (b, pb)):
            if node in dpid:
                d = dpid[node]
                ports[d].append(Port(port, f"{node}-eth{port}", f"02:00:00:00:{d % 256:02x}:{port:02x}", True))
        if a in dpid and b in dpid:
            links |= {Link(dpid[a], pa, dpid[b], pb), Link(dpid[b], pb, dpid[a], pa)}
        else:
            h, s, ps = (a, b, pb) if b in dpid else (b, a, pa)
            params = host_params(int(h[1:]))
            hosts[params["mac"]] = Host(params["mac"], (params["ip"].split("/")[0],), dpid[s], ps)
    devices = {}
    for d, p in ports.items():
        name = f"s{d:x}"
        extra = [Port(OFPP_LOCAL, name, f"0a:00:00:00:{d >> 8 & 0xff:02x}:{d & 0xff:02x}", True)]
        extra += [Port(TUNNEL_PORT_BASE + i, f"{name}-{k}", f"0e:00:00:00:00:{i:02x}", True) for i, k in enumerate(TUNNEL_KINDS)]
        devices[d] = Device(d, tuple(sorted(p, key=lambda x: x.port_no)) + tuple(extra), 0.0)
    return NetworkView(devices=devices, links=frozenset(links), hosts=hosts)


KINDS = ("plain", "budgeted", "tunnelled", "rewrite", "pool")


def as_kind(kind: str, body: dict, k: int) -> dict:
    """The controlplane bench's policy `body` (the `k`th) made one of `kind`: budgets and
    tunnel transports taken in turn, a pool of its monitor and the next host."""
    if kind == "budgeted":
        return {**body, **BUDGETS[k % len(BUDGETS)]}
    if kind == "tunnelled":  # keys below 1024: ERSPAN's session ids
        return {**body, "transport": TUNNELS[k % len(TUNNELS)], "tunnel_key": k % 1024}
    if kind == "rewrite":
        return {**body, "transport": "rewrite"}
    if kind == "pool":
        monitor = body["monitor_ip"]
        second = f"10.0.0.{int(monitor.rsplit('.', 1)[1]) % 16 + 1}"
        return {**{f: v for f, v in body.items() if f != "monitor_ip"}, "monitor_pool": [monitor, second]}
    return body


def population(kind: str, count: int) -> dict[int, Tap]:
    """`count` policies of `kind`, by id."""
    return {k + 1: Tap(id=k + 1, spec=TapSpec(**as_kind(kind, body, k))) for k, body in enumerate(policies(0, count, 20000))}


def changes(tap: Tap) -> list[tuple[str, Tap | None]]:
    """One round of changes to one policy, ending where it began."""
    spec = tap.spec
    moved = Tap(id=tap.id, spec=spec.model_copy(update={"dst_port": spec.dst_port + 1}))
    disabled = Tap(id=tap.id, spec=spec.model_copy(update={"enabled": False}))
    return [("update", moved), ("update back", tap), ("disable", disabled), ("enable", tap), ("delete", None), ("add", tap)]


def measure(kind: str, count: int, repeats: int) -> dict:
    """The whole compile of `count` policies of `kind`, then each change's compile (ms)."""
    view = topo_view(parse_topo("fattree,4"))
    taps = population(kind, count)
    memo = TapMemo()
    t = time.perf_counter()
    compile_network(view, taps, memo=memo)
    whole = (time.perf_counter() - t) * 1000
    target = taps[count // 2]
    times: dict[str, list[float]] = {}
    in_place: dict[str, int] = {}
    for _ in range(repeats):
        for op, tap in changes(target):
            if tap is None:
                del taps[target.id]
            else:
                taps[target.id] = tap
            before = memo.in_place
            t = time.perf_counter()
            compile_network(view, taps, memo=memo, changed={target.id})
            times.setdefault(op, []).append((time.perf_counter() - t) * 1000)
            in_place[op] = in_place.get(op, 0) + memo.in_place - before
    return {"whole_ms": round(whole, 1),
            "changes": {op: {"median_ms": round(statistics.median(v), 2), "in_place": f"{in_place[op]}/{len(v)}"}
                        for op, v in times.items()}}


def memory(count: int) -> dict:
    """RSS (MiB) of this process before any policy, with `count` plain policies, with one
    whole compile of them and its memo kept (as the controller keeps both: the memo is
    what the in-place compile changes), and with the compile's result alone; the share
    of each per policy (KiB)."""
    view = topo_view(parse_topo("fattree,4"))

    def settled() -> float:
        gc.collect()
        give_back()
        return rss_mib()

    def per_policy(mib: float) -> float:
        return round(mib * 1024 / count, 2)

    base = settled()
    taps = population("plain", count)
    with_policies = settled()
    memo = TapMemo()
    gc.disable()  # as the controller compiles: the collector paused (control/collector.py)
    t = time.perf_counter()
    compiled = compile_network(view, taps, memo=memo)
    seconds = time.perf_counter() - t
    gc.enable()
    with_compile = settled()
    del memo
    result_alone = settled()
    del compiled
    return {"policies": count, "base_mib": base, "policies_mib": with_policies, "compiled_mib": with_compile,
            "result_alone_mib": result_alone, "compile_s": round(seconds, 2),
            "policies_kib_per_policy": per_policy(with_policies - base),
            "compile_kib_per_policy": per_policy(with_compile - with_policies),
            "memo_kib_per_policy": per_policy(with_compile - result_alone)}


def memory_markdown(m: dict) -> str:
    return (f"{m['policies']:,} plain policies on fattree,4: RSS {m['base_mib']} MiB before any, {m['policies_mib']} MiB "
            f"with them ({m['policies_kib_per_policy']} KiB each), {m['compiled_mib']} MiB with one whole compile and its "
            f"memo ({m['compile_s']} s; {m['compile_kib_per_policy']} KiB a policy, of which the memo "
            f"{m['memo_kib_per_policy']} KiB)\n")


def markdown(result: dict, count: int) -> str:
    ops = list(next(iter(result.values()))["changes"])
    lines = [f"One change among {count:,} policies of a kind, fattree,4: `compile_network` ms (median; in place/rounds)", "",
             "| kind | whole compile | " + " | ".join(ops) + " |", "|---|---|" + "---|" * len(ops)]
    for kind, r in result.items():
        cells = [f"{r['changes'][op]['median_ms']:.1f} ({r['changes'][op]['in_place']})" for op in ops]
        lines.append(f"| {kind} | {r['whole_ms']:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtap.bench.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--out", default=None, help="write compile.json and compile.md here too")
    parser.add_argument("--memory", action="store_true", help="the RSS of one whole compile of --count plain policies instead")
    args = parser.parse_args(argv)
    if args.memory:
        m = memory(args.count)
        print(memory_markdown(m), end="")
        return 0
    result = {kind: measure(kind, args.count, args.repeats) for kind in args.kinds.split(",")}
    text = markdown(result, args.count)
    if args.out:
        from vtap.bench.report import write_results
        return write_results(result, text, args.out, "compile")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
