"""The `vtap` command: serve the controller, build a lab, look at the topology, manage
policies, tokens and the audit trail.

Commands that talk to the API find their token in `--token`, else `VTAP_TOKEN`, else the
file `--token-file` (default: the admin token `vtap serve` writes on first start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import httpx

from vtap.console import table

DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_TOKEN_FILE = "/var/lib/vtap/admin.token"


def cmd_serve(args: argparse.Namespace) -> int:
    from vtap.serve import ServeConfig, StartupError, serve

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    hosts = args.api_allowed_hosts
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    try:
        asyncio.run(
            serve(ServeConfig(
                of_host=args.of_host,
                of_port=args.of_port,
                api_host=args.api_host,
                api_port=args.api_port,
                state_dir=args.state_dir,
                lldp_interval=args.lldp_interval,
                host_timeout=args.host_timeout,
                packet_in_rate=args.packet_in_rate,
                max_hosts_per_port=args.max_hosts_per_port,
                of_tls=(args.of_tls_cert, args.of_tls_key, args.of_tls_ca),
                tls=(args.tls_cert, args.tls_key),
                api_allowed_hosts=hosts or None,
                auth_failure_limit=args.auth_failure_limit,
                store_url=args.store,
                member_id=args.member_id,
                advertise_url=args.advertise_url,
                tunnels=args.tunnels,
                tunnel_sources=args.tunnel_sources,
            ))
        )
    except StartupError as exc:
        print(f"vtap serve: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from vtap.lab.run import lab, lab_cluster

    if args.cluster is not None:
        if args.cluster < 1 or args.etcd_members < 1:
            print("vtap lab: --cluster and --etcd-members take a number of at least 1", file=sys.stderr)
            return 2
        return lab_cluster(args.topo, args.cluster, args.etcd_members, args.run, args.ready_timeout)

    api = args.api
    if api is None:
        host = args.controller.rpartition(":")[0] or "127.0.0.1"
        api = f"http://{host}:8080"
    return lab(args.topo, args.controller, args.run, None if args.no_wait else api, args.ready_timeout, args.of_tls,
               args.chatter, args.join)


def _token(args: argparse.Namespace) -> str | None:
    """--token, else VTAP_TOKEN, else the contents of --token-file; None when none is there."""
    if args.token:
        return args.token
    if os.environ.get("VTAP_TOKEN"):
        return os.environ["VTAP_TOKEN"]
    try:
        return Path(args.token_file).read_text().strip()
    except OSError:
        return None


def cmd_bench_dataplane(args: argparse.Namespace) -> int:
    from vtap.bench.dataplane import main as dataplane

    return dataplane(args)


def cmd_bench_controlplane(args: argparse.Namespace) -> int:
    from vtap.bench.controlplane import main as controlplane

    if args.cluster:
        from vtap.bench.cluster import main as cluster

        return cluster(args)

    return controlplane(args)


def cmd_bench_foundation(args: argparse.Namespace) -> int:
    from vtap.bench.foundation import main as foundation

    return foundation(args)


def cmd_bench_relay(args: argparse.Namespace) -> int:
    from vtap.bench.relay import main as relay

    return relay(args)


def cmd_topo(args: argparse.Namespace) -> int:
    topo = _request("GET", args, "/api/v1/topology")
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
    c = _request("GET", args, "/api/v1/cluster")
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


SPEC_FIELDS = ["src_mac", "src_ip", "dst_mac", "dst_ip", "monitor_mac", "monitor_ip", "ip_proto", "vlan_id",
               "src_port", "dst_port", "direction", "transport", "description"]
BUDGET_FIELDS = ["monitor_pool", "snaplen", "sample", "rate_limit_pps", "tunnel_key", "erspan_version"]  # flags of their own (see _spec_from_args)


def _request(method: str, args: argparse.Namespace, path: str, **kw):
    api = args.api
    token = _token(args)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        verify = ssl.create_default_context(cafile=args.ca_cert) if args.ca_cert else True
        resp = httpx.request(method, f"{api.rstrip('/')}{path}", timeout=30, headers=headers, verify=verify, **kw)
    except httpx.HTTPError as exc:
        raise SystemExit(f"vtap: cannot reach the controller at {api}: {exc}") from None
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else resp.text
    if resp.status_code in (403, 409, 422) and isinstance(detail, list):
        lines = []
        for d in detail:
            loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in d.get("loc", []) if x != "body").lstrip(".")
            lines.append(f"  {loc or 'request'}: {d.get('msg')}")
        what = {403: "not allowed", 409: "conflict"}.get(resp.status_code, "invalid request")
        raise SystemExit(f"vtap: {what}:\n" + "\n".join(lines))
    if resp.status_code == 401 and not token:
        raise SystemExit(f"vtap: the controller needs a token: give --token, set VTAP_TOKEN, or make --token-file "
                         f"readable ({args.token_file}) (HTTP 401)")
    if resp.status_code >= 400:
        raise SystemExit(f"vtap: {detail} (HTTP {resp.status_code})")
    return body


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


def _emit(args: argparse.Namespace, out, render) -> int:
    """JSON with --json, else the human rendering."""
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        render(out)
    return 0


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
        out = _request("POST", args, "/api/v1/taps", json=_spec_from_args(args), params=params)
        if args.dry_run:
            args.json = True
        return _emit(args, out, lambda t: _print_taps([t]))
    if action == "list":
        return _emit(args, _request("GET", args, "/api/v1/taps"), _print_taps)
    if action == "show":
        return _emit(args, _request("GET", args, f"/api/v1/taps/{args.id}"), _print_show)
    if action == "update":
        current = _request("GET", args, f"/api/v1/taps/{args.id}")
        base = {k: current[k] for k in ["name", "enabled", *SPEC_FIELDS, *BUDGET_FIELDS]}
        out = _request("PUT", args, f"/api/v1/taps/{args.id}", json=_spec_from_args(args, base))
        return _emit(args, out, lambda t: _print_taps([t]))
    if action == "rm":
        _request("DELETE", args, f"/api/v1/taps/{args.id}")
        return _emit(args, {"deleted": args.id}, lambda o: print(f"deleted TAP {args.id}"))
    if action == "rules":
        return _emit(args, _request("GET", args, f"/api/v1/taps/{args.id}/rules"), _print_rules)
    if action == "stats":
        return _emit(args, _request("GET", args, f"/api/v1/taps/{args.id}/stats"), _print_stats)
    raise AssertionError(action)


CAPTURE_FIELDS = ["src_mac", "src_ip", "dst_mac", "dst_ip", "ip_proto", "vlan_id", "src_port", "dst_port", "direction"]


def _tap_id(args: argparse.Namespace, name: str) -> int:
    """A policy's id from its name (or its id)."""
    for t in _request("GET", args, "/api/v1/taps"):
        if t["name"] == name or str(t["id"]) == name:
            return t["id"]
    raise SystemExit(f"vtap: --tap {name}: no TAP policy of that name")


