"""`vtap tap` and `vtap apply`: TAP policies one at a time or as a whole file, their
flags, and how policies, their rules and their counters are printed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vtap.cli.rest import add_client_flags, emit, request
from vtap.console import table

SPEC_FIELDS = ["src_mac", "src_ip", "dst_mac", "dst_ip", "monitor_mac", "monitor_ip", "ip_proto", "vlan_id",
               "src_port", "dst_port", "direction", "transport", "description"]
BUDGET_FIELDS = ["monitor_pool", "snaplen", "sample", "rate_limit_pps", "tunnel_key", "erspan_version"]  # flags of their own (see _spec_from_args)


def _spec_from_args(args: argparse.Namespace, base: dict | None = None) -> dict:
    spec = dict(base or {})
    if args.name is not None:
        spec["name"] = args.name
    for f in SPEC_FIELDS:
        value = getattr(args, f, None)
        if value is not None:
            spec[f] = value
    for f, off in (("snaplen", None), ("sample", 1), ("rate_limit_pps", None), ("tunnel_key", None), ("erspan_version", None)):
        value = getattr(args, f, None)
        if value is not None:
            spec[f] = off if value == "off" else value
    pool = getattr(args, "monitor_pool", None)
    if pool is not None:
        spec["monitor_pool"] = [m.strip() for m in pool.split(",")] if pool not in ("", "off") else None
        if spec["monitor_pool"] is not None:
            spec.pop("monitor_mac", None)
            spec.pop("monitor_ip", None)
    elif getattr(args, "monitor_mac", None) or getattr(args, "monitor_ip", None):
        spec.pop("monitor_pool", None)  # an update naming one monitor replaces a pool
    if getattr(args, "enabled", None) is not None:
        spec["enabled"] = args.enabled
    return spec


def _print_taps(taps: list[dict]) -> None:
    def ident(t):
        src = t["src_ip"] or t["src_mac"] or "*"
        dst = t["dst_ip"] or t["dst_mac"] or "*"
        arrow = {"forward": "->", "reverse": "<-", "both": "<->"}[t["direction"]]
        return f"{src} {arrow} {dst}"

    def filters(t):
        parts = []
        if t["ip_proto"] is not None:
            parts.append(f"proto {t['ip_proto']}")
        if t["vlan_id"] is not None:
            parts.append(f"vlan {t['vlan_id']}")
        if t["src_port"] is not None:
            parts.append(f"sport {t['src_port']}")
        if t["dst_port"] is not None:
            parts.append(f"dport {t['dst_port']}")
        return " ".join(parts) or "-"

    def budget(t):
        parts = []
        if t.get("snaplen"):
            parts.append(f"snaplen {t['snaplen']}")
        if t.get("sample", 1) > 1:
            parts.append(f"1/{t['sample']} flows")
        if t.get("rate_limit_pps"):
            parts.append(f"<= {t['rate_limit_pps']} pps")
        return ", ".join(parts) or "-"

    def monitor(t):
        if t.get("monitor_pool"):
            return "pool " + ",".join(t["monitor_pool"])
        if t["transport"] in ("gre", "erspan", "vxlan", "geneve"):
            key = t["tunnel_key"] if t.get("tunnel_key") is not None else t["id"]
            return f"collector {t['monitor_ip']} key {key}"
        return t["monitor_ip"] or t["monitor_mac"]

    print(table([[t["id"], t["name"], ident(t), filters(t), monitor(t), t["transport"], budget(t),
                   t["status"] + (f" ({t['status_reason']})" if t["status_reason"] else "")] for t in taps],
                 ["ID", "NAME", "FLOW", "FILTERS", "MONITOR", "TRANSPORT", "BUDGET", "STATUS"]))


def _print_show(tap: dict) -> None:
    for key, value in tap.items():
        print(f"{key:14} {value if value is not None else '*'}")


def _print_rules(out: dict) -> None:
    for sw in out["switches"]:
        print(f"# switch {sw['dpid']}")
        for line in sw["groups"] + sw["flows"]:
            print(f"  {line}")


def _print_stats(out: dict) -> None:
    print(table([[out["id"], out["packets"], out["bytes"], out["copies"], out.get("copies_dropped_by_rate_limit", 0)]],
                ["ID", "PACKETS", "BYTES", "COPIES", "DROPPED BY RATE LIMIT"]))
    for d in out.get("deliveries") or ([out["delivery"]] if out.get("delivery") else []):
        shared = f" (shared by policies {', '.join(map(str, d['policies']))})" if len(d["policies"]) > 1 else ""
        print(f"\nmonitor {d['monitor']}{shared}: {d['sent_packets']} copies sent, {d['delivered_packets']} delivered, "
              f"{d['undelivered_packets']} not delivered" + (f"; FAILING: {d['reason']}" if d["failing"] else ""))


def cmd_tap(args: argparse.Namespace) -> int:
    action = args.tap_command
    if action == "add":
        params = {"dry_run": "true"} if args.dry_run else None
        out = request("POST", args, "/api/v1/taps", json=_spec_from_args(args), params=params)
        if args.dry_run:
            args.json = True
        return emit(args, out, lambda t: _print_taps([t]))
    if action == "list":
        return emit(args, request("GET", args, "/api/v1/taps"), _print_taps)
    if action == "show":
        return emit(args, request("GET", args, f"/api/v1/taps/{args.id}"), _print_show)
    if action == "update":
        current = request("GET", args, f"/api/v1/taps/{args.id}")
        base = {k: current[k] for k in ["name", "enabled", *SPEC_FIELDS, *BUDGET_FIELDS]}
        out = request("PUT", args, f"/api/v1/taps/{args.id}", json=_spec_from_args(args, base))
        return emit(args, out, lambda t: _print_taps([t]))
    if action == "rm":
        request("DELETE", args, f"/api/v1/taps/{args.id}")
        return emit(args, {"deleted": args.id}, lambda o: print(f"deleted TAP {args.id}"))
    if action == "rules":
        return emit(args, request("GET", args, f"/api/v1/taps/{args.id}/rules"), _print_rules)
    if action == "stats":
        return emit(args, request("GET", args, f"/api/v1/taps/{args.id}/stats"), _print_stats)
    raise AssertionError(action)


def _read_policies(path: str) -> list:
    """A YAML or JSON file holding a list of policies (or {"taps": [...]}), as the REST
    API takes them. JSON is read as JSON first: it is YAML too, but a YAML parser takes
    4 s over 10,000 policies (measured) where json takes 10 ms."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise SystemExit(f"vtap apply: -f {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SystemExit(f"vtap apply: -f {path}: not YAML or JSON: {exc}") from None
    if isinstance(data, dict) and "taps" in data:
        data = data["taps"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise SystemExit(f"vtap apply: -f {path}: expected a list of policies (or a mapping with `taps:`)")
    return data


def cmd_apply(args: argparse.Namespace) -> int:
    policies = _read_policies(args.file)
    params = {"prune": str(args.prune).lower(), "dry_run": str(args.dry_run).lower()}
    out = request("PUT", args, "/api/v1/taps", json=policies, params=params)

    def render(o: dict) -> None:
        for what in ("added", "changed", "removed"):
            for name in o[what]:
                print(f"{what:8} {name}")
        print(f"{len(o['added'])} added, {len(o['changed'])} changed, {len(o['removed'])} removed, {o['unchanged']} unchanged"
              + (" (dry run: nothing changed; the rules it would install follow)" if o["dry_run"] else ""))
        if o["dry_run"]:
            _print_rules(o)

    return emit(args, out, render)


def _add_spec_flags(p: argparse.ArgumentParser, *, required_name: bool) -> None:
    p.add_argument("--name", required=required_name, default=None, help="unique policy name")
    p.add_argument("--description")
    p.add_argument("--src-mac", dest="src_mac", help="source MAC, or * for any")
    p.add_argument("--src-ip", dest="src_ip", help="source IPv4/IPv6 address or CIDR prefix")
    p.add_argument("--dst-mac", dest="dst_mac")
    p.add_argument("--dst-ip", dest="dst_ip")
    p.add_argument("--monitor-mac", dest="monitor_mac", help="the monitor host's MAC")
    p.add_argument("--monitor-ip", dest="monitor_ip", help="the monitor host's IP")
    p.add_argument("--ip-proto", dest="ip_proto", help="number, or tcp/udp/icmp")
    p.add_argument("--vlan-id", dest="vlan_id", help="0-4095")
    p.add_argument("--src-port", dest="src_port", help="TCP/UDP source port")
    p.add_argument("--dst-port", dest="dst_port", help="TCP/UDP destination port")
    p.add_argument("--direction", choices=["forward", "reverse", "both"])
    p.add_argument("--transport", choices=["vlan", "rewrite", "gre", "erspan", "vxlan", "geneve"],
                   help="vlan (default), rewrite, or a tunnel to the collector in --monitor-ip")
    p.add_argument("--tunnel-key", dest="tunnel_key", help="tunnels: GRE key, ERSPAN session id or VNI (default: the policy's id)")
    p.add_argument("--erspan-version", dest="erspan_version", choices=["1", "2"], help="ERSPAN type II (1) or III (2)")
    p.add_argument("--monitor-pool", dest="monitor_pool", metavar="ADDR,ADDR,...",
                   help="monitors (IPs or MACs) to spread flows over, instead of --monitor-ip/--monitor-mac ('off': none)")
    p.add_argument("--snaplen", help="cut each copy to its first N bytes, 64-9216 ('off': whole copies)")
    p.add_argument("--sample", help="copy 1 in N flows, whole and both ways (1: every flow)")
    p.add_argument("--rate-limit-pps", dest="rate_limit_pps", help="drop this policy's copies beyond N per second ('off': no limit)")
    p.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    p.add_argument("--disable", dest="enabled", action="store_const", const=False)


def add_tap_parser(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser("tap", help="manage TAP policies")
    tsub = tp.add_subparsers(dest="tap_command", required=True)
    add = tsub.add_parser("add", help="create a policy")
    _add_spec_flags(add, required_name=True)
    add.add_argument("--dry-run", action="store_true", help="show the rules it would install; store nothing")
    tsub.add_parser("list", help="list policies with their status")
    for name, text in [("show", "one policy"), ("rm", "delete a policy"), ("rules", "its flows and groups per switch"),
                       ("stats", "packets and bytes copied")]:
        tsub.add_parser(name, help=text).add_argument("id", type=int)
    upd = tsub.add_parser("update", help="change fields of a policy (the rest stay)")
    upd.add_argument("id", type=int)
    _add_spec_flags(upd, required_name=False)
    for sp in tsub.choices.values():
        add_client_flags(sp)
    tp.set_defaults(func=cmd_tap)


def add_apply_parser(sub: argparse._SubParsersAction) -> None:
    ap = sub.add_parser("apply", help="make the stored policies equal to a file's (YAML or JSON), in one transaction")
    ap.add_argument("-f", "--file", required=True, help="the policies: a list with the REST API's fields; - for stdin")
    ap.add_argument("--prune", action="store_true", help="also delete stored policies the file leaves out")
    ap.add_argument("--dry-run", action="store_true", help="print what would change and the rules; change nothing")
    add_client_flags(ap)
    ap.set_defaults(func=cmd_apply)
