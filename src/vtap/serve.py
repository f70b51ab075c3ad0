"""`vtap serve`: the OpenFlow server, the controller and the REST API on one event loop.

The OpenFlow side is imported and listening first, before the store is loaded; the REST
API (FastAPI: half a second of imports) is imported in a worker thread meanwhile and
serves once the controller runs (`vtap.api.server`): a restart is over when every switch
holds its rules again, and the switches need only the OpenFlow side.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import signal
import socket
import sqlite3
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from vtap.api import FAILURES_ALLOWED
from vtap.control.cluster import Cluster
from vtap.control.controller import Controller
from vtap.control.startup import Startup
from vtap.control.tunnel_ports import OvsdbPorts, parse_targets
from vtap.control.tunnels import TunnelAgent
from vtap.openflow.channel import OpenFlowServer
from vtap.store.base import PolicyStore, stored_state
from vtap.store.errors import StoreUnavailable
from vtap.store.sqlite import Store

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The controller cannot start (a port taken, a state dir unusable): said plainly."""


def _of_tls_context(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext | None:
    """TLS for OpenFlow: the controller's certificate, and switches must show one signed by `ca`."""
    given = {"--of-tls-cert": cert, "--of-tls-key": key, "--of-tls-ca": ca}
    if not any(given.values()):
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise StartupError(f"OpenFlow over TLS needs {', '.join(missing)} too")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    for flag, load in (("--of-tls-cert", lambda: ctx.load_cert_chain(cert, key)), ("--of-tls-ca", lambda: ctx.load_verify_locations(ca))):
        try:
            load()
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"{flag}: {exc}") from None
    return ctx


STOP_S = 2.0  # SIGTERM -> stopped, under any load (systemd's TimeoutStopSec is 5 s)


@dataclass(frozen=True)
class ServeConfig:
    """Everything `vtap serve` is told, from its flags or its `--config` TOML file (whose
    keys are the flags' names): one value, so that the composition below reads it, not
    eighteen keyword arguments."""

    of_host: str
    of_port: int
    api_host: str
    api_port: int
    state_dir: str
    lldp_interval: float = 1.0
    host_timeout: float = 3600.0
    packet_in_rate: int = 1000
    max_hosts_per_port: int = 32
    of_tls: tuple[str | None, str | None, str | None] = (None, None, None)  # cert, key, CA
    tls: tuple[str | None, str | None] = (None, None)  # REST: cert, key
    api_allowed_hosts: list[str] | None = None
    auth_failure_limit: int = FAILURES_ALLOWED
    store_url: str | None = None
    etcd_tls: tuple[str | None, str | None, str | None] = (None, None, None)  # CA, certificate, key (etcds://)
    member_id: str | None = None
    advertise_url: str | None = None
    tunnels: str = "off"  # off | local | ovsdb
    tunnel_sources: str = "10.0.0.0/8"
    ovsdb: list[str] = field(default_factory=list)  # --ovsdb [DPID=]tcp:HOST:PORT (--tunnels ovsdb)
    ovsdb_tls: tuple[str | None, str | None, str | None] = (None, None, None)  # key, certificate, CA (ssl:)
    sockets: tuple[socket.socket, socket.socket] | None = None  # OpenFlow, REST: bound by `vtap serve` first thing


async def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop within `STOP_S`."""
    startup = Startup()
    startup.reached("imported")
    sources = _tunnel_sources(config.tunnel_sources)
    _check_state_dir(config.state_dir)
    store, cluster = await _open_store(config)
    of_ssl = _of_tls_context(*config.of_tls)
    tls_cert, tls_key = _rest_tls(config.tls)
    of_sock, api_sock = config.sockets
    tunnels = _tunnel_agent(config)
    of_server = OpenFlowServer(None, config.of_host, config.of_port, sock=of_sock, ssl=of_ssl)
    stored = None
    if cluster is None:
        # Listening while the store is read in a thread (0.6 s at 10,000 policies): the
        # switches of a restart retry once a second, so they come back meanwhile, not
        # after it, their hellos answered by the loop. A cluster member listens once it
        # knows its role (below).
        await of_server.start()
        stored = await asyncio.to_thread(stored_state, store)
    ctl = Controller(store, lldp_interval=config.lldp_interval, host_timeout=config.host_timeout,
                     packet_in_rate=config.packet_in_rate, max_hosts_per_port=config.max_hosts_per_port, cluster=cluster,
                     tunnels=tunnels, tunnel_sources=sources, stored=stored, startup=startup)
    of_server.attach(ctl)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ctl.start()
    # The API's imports (half a second of CPU) run in a thread from here, while the
    # switches of a restart are on their back-off (a second). Begun with the process,
    # they ran beside the store's reading and the controller's making and slowed them
    # as much (one interpreter lock): the switches came back to a process still busy.
    # Restarts at 10,000 policies: 1.80-2.35 s before, 1.77-1.84 s after.
    api_module = asyncio.ensure_future(asyncio.to_thread(import_api))
    if cluster is not None:
        store.listener = ctl.store_changed
        try:
            await cluster.start()
        except StoreUnavailable as exc:
            raise StartupError(f"--store: {exc}") from None
        log.info("cluster member %s on %r", cluster.member_id, store)
        await of_server.start()
    # The API serves once the switches can come back (see the module's docstring): its
    # requests wait in the listening socket's backlog meanwhile.
    api = await _api(config, ctl, await api_module, tls_cert, tls_key)
    api_task = asyncio.create_task(api.serve(sockets=[api_sock]))
    log.info("REST API on %s://%s:%d (OpenAPI at /docs)", "https" if tls_cert else "http", config.api_host, config.api_port)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({api_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping")
    await _stop(of_server, api, api_task, ctl, cluster, store)
    stopper.cancel()
    if api_task in done and api_task.exception():
        raise api_task.exception()


def import_api():
    """The REST API's module (`vtap.api.server`), imported if it was not."""
    return importlib.import_module("vtap.api.server")


