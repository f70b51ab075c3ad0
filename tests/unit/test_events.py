"""The event stream's board (`api/events.py`) and the listing's filter and pages
(`GET /api/v1/taps?q=&status=&offset=&limit=`), on a controller with known hosts and
no switches (its policies wait for their monitor, or are disabled)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from vtap.api import events
from vtap.api.app import create_app
from vtap.api.auth import Tokens
from vtap.api.events import Board, delta_event, snapshot_event
from vtap.api.pacing import HeavyWork
from vtap.control.controller import Controller
from vtap.model.access import Role
from vtap.model.network import Host
from vtap.model.policy import TapSpec
from vtap.model.policy_search import matches, words
from vtap.store.sqlite import Store


@pytest.fixture
async def ctl(tmp_path):
    store = Store(tmp_path)
    store.save_hosts([Host(f"00:00:00:00:00:0{i}", (f"10.0.0.{i}",), 0xA, i) for i in range(1, 5)])
    ctl = Controller(store)
    specs = [TapSpec(name=f"web-{i}" if i % 2 else f"db-{i}", src_ip=f"10.1.{i // 256}.{i % 256}",
                     monitor_ip="10.0.0.2" if i % 3 else "10.0.0.4", enabled=i % 5 != 0) for i in range(1, 301)]
    await ctl.apply_taps(specs, prune=False)
    while ctl.tap_status(300).reason == "being compiled":
        await asyncio.sleep(0.01)
    yield ctl


def data(event: str) -> tuple[str, dict]:
    kind, body = event.split("\n")[:2]
    return kind.removeprefix("event: "), json.loads(body.removeprefix("data: "))


async def next_events(board: Board, reader) -> list[dict]:
    await asyncio.wait_for(reader.woken.wait(), 5)
    reader.woken.clear()
    out = []
    while reader.waiting:
        out.append(data(await delta_event(reader.waiting.popleft(), reader, board.heavy))[1])
    return out


async def test_a_reader_gets_a_snapshot_of_what_it_watches_then_only_what_moved(ctl, monkeypatch):
    monkeypatch.setattr(events, "INTERVAL", 0.05)
    monkeypatch.setattr(events, "LINGER", 0.05)
    board = Board(ctl, HeavyWork())
    page, everything = board.join({2, 3, 999}), board.join(None)
    await asyncio.wait_for(board.swept.wait(), 5)
    kind, snap = data(await snapshot_event(board, page))
    assert kind == "snapshot" and [t["id"] for t in snap["taps"]] == [2, 3]
    assert snap["summary"] == {"total": 300, "by_status": {"disabled": 60, "pending": 240}, "set_version": 300}
    assert snap["taps"][0]["name"] == "db-2" and snap["taps"][0]["status"] == "pending"
    assert len(data(await snapshot_event(board, everything))[1]["taps"]) == 300

    await ctl.update_tap(2, ctl.taps[2].spec.model_copy(update={"enabled": False}))
    await ctl.delete_tap(3)
    await ctl.delete_tap(7)
    seen: list[dict] = []
    merged: dict = {}
    while not (any(e["removed"] for e in seen) and merged.get("status") == "disabled"):
        seen += await next_events(board, page)
        for c in (c for e in seen for c in e["changed"]):
            merged.update(c)
    changed = [c for e in seen for c in e["changed"]]
    assert {c["id"] for c in changed} == {2} and merged["enabled"] is False
    assert {k for c in changed for k in c} <= {"id", "enabled", "status", "status_reason"}  # only what moved
    assert [e["removed"] for e in seen if e["removed"]] == [[3]]  # 7 is not its business
    assert seen[-1]["summary"]["total"] == 298
    wider = []
    while not any(e["removed"] for e in wider):
        wider += await next_events(board, everything)
    assert sorted(i for e in wider for i in e["removed"]) == [3, 7]
    board.leave(page)
    board.leave(everything)
    assert board.ledger.rows  # a reader may come back at once (the UI turning a page)
    await asyncio.sleep(0.2)
    assert board.ledger.rows == {} and board._task is None  # nobody watching: nothing kept


async def test_a_reader_that_falls_behind_is_given_a_snapshot(ctl, monkeypatch):
    monkeypatch.setattr(events, "INTERVAL", 0.01)
    board = Board(ctl, HeavyWork())
    reader = board.join(set())
    await asyncio.wait_for(board.swept.wait(), 5)
    while not reader.behind:
        await asyncio.sleep(0.02)
    kind, snap = data(await snapshot_event(board, reader))
    assert kind == "snapshot" and snap["taps"] == [] and not reader.behind and not reader.waiting
    monkeypatch.setattr(events, "LINGER", 0.01)
    board.leave(reader)
    await asyncio.sleep(0.05)


@pytest.fixture
async def client(ctl, tmp_path):
    tokens = Tokens(ctl.store)
    _, admin = await tokens.mint("admin", Role.ADMIN, None, None)
    app = create_app(ctl, tokens)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"authorization": f"Bearer {admin}"}) as c:
        yield c


async def test_the_listing_filters_by_words_and_status_and_pages(client):
    everything = await client.get("/api/v1/taps")
    assert len(everything.json()) == 300 and everything.headers["x-total-count"] == "300"
    page = await client.get("/api/v1/taps", params={"q": "WEB 10.0.0.4", "offset": 2, "limit": 3})
    assert page.headers["x-total-count"] == "50"  # odd ids, multiples of 3
    assert [t["id"] for t in page.json()] == [15, 21, 27]
    disabled = await client.get("/api/v1/taps", params={"status": "disabled", "limit": 1000})
    assert disabled.headers["x-total-count"] == "60" and {t["status"] for t in disabled.json()} == {"disabled"}
    found = await client.get("/api/v1/taps", params={"q": "10.1.0.42"})
    assert [t["name"] for t in found.json()] == ["db-42"]
    beyond = await client.get("/api/v1/taps", params={"offset": 400, "limit": 10})
    assert beyond.json() == [] and beyond.headers["x-total-count"] == "300"


@pytest.mark.parametrize("params, field", [({"status": "sleepy"}, "status"), ({"limit": 0}, "limit"),
                                           ({"offset": -1}, "offset"), ({"limit": 1001}, "limit")])
async def test_a_bad_listing_parameter_is_a_422_naming_it(client, params, field):
    resp = await client.get("/api/v1/taps", params=params)
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", field]


@pytest.mark.parametrize("ids", ["x", "0", ",".join(str(i) for i in range(1, 1002))])
async def test_bad_ids_to_watch_are_a_422_naming_them(client, ids):
    resp = await client.get("/api/v1/events", params={"ids": ids})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", "ids"]


def test_words_match_a_name_an_address_or_a_monitor_whatever_the_case():
    spec = TapSpec(name="Web-Front", src_mac="00:00:00:00:00:AA", dst_ip="10.0.3.0/24", monitor_pool=["10.0.0.5", "10.0.0.6"])
    assert matches(spec, words("web 0:aa")) and matches(spec, words("10.0.3.")) and matches(spec, words("10.0.0.6"))
    assert matches(spec, words("  ")) and not matches(spec, words("web db"))