def cmd_capture(args: argparse.Namespace) -> int:
    """Start a capture job, follow it until it ends, and save its pcapng."""
    if args.list:
        jobs = _request("GET", args, "/api/v1/captures")
        return _emit(args, jobs, lambda js: print(table(
            [[j["id"], j["tap_id"] or "-", j["state"], f"{j['packets']}/{j['count']}", j["created_by"], j["reason"]] for j in js],
            ["ID", "TAP", "STATE", "PACKETS", "BY", "REASON"])))
    if not args.write:
        raise SystemExit("vtap capture: -w FILE is needed (where the pcapng goes)")
    body: dict = {"count": args.count, "duration_s": args.duration, "snaplen": args.snaplen}
    if args.tap:
        body["tap_id"] = _tap_id(args, args.tap)
    body |= {f: getattr(args, f) for f in CAPTURE_FIELDS if getattr(args, f, None) is not None}
    job = _request("POST", args, "/api/v1/captures", json=body)
    print(f"capture job {job['id']}: up to {job['count']} packets or {job['duration_s']:g} s", file=sys.stderr)
    try:
        while job["state"] not in ("done", "stopped"):
            time.sleep(0.5)
            job = _request("GET", args, f"/api/v1/captures/{job['id']}")
            print(f"\r{job['state']}: {job['packets']} packets", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: saving what was captured", file=sys.stderr)
    print(file=sys.stderr)
    data = _request_bytes(args, job["download"])
    with open(args.write, "wb") as f:
        f.write(data)
    if not args.keep:
        _request("DELETE", args, f"/api/v1/captures/{job['id']}")
    return _emit(args, {**job, "file": args.write}, lambda j: print(f"{j['packets']} packets in {args.write} ({j['reason'] or j['state']})"))


def _request_bytes(args: argparse.Namespace, path: str) -> bytes:
    token = _token(args)
    verify = ssl.create_default_context(cafile=args.ca_cert) if args.ca_cert else True
    try:
        resp = httpx.get(f"{args.api.rstrip('/')}{path}", timeout=60, verify=verify,
                         headers={"authorization": f"Bearer {token}"} if token else {})
    except httpx.HTTPError as exc:
        raise SystemExit(f"vtap: cannot reach the controller at {args.api}: {exc}") from None
    if resp.status_code >= 400:
        raise SystemExit(f"vtap: {resp.text} (HTTP {resp.status_code})")
    return resp.content


def _read_policies(path: str) -> list:
    """A YAML or JSON file holding a list of policies (or {"taps": [...]}), as the REST API takes them."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        data = yaml.safe_load(text)  # JSON is YAML too
    except OSError as exc:
        raise SystemExit(f"vtap apply: -f {path}: {exc.strerror}") from None
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
    out = _request("PUT", args, "/api/v1/taps", json=policies, params=params)

    def render(o: dict) -> None:
        for what in ("added", "changed", "removed"):
            for name in o[what]:
                print(f"{what:8} {name}")
        print(f"{len(o['added'])} added, {len(o['changed'])} changed, {len(o['removed'])} removed, {o['unchanged']} unchanged"
              + (" (dry run: nothing changed; the rules it would install follow)" if o["dry_run"] else ""))
        if o["dry_run"]:
            _print_rules(o)

    return _emit(args, out, render)


def cmd_token(args: argparse.Namespace) -> int:
    action = args.token_command
    if action == "add":
        body: dict = {"name": args.name, "role": args.role}
        if args.source or args.monitor:
            body["scope"] = {"sources": args.source, "monitors": args.monitor}
        if args.expires_in:
            body["expires_in_s"] = args.expires_in
        out = _request("POST", args, "/api/v1/tokens", json=body)
        return _emit(args, out, lambda t: print(f"token {t['id']} ({t['name']}, {t['role']}); shown once, keep it:\n{t['token']}"))
    if action == "list":
        return _emit(args, _request("GET", args, "/api/v1/tokens"), lambda ts: print(table(
            [[t["id"], t["name"], t["role"], json.dumps(t["scope"]) if t["scope"] else "-", t["expires_at"] or "never"] for t in ts],
            ["ID", "NAME", "ROLE", "SCOPE", "EXPIRES"])))
    if action == "rm":
        _request("DELETE", args, f"/api/v1/tokens/{args.id}")
        return _emit(args, {"deleted": args.id}, lambda o: print(f"revoked token {args.id}"))
    raise AssertionError(action)


def cmd_audit(args: argparse.Namespace) -> int:
    from vtap.model.audit import verify

    params = {k: v for k, v in (("since", args.since), ("actor", args.actor), ("target", args.target)) if v is not None}
    if args.verify:
        records, since = [], 0
        while True:  # the whole trail, a page at a time
            page = _request("GET", args, "/api/v1/audit", params={"since": since, "limit": 10000})
            records += page
            if len(page) < 10000:
                break
            since = page[-1]["seq"]
        ok, seq, why = verify(records)
        print(f"audit trail: {why}" if ok else f"audit trail BROKEN at record {seq}: {why}")
        return 0 if ok else 1
    out = _request("GET", args, "/api/v1/audit", params=params)
    return _emit(args, out, lambda rs: print(table(
        [[r["seq"], datetime.fromtimestamp(r["time"], timezone.utc).isoformat(timespec="seconds"), r["actor"], r["remote"],
          r["action"], r["target"], r["result"]] for r in rs],
        ["SEQ", "TIME", "ACTOR", "REMOTE", "ACTION", "TARGET", "RESULT"])))


def _add_api_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=DEFAULT_API, help=f"controller REST API (default {DEFAULT_API})")
    p.add_argument("--token", default=None, help="a vtap token (else VTAP_TOKEN, else --token-file)")
    p.add_argument("--token-file", default=DEFAULT_TOKEN_FILE, help=f"file holding the token (default {DEFAULT_TOKEN_FILE})")
    p.add_argument("--ca-cert", default=None, help="CA certificate to verify an https API with")


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtap", description="A virtual TAP for software-defined networks.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the controller (OpenFlow 1.3 + REST API)")
    s.add_argument("--config", default=None, help="a TOML file whose keys are these flags' names (flags win)")
    s.add_argument("--of-host", default="127.0.0.1", help="address for OpenFlow switches (default 127.0.0.1)")
    s.add_argument("--of-tls-cert", default=None, help="OpenFlow over TLS: the controller's certificate (PEM)")
    s.add_argument("--of-tls-key", default=None, help="OpenFlow over TLS: its private key (PEM)")
    s.add_argument("--of-tls-ca", default=None, help="OpenFlow over TLS: the CA that signs switch certificates (PEM)")
    s.add_argument("--of-port", type=int, default=6653, help="OpenFlow port (default 6653)")
    s.add_argument("--api-host", default="127.0.0.1", help="address of the REST API (default 127.0.0.1)")
    s.add_argument("--api-port", type=int, default=8080, help="REST API port (default 8080)")
    s.add_argument("--api-allowed-hosts", default=None,
                   help="comma-separated names the Host header may carry (default: --api-host, localhost, 127.0.0.1, ::1)")
    s.add_argument("--auth-failure-limit", type=int, default=10,
                   help="failed authentications per client address per minute before 429 (default 10; 0: no limit)")
    s.add_argument("--tls-cert", default=None, help="REST over TLS: the server's certificate (PEM)")
    s.add_argument("--tls-key", default=None, help="REST over TLS: its private key (PEM)")
    s.add_argument("--state-dir", default="/var/lib/vtap",
                   help="where state is kept (SQLite); with --store etcd://, local files only (admin token, captures)")
    s.add_argument("--store", default=None, metavar="etcd://HOST:PORT[,HOST:PORT...]",
                   help="cluster mode: keep the state in etcd v3 and elect one leader among the instances sharing it "
                        "(default: SQLite in --state-dir, one instance)")
    s.add_argument("--member-id", default=None, help="this instance's name in the cluster (default HOSTNAME:API_PORT)")
    s.add_argument("--advertise-url", default=None,
                   help="this instance's REST API as the other members and the UI should reach it (default from --api-host/--api-port)")
    s.add_argument("--lldp-interval", type=float, default=1.0, help="seconds between LLDP rounds (default 1)")
    s.add_argument("--host-timeout", type=float, default=3600.0,
                   help="forget hosts silent this many seconds, and their rules (default 3600; 0: never)")
    s.add_argument("--packet-in-rate", type=int, default=1000,
                   help="cap on frames per second each switch sends up for hosts (ARP, unknown); 0: no cap (default 1000)")
    s.add_argument("--max-hosts-per-port", type=int, default=32,
                   help="MACs learned per edge port at most; more are refused and counted (default 32; 0: no cap)")
    s.add_argument("--tunnels", choices=["off", "local"], default="off",
                   help="local: give the switches of this machine's OVS the tunnel ports, source addresses, routes and "
                        "neighbours that tunnel transports (gre, erspan, vxlan, geneve) need (default off)")
    s.add_argument("--tunnel-sources", default="10.0.0.0/8",
                   help="the network the switches' tunnel source addresses come from, taken from its top; collectors "
                        "or their gateways must be on it (default 10.0.0.0/8)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=cmd_serve)

    l = sub.add_parser("lab", help="build a Mininet topology on a private userspace OVS")
    l.add_argument("--topo", required=True,
                   help="single,N | linear,N | tree,DEPTH,FANOUT | fattree,K | ring,N (with chords) | random,N,SEED (3-regular)")
    l.add_argument("--chatter", action="store_true",
                   help="every host sends ARP, IPv6 ND, mDNS and LLDP from the first second (before any switch connects)")
    l.add_argument("--join", default=None, metavar="random:SEED",
                   help="switches get their controller one by one, in a seeded random order with gaps (default: all at once)")
    l.add_argument("--controller", default="127.0.0.1:6653", help="controller HOST:PORT (default 127.0.0.1:6653)")
    l.add_argument("--api", default=None, help="controller REST API to wait on (default http://HOST:8080)")
    l.add_argument("--no-wait", action="store_true", help="do not wait for the controller to see the topology")
    l.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for the controller (default 60)")
    l.add_argument("--run", default=None, help="run this command (e.g. pingall) and exit with its status")
    l.add_argument("--of-tls", metavar="PKI_DIR", default=None,
                   help="OpenFlow over TLS with certificates from ovs-pki in PKI_DIR (made there if missing)")
    l.add_argument("--cluster", type=int, default=None, metavar="N",
                   help="start an etcd and N `vtap serve` instances on loopback too, every switch connected to all "
                        "(ignores --controller/--api)")
    l.add_argument("--etcd-members", type=int, default=1, help="with --cluster: etcd members to start (default 1)")
    l.set_defaults(func=cmd_lab)

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
        _add_api_flags(sp)
        sp.add_argument("--json", action="store_true", help="print JSON")
    tp.set_defaults(func=cmd_tap)

    cp_ = sub.add_parser("capture", help="capture a policy's (or a match's) next packets to a pcapng file")
    cp_.add_argument("--tap", help="the policy (name or id) whose packets to capture; else give match fields")
    for f in CAPTURE_FIELDS:
        cp_.add_argument("--" + f.replace("_", "-"), dest=f, choices=["forward", "reverse", "both"] if f == "direction" else None)
    cp_.add_argument("-c", "--count", type=int, default=100, help="stop after this many packets (1-10000; default 100)")
    cp_.add_argument("-d", "--duration", type=float, default=60, help="stop after this many seconds (at most 300; default 60)")
    cp_.add_argument("--snaplen", type=int, default=9216, help="bytes kept of each packet (64-9216)")
    cp_.add_argument("-w", "--write", help="the pcapng file to write")
    cp_.add_argument("--keep", action="store_true", help="keep the job (and its file) on the controller afterwards")
    cp_.add_argument("--list", action="store_true", help="list capture jobs instead")
    cp_.add_argument("--json", action="store_true", help="print JSON")
    _add_api_flags(cp_)
    cp_.set_defaults(func=cmd_capture)

    ap = sub.add_parser("apply", help="make the stored policies equal to a file's (YAML or JSON), in one transaction")
    ap.add_argument("-f", "--file", required=True, help="the policies: a list with the REST API's fields; - for stdin")
    ap.add_argument("--prune", action="store_true", help="also delete stored policies the file leaves out")
    ap.add_argument("--dry-run", action="store_true", help="print what would change and the rules; change nothing")
    _add_api_flags(ap)
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.set_defaults(func=cmd_apply)

    tk = sub.add_parser("token", help="manage API tokens (admin)")
    ksub = tk.add_subparsers(dest="token_command", required=True)
    kadd = ksub.add_parser("add", help="make a token; its secret is printed once")
    kadd.add_argument("name")
    kadd.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    kadd.add_argument("--source", action="append", default=[], help="operator scope: a MAC or CIDR it may tap (repeat)")
    kadd.add_argument("--monitor", action="append", default=[], help="operator scope: a monitor MAC or IP (repeat)")
    kadd.add_argument("--expires-in", type=int, default=None, help="seconds until it expires (default never)")
    ksub.add_parser("list", help="tokens, without secrets")
    ksub.add_parser("rm", help="revoke a token at once").add_argument("id", type=int)
    for sp in ksub.choices.values():
        _add_api_flags(sp)
        sp.add_argument("--json", action="store_true", help="print JSON")
    tk.set_defaults(func=cmd_token)

    au = sub.add_parser("audit", help="the audit trail: every change and refusal, hash-chained")
    _add_api_flags(au)
    au.add_argument("--verify", action="store_true", help="check the whole chain; exit 1 naming the first broken record")
    au.add_argument("--since", type=int, default=None, help="records after this sequence number")
    au.add_argument("--actor", default=None)
    au.add_argument("--target", default=None, help="e.g. tap:3, token:2")
    au.add_argument("--json", action="store_true", help="print JSON")
    au.set_defaults(func=cmd_audit)

    b = sub.add_parser("bench", help="measure: the seed's data-plane experiments, the control plane at scale, "
                          "bring-up and flow-mod rates")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    dp = bsub.add_parser("dataplane", help="Testbeds #1 and #2: no TAP vs OVS port mirror vs vtap, by packet size")
    dp.add_argument("--ports", choices=["afpacket", "afxdp"], default="afpacket", help="OVS port type (default afpacket)")
    dp.add_argument("--reps", type=int, default=3, help="repetitions per configuration and size (default 3)")
    dp.add_argument("--window", type=float, default=2.0, help="measurement window in seconds (default 2)")
    dp.add_argument("--quick", action="store_true", help="a ~1-minute smoke run: 2 sizes, 1 repetition, short windows")
    dp.add_argument("--out", default="bench/results", help="where JSON, Markdown and plots go (default bench/results)")
    dp.set_defaults(func=cmd_bench_dataplane)

    cp = bsub.add_parser("controlplane", help="TAP policies at scale on fattree,4: latency, apply time, failover, restart")
    cp.add_argument("--latency", type=int, default=200, help="policies for the POST -> active latency (default 200)")
    cp.add_argument("--sizes", default="1000,10000", help="cumulative policy counts to apply (default 1000,10000)")
    cp.add_argument("--one-bridge", action="store_true", help="every policy taps at h1's edge switch")
    cp.add_argument("--quick", action="store_true", help="a short smoke run (20 latency samples, 200 policies)")
    cp.add_argument("--cluster", action="store_true",
                    help="three instances on etcd instead: POST -> active through a follower, leader failover under 1,000 pps")
    cp.add_argument("--out", default="bench/results", help="where JSON and Markdown go (default bench/results)")
    cp.set_defaults(func=cmd_bench_controlplane)

    fd = bsub.add_parser("foundation", help="fat-tree convergence on a chatty network, controller RSS; flow-mods per second vs ovs-ofctl")
    fd.add_argument("--fattrees", default="4,6,8", help="fat-tree sizes k to bring up with chatter (default 4,6,8; --quick: 4)")
    fd.add_argument("--sizes", default="1000,10000", help="rules per flow-mod run (default 1000,10000)")
    fd.add_argument("--repeat", type=int, default=3, help="runs per size and mode; the median is reported (default 3)")
    fd.add_argument("--quick", action="store_true", help="a short smoke run: 100 and 1,000 rules, one run each")
    fd.add_argument("--out", default="bench/results", help="where JSON and Markdown go (default bench/results)")
    fd.set_defaults(func=cmd_bench_foundation)

    rl = bsub.add_parser("relay", help="LLDP transit of real links against a live relay between two hosts, idle and loaded")
    rl.add_argument("--seconds", type=float, default=20.0, help="sampling time per phase (default 20)")
    rl.add_argument("--out", default="bench/results", help="where JSON and Markdown go (default bench/results)")
    rl.set_defaults(func=cmd_bench_relay)

    cl = sub.add_parser("cluster", help="the cluster's members, its leader, and this instance's role at the switches")
    _add_api_flags(cl)
    cl.add_argument("--json", action="store_true", help="print GET /api/v1/cluster as JSON")
    cl.set_defaults(func=cmd_cluster)

    t = sub.add_parser("topo", help="print devices, links and hosts")
    _add_api_flags(t)
    t.add_argument("--json", action="store_true", help="print the topology document as JSON")
    t.set_defaults(func=cmd_topo)
    return p


def _with_config(p: argparse.ArgumentParser, argv: list[str]) -> None:
    """`vtap serve --config FILE`: the file's keys become the serve flags' defaults, so
    flags given on the command line still win. An unknown key is an error naming it."""
    if not argv or argv[0] != "serve":
        return
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    path = pre.parse_known_args(argv[1:])[0].config
    if not path:
        return
    serve_parser = p._subparsers._group_actions[0].choices["serve"]
    dests = {a.dest for a in serve_parser._actions} - {"help", "config"}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"vtap serve: --config {path}: {exc}") from None
    values = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        if dest not in dests:
            raise SystemExit(f"vtap serve: --config {path}: unknown key {key!r}")
        values[dest] = ",".join(value) if isinstance(value, list) else value
    serve_parser.set_defaults(**values)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    _with_config(p, argv)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"vtap: {exc}", file=sys.stderr)
        return 2
