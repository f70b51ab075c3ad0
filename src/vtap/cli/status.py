"""`vtap topo` and `vtap cluster`: what a running controller sees (devices, links and
hosts) and how its cluster stands."""

from __future__ import annotations

import argparse
import json

from vtap.cli.rest import add_client_flags, request
from vtap.console import table


def cmd_topo(args: argparse.Namespace) -> int:
    topo = request("GET", args, "/api/v1/topology")
    if args.json:
        print(json.dumps(topo, indent=2))
        return 0
    print(f"Devices ({len(topo['devices'])})")
    print(table(
        [[d["dpid"], d["sync"], sum(p["up"] for p in d["ports"]), len(d["ports"]), d["connected_since"]] for d in topo["devices"]],
        ["DPID", "SYNC", "UP", "PORTS", "CONNECTED SINCE"],
    ))
    print(f"\nLinks ({len(topo['links'])}, one per direction)")
    print(table([[l["src_dpid"], l["src_port"], l["dst_dpid"], l["dst_port"]] for l in topo["links"]],
                 ["SRC DPID", "SRC PORT", "DST DPID", "DST PORT"]))
    print(f"\nHosts ({len(topo['hosts'])})")
    print(table([[h["mac"], ",".join(h["ips"]), h["dpid"], h["port"], h["last_seen"]] for h in topo["hosts"]],
                 ["MAC", "IPS", "DPID", "PORT", "LAST SEEN"]))
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    c = request("GET", args, "/api/v1/cluster")
    if args.json:
        print(json.dumps(c, indent=2))
        return 0
    if c["mode"] == "standalone":
        print(f"standalone: one instance, store {c['store']}")
        return 0
    store = "reachable" if c["store_reachable"] else f"UNREACHABLE ({c['store_error']})"
    print(f"this instance: {c['member']}, {c['role']} since {c['since']}; leader: {c['leader'] or 'none'} "
          f"(generation {c['generation']}); store {c['store']} {store}; lease TTL {c['lease_ttl_s']} s")
    print(table([[m["id"], m["role"], m["api"], m["since"]] for m in c["members"]], ["MEMBER", "ROLE", "API", "SINCE"]))
    roles: dict[str, int] = {}
    for s in c["switches"]:
        roles[s["role"]] = roles.get(s["role"], 0) + 1
    print("OpenFlow role of this instance: " + (", ".join(f"{n} {r}" for r, n in sorted(roles.items())) or "no switch connected"))
    return 0


def add_cluster_parser(sub: argparse._SubParsersAction) -> None:
    cl = sub.add_parser("cluster", help="the cluster's members, its leader, and this instance's role at the switches")
    add_client_flags(cl, "print GET /api/v1/cluster as JSON")
    cl.set_defaults(func=cmd_cluster)


def add_topo_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("topo", help="print devices, links and hosts")
    add_client_flags(t, "print the topology document as JSON")
    t.set_defaults(func=cmd_topo)
