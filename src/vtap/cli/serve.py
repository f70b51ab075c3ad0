"""`vtap serve`: run the controller; its flags, and `--config FILE` whose TOML keys
become their defaults."""

from __future__ import annotations

import argparse
import asyncio
import tracemalloc
import logging
import os
import socket
import sys
import tomllib


def listen(host: str, port: int, flag: str, *, now: bool = True) -> socket.socket:
    """A socket bound now, listening now or (`now=False`) once its server starts; a
    taken port is SystemExit naming its flag."""
    try:
        sock = socket.create_server((host, port), reuse_port=False, backlog=1024) if now else _bound(host, port)
    except OSError as exc:
        raise SystemExit(f"vtap serve: {flag} {port} on {host}: {exc.strerror or exc}") from None
    # Accepted connections inherit this: without it, a socket handed to uvicorn answers
    # each request ~40 ms late (Nagle against delayed ACK), measured here.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound to the address and not listening (a connection is refused until
    its server listens; asyncio's servers call listen() as they start)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as create_server does
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    # Both ports are bound before the imports below (a second or so), so a taken one is
    # said at once. The API listens at once (a client's request waits in the backlog);
    # the OpenFlow port only when its server starts: a switch that lost its controller
    # drops a connection whose hello is not answered within its backoff (a second in the
    # lab) and backs off another second, where a refused one retries a second later, so
    # a restart's switches came back up to two seconds after the server started, and now
    # within one (measured: 1.2 s at 10,000 policies, the switches' whole connection in
    # the backlog dropped as the server began to read it).
    sockets = (listen(args.of_host, args.of_port, "--of-port", now=False),
               listen(args.api_host, args.api_port, "--api-port"))
    from vtap.serve import ServeConfig, StartupError, import_api, serve

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    hosts = args.api_allowed_hosts
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    if args.trace_memory < 0:
        print("vtap serve: --trace-memory: frames must be 0 (off) or more", file=sys.stderr)
        return 1
    if args.trace_memory:
        # After the imports (the API's too, which serve makes later in a thread): what a
        # module's import makes is not a structure to shrink, and tracing them as well
        # made the start ten times slower.
        import_api()
        tracemalloc.start(args.trace_memory)
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
                etcd_tls=(args.etcd_ca, args.etcd_cert, args.etcd_key),
                member_id=args.member_id,
                advertise_url=args.advertise_url,
                tunnels=args.tunnels,
                tunnel_sources=args.tunnel_sources,
                ovsdb=args.ovsdb,
                ovsdb_tls=(args.ovsdb_key, args.ovsdb_cert, args.ovsdb_ca),
                sockets=sockets,
            ))
        )
    except StartupError as exc:
        print(f"vtap serve: {exc}", file=sys.stderr)
        return 1
    # Stopped cleanly: the store is closed and the snapshot written. A whole compile
    # still running in its thread is not waited for (Python joins such threads at exit:
    # a stop held up to 2 s at 10,000 policies); its result is no longer wanted.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
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
    s.add_argument("--store", default=None, metavar="etcd[s]://HOST:PORT[,HOST:PORT...]",
                   help="cluster mode: keep the state in etcd v3 and elect one leader among the instances sharing it "
                        "(default: SQLite in --state-dir, one instance); etcds:// speaks TLS with a client certificate")
    s.add_argument("--etcd-ca", default=None, help="with etcds://: the CA that signed etcd's certificate (PEM)")
    s.add_argument("--etcd-cert", default=None,
                   help="with etcds://: this instance's client certificate (PEM); its common name is its etcd user")
    s.add_argument("--etcd-key", default=None, help="with etcds://: the client certificate's private key (PEM)")
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
    s.add_argument("--tunnels", choices=["off", "local", "ovsdb"], default="off",
                   help="local: give the switches of this machine's OVS the tunnel ports, source addresses, routes and "
                        "neighbours that tunnel transports (gre, erspan, vxlan, geneve) need; ovsdb: make the tunnel "
                        "ports over each switch's OVSDB (--ovsdb), the rest being each node's step "
                        "(GET /api/v1/tunnels says it) (default off)")
    s.add_argument("--ovsdb", action="append", default=[], metavar="[DPID=]tcp:HOST:PORT",
                   help="with --tunnels ovsdb: a switch's OVSDB (tcp:, ssl: or unix:), for the switch DPID or, without "
                        "DPID=, for every switch not named; repeatable")
    s.add_argument("--ovsdb-key", default=None, help="ssl: OVSDB targets: vtap's private key (PEM)")
    s.add_argument("--ovsdb-cert", default=None, help="ssl: OVSDB targets: vtap's certificate (PEM)")
    s.add_argument("--ovsdb-ca", default=None, help="ssl: OVSDB targets: the CA of the switches' OVSDB servers (PEM)")
    s.add_argument("--tunnel-sources", default="10.0.0.0/8",
                   help="the network the switches' tunnel source addresses come from, taken from its top; collectors "
                        "or their gateways must be on it (default 10.0.0.0/8)")
    s.add_argument("--trace-memory", type=int, default=0, metavar="FRAMES",
                   help="trace allocations (FRAMES deep; 16 will do) from the start of serving, so that "
                        "GET /api/v1/memory says which structure holds the memory; slow: for measuring (default 0: off)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=cmd_serve)


def with_config(p: argparse.ArgumentParser, argv: list[str]) -> None:
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
