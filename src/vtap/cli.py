"""The `vtap` command: serve the controller, build a lab, look at the topology."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

import httpx

DEFAULT_API = "http://127.0.0.1:8080"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers), line.format(*("-" * w for w in widths))]
    out += [line.format(*(str(x) for x in r)) for r in rows]
    return "\n".join(out)


def cmd_serve(args: argparse.Namespace) -> int:
    from vtap.control.server import serve

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(
        serve(
            of_host=args.of_host,
            of_port=args.of_port,
            api_host=args.api_host,
            api_port=args.api_port,
            state_dir=args.state_dir,
            lldp_interval=args.lldp_interval,
        )
    )
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from vtap.lab.run import lab

    api = args.api
    if api is None:
        host = args.controller.rpartition(":")[0] or "127.0.0.1"
        api = f"http://{host}:8080"
    return lab(args.topo, args.controller, args.run, None if args.no_wait else api, args.ready_timeout)


def _get(api: str, path: str):
    try:
        resp = httpx.get(f"{api.rstrip('/')}{path}", timeout=10)
    except httpx.HTTPError as exc:
        raise SystemExit(f"vtap: cannot reach the controller at {api}: {exc}") from None
    if resp.status_code != 200:
        raise SystemExit(f"vtap: {path}: HTTP {resp.status_code}: {resp.text}")
    return resp.json()


def cmd_topo(args: argparse.Namespace) -> int:
    topo = _get(args.api, "/api/v1/topology")
    if args.json:
        print(json.dumps(topo, indent=2))
        return 0
    print(f"Devices ({len(topo['devices'])})")
    print(_table(
        [[d["dpid"], d["sync"], sum(p["up"] for p in d["ports"]), len(d["ports"]), d["connected_since"]] for d in topo["devices"]],
        ["DPID", "SYNC", "UP", "PORTS", "CONNECTED SINCE"],
    ))
    print(f"\nLinks ({len(topo['links'])}, one per direction)")
    print(_table([[l["src_dpid"], l["src_port"], l["dst_dpid"], l["dst_port"]] for l in topo["links"]],
                 ["SRC DPID", "SRC PORT", "DST DPID", "DST PORT"]))
    print(f"\nHosts ({len(topo['hosts'])})")
    print(_table([[h["mac"], ",".join(h["ips"]), h["dpid"], h["port"], h["last_seen"]] for h in topo["hosts"]],
                 ["MAC", "IPS", "DPID", "PORT", "LAST SEEN"]))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtap", description="A virtual TAP for software-defined networks.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the controller (OpenFlow 1.3 + REST API)")
    s.add_argument("--of-host", default="0.0.0.0", help="address for OpenFlow switches (default 0.0.0.0)")
    s.add_argument("--of-port", type=int, default=6653, help="OpenFlow port (default 6653)")
    s.add_argument("--api-host", default="127.0.0.1", help="address of the REST API (default 127.0.0.1)")
    s.add_argument("--api-port", type=int, default=8080, help="REST API port (default 8080)")
    s.add_argument("--state-dir", default="/var/lib/vtap", help="where state is kept (SQLite)")
    s.add_argument("--lldp-interval", type=float, default=1.0, help="seconds between LLDP rounds (default 1)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=cmd_serve)

    l = sub.add_parser("lab", help="build a Mininet topology on a private userspace OVS")
    l.add_argument("--topo", required=True, help="single,N | linear,N | tree,DEPTH,FANOUT | fattree,K")
    l.add_argument("--controller", default="127.0.0.1:6653", help="controller HOST:PORT (default 127.0.0.1:6653)")
    l.add_argument("--api", default=None, help="controller REST API to wait on (default http://HOST:8080)")
    l.add_argument("--no-wait", action="store_true", help="do not wait for the controller to see the topology")
    l.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for the controller (default 60)")
    l.add_argument("--run", default=None, help="run this command (e.g. pingall) and exit with its status")
    l.set_defaults(func=cmd_lab)

    t = sub.add_parser("topo", help="print devices, links and hosts")
    t.add_argument("--api", default=DEFAULT_API, help=f"controller REST API (default {DEFAULT_API})")
    t.add_argument("--json", action="store_true", help="print the topology document as JSON")
    t.set_defaults(func=cmd_topo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"vtap: {exc}", file=sys.stderr)
        return 2
