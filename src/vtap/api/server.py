"""The REST API as `vtap serve` runs it: the app behind its guard, under uvicorn.

Importing this (FastAPI, pydantic's schemas, the routes) takes half a second, as long
as the OpenFlow side; `vtap serve` imports it in a worker thread while the OpenFlow
server listens and the store loads, so that a restart's switches come back meanwhile
(the API's clients wait in its socket's backlog).
"""

from __future__ import annotations

import contextlib
import ssl

import uvicorn

from vtap.api.app import create_app
from vtap.api.auth import Tokens
from vtap.api.guard import Guard


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass


def api_server(ctl, tokens: Tokens, allowed_hosts: list[str], tls_cert: str | None, tls_key: str | None) -> ApiServer:
    """The guarded app under uvicorn; a TLS file that does not load is ValueError naming it."""
    app = Guard(create_app(ctl, tokens), ctl.store, tokens, allowed_hosts)
    try:
        # A client holding a connection (an event stream) may delay the stop 1 s at most.
        api = ApiServer(uvicorn.Config(app, log_level="warning", lifespan="off", ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                                       timeout_graceful_shutdown=1))
        api.config.load()
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--tls-cert/--tls-key: {exc}") from None
    return api
