"""A 405 says which methods the path has (`Allow`), for the app's own routes and for
those of its included routers alike."""

from __future__ import annotations

import httpx
import pytest

from vtap.api.app import create_app
from vtap.api.auth import Tokens
from vtap.control.controller import Controller
from vtap.store.sqlite import Store


@pytest.mark.parametrize("method, path, allow", [
    ("PATCH", "/api/v1/taps", "GET, POST, PUT"),  # an included router's path
    ("DELETE", "/api/v1/taps/7", None),  # exists: not a 405
    ("POST", "/api/v1/health", "GET"),  # one of the app's own
])
async def test_a_405_lists_every_method_of_the_path(tmp_path, method, path, allow):
    store = Store(tmp_path)
    app = create_app(Controller(store), Tokens(store))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        resp = await client.request(method, path)
    if allow is None:
        assert resp.status_code != 405
    else:
        assert resp.status_code == 405 and resp.headers["allow"] == allow
