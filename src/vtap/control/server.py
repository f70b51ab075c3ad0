"""`vtap serve`: the OpenFlow server, the controller and the REST API on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from vtap.api.app import create_app
from vtap.control.controller import Controller
from vtap.openflow.channel import OpenFlowServer
from vtap.store.sqlite import Store

log = logging.getLogger(__name__)


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass


async def serve(
    *,
    of_host: str,
    of_port: int,
    api_host: str,
    api_port: int,
    state_dir: str,
    lldp_interval: float = 1.0,
) -> None:
    store = Store(state_dir)
    ctl = Controller(store, lldp_interval=lldp_interval)
    of_server = OpenFlowServer(ctl, of_host, of_port)
    api = _ApiServer(uvicorn.Config(create_app(ctl), host=api_host, port=api_port, log_level="warning", lifespan="off"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ctl.start()
    await of_server.start()
    api_task = asyncio.create_task(api.serve())
    log.info("REST API on http://%s:%d (OpenAPI at /docs)", api_host, api_port)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({api_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping")
    api.should_exit = True
    await of_server.stop()
    await ctl.stop()
    await asyncio.gather(api_task, return_exceptions=True)
    stopper.cancel()
    store.close()
    if api_task in done and api_task.exception():
        raise api_task.exception()