async def _api(config: ServeConfig, ctl: Controller, server, tls_cert: str | None, tls_key: str | None):
    """The REST API's server (`server`: its module), made in a worker thread; on the first
    start (or with no lasting admin token left), the admin token written to the state dir."""
    tokens = server.Tokens(ctl.store, config.auth_failure_limit)
    made = await tokens.ensure_admin_token(config.state_dir)
    if made:
        log.info("first start: an admin token is in %s (mode 0600); `vtap token add` makes others", made)
    allowed = config.api_allowed_hosts or [config.api_host, "localhost", "127.0.0.1", "::1"]
    try:
        return await asyncio.to_thread(server.api_server, ctl, tokens, allowed, tls_cert, tls_key)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def _tunnel_agent(config: ServeConfig) -> TunnelAgent | None:
    """`--tunnels local`: ovs-vsctl and ovs-appctl here; `ovsdb`: the ports over each
    switch's OVSDB, the rest the node's step (StartupError for a bad --ovsdb)."""
    if config.tunnels == "local":
        return TunnelAgent()
    if config.tunnels != "ovsdb":
        if config.ovsdb:
            raise StartupError("--ovsdb goes with --tunnels ovsdb")
        return None
    if not config.ovsdb:
        raise StartupError("--tunnels ovsdb needs --ovsdb [DPID=]tcp:HOST:6640 (the switches' OVSDB)")
    try:
        targets = parse_targets(config.ovsdb)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    return TunnelAgent(OvsdbPorts(targets, config.ovsdb_tls), local_routes=False)


def _tunnel_sources(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise StartupError(f"--tunnel-sources {text}: {exc}") from None


def _check_state_dir(state_dir: str) -> None:
    if Path(state_dir).exists() and not Path(state_dir).is_dir():
        raise StartupError(f"--state-dir {state_dir}: exists and is not a directory")


async def _open_store(config: ServeConfig) -> tuple[PolicyStore, Cluster | None]:
    """SQLite under the state dir, or etcd (`--store`) and this instance's cluster membership."""
    if not config.store_url:
        try:
            return Store(config.state_dir), None
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"--state-dir {config.state_dir}: {exc}") from None
    from vtap.store.etcd import EtcdStore  # only here: grpc costs 15 MiB

    try:
        store = EtcdStore.from_url(config.store_url, config.state_dir, config.etcd_tls)
        await store.open()
    except ValueError as exc:  # the URL, or a TLS flag: each message names its flag
        raise StartupError(str(exc) if str(exc).startswith("--") else f"--store {exc}") from None
    except OSError as exc:
        raise StartupError(f"--state-dir {config.state_dir}: {exc}") from None
    except StoreUnavailable as exc:
        raise StartupError(f"--store: {exc}") from None
    scheme = "https" if config.tls[0] else "http"
    cluster = Cluster(store, config.member_id or f"{socket.gethostname()}:{config.api_port}",
                      config.advertise_url or f"{scheme}://{config.api_host}:{config.api_port}")
    return store, cluster


def _rest_tls(tls: tuple[str | None, str | None]) -> tuple[str | None, str | None]:
    tls_cert, tls_key = tls
    if bool(tls_cert) != bool(tls_key):
        raise StartupError("REST over TLS needs both --tls-cert and --tls-key")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path and not Path(path).is_file():
            raise StartupError(f"{flag} {path}: no such file")
    if tls_cert:
        try:  # now, before any switch is served: the API itself is made later (see serve)
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"--tls-cert/--tls-key: {exc}") from None
    return tls_cert, tls_key


async def _stop(of_server: OpenFlowServer, api, api_task: asyncio.Task, ctl: Controller,
                cluster: Cluster | None, store: PolicyStore) -> None:
    """Stop within `STOP_S` whatever the load: first stop reading from the switches (no
    packet-in storm may hold the stop up), then the rest; the switches keep their rules."""
    of_server.pause()
    api.should_exit = True

    async def shut_down() -> None:
        await ctl.quiesce()  # before the connections close: closing them must not make it recompile
        # The switches' connections are closed next, before the rest of the stop (the
        # compile snapshot: 0.1-0.2 s at 10,000 policies): a switch tries again one
        # back-off (a second) after its connection closed, so a restarted controller
        # has its switches back that much sooner.
        await of_server.stop()
        if cluster is not None:
            await cluster.stop()  # a leader resigns: another takes over at once
        await ctl.stop()
        await asyncio.gather(api_task, return_exceptions=True)

    try:
        await asyncio.wait_for(shut_down(), STOP_S)
    except asyncio.TimeoutError:
        log.warning("stopping took over %.1f s: leaving the rest (the switches keep their rules)", STOP_S)
    if cluster is not None:
        try:
            await asyncio.wait_for(store.aclose(), 1.0)
        except asyncio.TimeoutError:
            log.warning("etcd did not close in 1 s: leaving it")
    else:
        store.close()
