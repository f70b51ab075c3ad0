"""The one store interface (`vtap.store.base.PolicyStore`): both stores have each of its
methods with its signature, and every method does what it says on a real SQLite store
(`test_etcd_store.py` runs the same calls on a real etcd)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from vtap.model import audit
from vtap.model.network import Host, Link
from vtap.model.policy import Tap, TapSpec
from vtap.store.base import PolicyStore
from vtap.store.errors import NameTaken, NotFound, StoreUnavailable
from vtap.store.etcd import EtcdStore
from vtap.store.sqlite import Store

METHODS = sorted(name for name, value in vars(PolicyStore).items()
                 if inspect.isfunction(value) and (not name.startswith("__") or name == "__repr__"))


def spec(name: str, **kw) -> TapSpec:
    return TapSpec(name=name, src_ip="10.0.0.1", monitor_ip="10.0.0.2", **kw)


def _shape(fn) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_interface_is_what_the_controller_and_the_api_use():
    assert METHODS == sorted([
        "__repr__", "secret", "load_hosts", "save_hosts", "delete_hosts", "load_links", "save_links", "pin_of",
        "save_pin", "delete_pin", "load_taps", "add_tap", "update_tap", "delete_tap", "replace_taps", "tap_revision",
        "publish_status", "add_token", "token_by_hash", "list_tokens", "delete_token", "append_audits", "audit_records",
    ])
    assert PolicyStore.__annotations__ == {"state_dir": "Path", "reachable": "bool", "last_error": "str"}
    for name in METHODS:
        doc = getattr(PolicyStore, name).__doc__
        assert doc and "\n" not in doc, f"{name}: one line saying what a caller may rely on"


@pytest.mark.parametrize("cls", [Store, EtcdStore])
def test_each_store_has_every_method_with_the_interfaces_signature(cls):
    for name in METHODS:
        assert any(name in vars(k) for k in cls.__mro__ if k is not object), f"{cls.__name__} lacks {name}"
        want, got = getattr(PolicyStore, name), getattr(cls, name)
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(want), f"{cls.__name__}.{name}: sync or async"
        assert _shape(got) == _shape(want), f"{cls.__name__}.{name}{inspect.signature(got)}"


async def test_each_store_says_whether_it_answers(tmp_path):
    sqlite = Store(tmp_path)
    assert (sqlite.reachable, sqlite.last_error) == (True, "")
    etcd = EtcdStore([("127.0.0.1", 1)], tmp_path / "e", timeout=0.5)
    assert etcd.reachable is False  # not until it answered
    with pytest.raises(StoreUnavailable):
        await etcd.open()
    assert etcd.reachable is False and "etcd unreachable at 127.0.0.1:1" in etcd.last_error
    await etcd.aclose()


class Calls:
    """A store, noting which of its attributes were used."""

    def __init__(self, store):
        self.store, self.used = store, set()

    def __getattr__(self, name):
        self.used.add(name)
        return getattr(self.store, name)


async def at_once(check) -> None:
    """SQLite writes what the controller learned before the call returns."""
    assert check()


async def exercise(store: PolicyStore, settle=at_once) -> dict:
    """Every method of the interface called on a new, empty store and what it returned
    checked; `settle(check)` waits for a queued write (etcd's leader publishes it) to show.
    The policy states published are returned, for the caller to see where they went."""
    s = Calls(store)
    assert isinstance(s.state_dir, Path) and s.state_dir.is_dir()

    key = s.secret("lldp")
    assert isinstance(key, bytes) and len(key) == 32 and s.secret("lldp") == key

    h1 = Host("00:00:00:00:00:01", ("10.0.0.1",), 1, 1, 1.0)
    h2 = Host("00:00:00:00:00:02", ("10.0.0.2", "fc00::2"), 2, 3, 2.0)
    assert s.load_hosts() == []
    s.save_hosts([h2, h1])
    await settle(lambda: s.load_hosts() == [h1, h2])
    s.save_hosts([Host(h1.mac, h1.ips, 3, 4, 5.0)])  # moved: replaced by MAC
    await settle(lambda: [(h.dpid, h.port) for h in s.load_hosts()] == [(3, 4), (2, 3)])
    s.delete_hosts([h1.mac, "00:00:00:00:00:99"])  # an unknown MAC is no error
    await settle(lambda: s.load_hosts() == [h2])

    assert s.load_links() == []
    s.save_links([Link(3, 4, 1, 2), Link(1, 2, 3, 4)])
    await settle(lambda: s.load_links() == [Link(1, 2, 3, 4), Link(3, 4, 1, 2)])
    s.save_links([Link(1, 2, 3, 4)])  # replaced whole
    await settle(lambda: s.load_links() == [Link(1, 2, 3, 4)])

    assert s.pin_of(2) is None
    s.save_pin(2, "ab" * 32)
    await settle(lambda: s.pin_of(2) == "ab" * 32)
    await s.delete_pin(2)
    assert s.pin_of(2) is None
    with pytest.raises(NotFound):
        await s.delete_pin(2)

    assert s.load_taps() == [] and s.tap_revision(1) == 0
    web = await s.add_tap(spec("web"))
    assert web.id > 0 and s.load_taps() == [web]
    with pytest.raises(NameTaken):
        await s.add_tap(spec("web"))
    first = s.tap_revision(web.id)
    assert first > 0
    moved = await s.update_tap(web.id, spec("web", dst_ip="10.0.0.3"))
    assert moved.id == web.id and s.load_taps() == [moved] and s.tap_revision(web.id) not in (0, first)
    with pytest.raises(NotFound):
        await s.update_tap(web.id + 100, spec("elsewhere"))
    db, old = await s.add_tap(spec("db")), await s.add_tap(spec("old"))
    with pytest.raises(NameTaken):
        await s.update_tap(db.id, spec("web"))
    before = {t.id: s.tap_revision(t.id) for t in (moved, db, old)}
    done = await s.replace_taps([spec("web", dst_ip="10.0.0.3"), spec("db", dst_ip="10.0.0.4"), spec("new")], prune=True)
    assert done.unchanged == [moved] and done.changed == [(db, Tap(id=db.id, spec=spec("db", dst_ip="10.0.0.4")))]
    assert done.removed == [old] and [t.spec.name for t in done.added] == ["new"] and done.added[0].id > old.id
    assert s.tap_revision(web.id) == before[web.id]  # unchanged: not written again
    assert s.tap_revision(db.id) not in (0, before[db.id]) and s.tap_revision(old.id) == 0
    assert s.load_taps() == sorted([moved, done.changed[0][1], done.added[0]], key=lambda t: t.id)
    with pytest.raises(ValueError, match="declared twice"):
        await s.replace_taps([spec("x"), spec("x")], prune=True)
    assert len(s.load_taps()) == 3  # nothing changed
    await s.delete_tap(web.id)
    assert s.tap_revision(web.id) == 0 and web.id not in {t.id for t in s.load_taps()}
    with pytest.raises(NotFound):
        await s.delete_tap(web.id)

    status = {str(t.id): [s.tap_revision(t.id), "active", ""] for t in s.load_taps()}
    assert s.publish_status(status) is None

    ops = await s.add_token("ops", "operator", {"sources": ["10.0.0.0/8"], "monitors": []}, "hash-1", None)
    assert ops["id"] > 0 and ops["created"] > 0 and ops["expires_at"] is None
    assert (ops["name"], ops["role"], ops["scope"]) == ("ops", "operator", {"sources": ["10.0.0.0/8"], "monitors": []})
    viewer = await s.add_token("ro", "viewer", None, "hash-2", 2e9)
    assert viewer["id"] > ops["id"] and viewer["scope"] is None and viewer["expires_at"] == 2e9
    assert s.token_by_hash("hash-1") == ops and s.token_by_hash("unknown") is None
    assert s.list_tokens() == [ops, viewer]
    await s.delete_token(ops["id"])
    assert s.token_by_hash("hash-1") is None and s.list_tokens() == [viewer]
    with pytest.raises(NotFound):
        await s.delete_token(ops["id"])

    records = [{"time": float(i), "actor": actor, "remote": "127.0.0.1:1", "action": "tap.create", "target": f"tap:{i}",
                "before": None, "after": {"i": i}, "result": "201"} for i, actor in enumerate(["admin", "ops", "admin"])]
    assert await s.append_audits(records) is None  # a bulk change's records are written, not handed back
    chained = await s.audit_records()
    assert [r["seq"] for r in chained] == [1, 2, 3] and audit.verify(chained) == (True, None, "3 records, chain intact")
    assert [(r["actor"], r["after"]) for r in chained] == [(r["actor"], r["after"]) for r in records]
    assert [r["seq"] for r in await s.audit_records(since=1)] == [2, 3]
    assert [r["seq"] for r in await s.audit_records(actor="admin")] == [1, 3]
    assert [r["seq"] for r in await s.audit_records(target="tap:1")] == [2]
    assert [r["seq"] for r in await s.audit_records(limit=2)] == [1, 2]

    assert s.used | {"__repr__"} == set(METHODS) | {"state_dir"}  # the caller checks repr()
    return status


async def test_every_method_on_a_sqlite_store(tmp_path):
    store = Store(tmp_path)
    assert repr(store) == str(tmp_path / "vtap.db")
    status = await exercise(store)
    writes = store.db.total_changes
    store.publish_status(status)
    assert status and store.db.total_changes == writes  # standalone: no followers, nothing written
    store.close()
    again = Store(tmp_path)  # what it wrote is kept
    assert [t.spec.name for t in again.load_taps()] == ["db", "new"]
    assert {t: again.tap_revision(int(t)) for t in status} == {t: rev for t, (rev, _, _) in status.items()}
    again.close()
