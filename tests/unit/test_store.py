"""The SQLite store: declarative apply in one transaction, the audit chain, tokens."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtap.model import audit
from vtap.model.policy import TapSpec
from vtap.store import audit_rows
from vtap.store.errors import NotFound
from vtap.store.sqlite import Store


def spec(name: str, **kw) -> TapSpec:
    return TapSpec(name=name, src_ip="10.0.0.1", monitor_ip="10.0.0.2", **kw)


async def test_replace_taps_adds_changes_and_prunes_in_one_transaction(tmp_path):
    store = Store(tmp_path)
    a, b = await store.add_tap(spec("a")), await store.add_tap(spec("b"))
    done = await store.replace_taps([spec("a", dst_ip="10.0.0.3"), spec("c")], prune=True)
    assert [t.spec.name for t in done.added] == ["c"] and done.added[0].id > b.id
    assert [(before.id, after.spec.dst_ip) for before, after in done.changed] == [(a.id, "10.0.0.3")]
    assert [t.id for t in done.removed] == [b.id]
    assert {t.spec.name: t.id for t in store.load_taps()} == {"a": a.id, "c": done.added[0].id}
    before = store.load_taps()
    with pytest.raises(ValueError, match="declared twice"):
        await store.replace_taps([spec("x"), spec("x")], prune=True)
    assert store.load_taps() == before  # nothing changed


async def test_an_apply_without_prune_reads_the_policies_it_names_and_keeps_no_second_copy(tmp_path):
    """The Tap objects the store answers with are those it loaded or wrote (the
    controller's), not parses of their own; an apply without prune is planned against
    the stored policies it names only, and one with prune against all of them."""
    store = Store(tmp_path)
    for name in "abc":
        await store.add_tap(spec(name))
    store = Store(tmp_path)
    loaded = {t.spec.name: t for t in store.load_taps()}
    done = await store.replace_taps([spec("a"), spec("d")], prune=False)
    assert done.unchanged == [loaded["a"]] and done.unchanged[0] is loaded["a"]  # the very object, not a copy
    assert [t.spec.name for t in done.added] == ["d"] and done.removed == []
    again = await store.replace_taps([spec("d", dst_ip="10.0.0.9")], prune=False)
    assert again.changed[0][0] is done.added[0]  # what the last apply wrote, as it wrote it
    pruned = await store.replace_taps([spec("a")], prune=True)
    assert sorted(t.spec.name for t in pruned.removed) == ["b", "c", "d"]
    await store.delete_tap(loaded["a"].id)
    assert store.load_taps() == [] and store._parsed == {}


async def test_a_bulk_apply_is_planned_and_written_off_the_loop_and_single_writes_wait_their_turn(tmp_path, monkeypatch):
    """At 100,000 the plan, the JSON and the rows held the loop for seconds: they are
    made in a worker thread. A single write asked meanwhile waits for the apply, and
    then sees what it wrote (here: the name it wanted is taken)."""
    import asyncio
    import threading

    from vtap.store import sqlite
    from vtap.store.errors import NameTaken

    where = set()
    plan = sqlite.plan_changes

    def planned(*args, **kw):
        where.add(threading.get_ident())
        return plan(*args, **kw)

    monkeypatch.setattr(sqlite, "plan_changes", planned)
    store = Store(tmp_path)
    await store.add_tap(spec("old"))

    async def meanwhile():
        await asyncio.sleep(0)  # the apply has its turn
        with pytest.raises(NameTaken):
            await store.add_tap(spec("b"))
        return await store.add_tap(spec("after"))

    done, after = await asyncio.gather(store.replace_taps([spec(n) for n in "abc"], prune=True), meanwhile())
    assert where and threading.get_ident() not in where
    assert [t.spec.name for t in done.added] == ["a", "b", "c"] and [t.spec.name for t in done.removed] == ["old"]
    assert [t.spec.name for t in Store(tmp_path).load_taps()] == ["a", "b", "c", "after"]
    assert after.id > max(t.id for t in done.added)


async def test_the_audit_chain_breaks_where_a_record_is_edited_or_removed(tmp_path):
    store = Store(tmp_path)
    for i in range(4):
        await store.append_audit({"time": float(i), "actor": "admin", "remote": "127.0.0.1:1", "action": "tap.create",
                            "target": f"tap:{i}", "before": None, "after": {"i": i}, "result": "201"})
    records = await store.audit_records()
    assert audit.verify(records) == (True, None, "4 records, chain intact")
    edited = [dict(r) for r in records]
    edited[2]["after"] = {"i": 99}
    assert audit.verify(edited)[:2] == (False, 3)
    assert audit.verify(records[:1] + records[2:])[:2] == (False, 3)  # record 2 deleted


def _record(i: int, actor: str = "admin") -> dict:
    return {"time": float(i), "actor": actor, "remote": "127.0.0.1:1", "action": "tap.create", "target": f"tap:{i}",
            "before": None, "after": {"i": i}, "result": "201"}


@pytest.mark.parametrize("child", [False, True], ids=["in the writer thread", "by a child process"])
async def test_a_bulk_append_in_several_transactions_stays_one_chain_whatever_appends_meanwhile(tmp_path, monkeypatch, child):
    """1,200 records go in three transactions (of 500 here; in one, by the child);
    meanwhile this process appends one (it waits its turn) and another process's store
    appends one, between two of the bulk's transactions or around them. One intact
    chain: the bulk's records in their order, this process's after them."""
    import asyncio

    monkeypatch.setattr(audit_rows, "TXN", 500)
    monkeypatch.setattr(audit_rows, "CHILD_MIN", 1 if child else 10 ** 9)
    store, other = Store(tmp_path), Store(tmp_path)
    await store.append_audit(_record(0))

    async def meanwhile() -> None:
        await asyncio.sleep(0)
        await other.append_audit(_record(1, actor="other-process"))
        await store.append_audit(_record(2, actor="this-process"))

    await asyncio.gather(store.append_audits([_record(10 + i, "bulk") for i in range(1200)]), meanwhile())
    records = await store.audit_records()
    assert audit.verify(records) == (True, None, "1203 records, chain intact")
    assert [r["time"] for r in records if r["actor"] == "bulk"] == [10.0 + i for i in range(1200)]
    assert sorted(r["actor"] for r in records[1:-1]) == ["bulk"] * 1200 + ["other-process"]
    assert records[-1]["actor"] == "this-process"


async def test_a_bulk_append_is_chained_and_written_off_the_event_loop(tmp_path, monkeypatch):
    """The loop that answers the switches never chains or writes the records: at
    100,000 (one PUT) that held it for seconds, past Open vSwitch's inactivity probe."""
    import threading

    where = set()
    chain = audit_rows._chain

    def chained(*args):
        where.add(threading.get_ident())
        return chain(*args)

    monkeypatch.setattr(audit_rows, "_chain", chained)
    store = Store(tmp_path)
    await store.append_audits([_record(i) for i in range(10)])
    assert where and threading.get_ident() not in where
    assert audit.verify(await store.audit_records()) == (True, None, "10 records, chain intact")


def test_a_secret_is_made_once(tmp_path):
    store = Store(tmp_path)
    key = store.secret("lldp")
    assert len(key) == 32 and Store(tmp_path).secret("lldp") == key


def test_links_are_replaced_whole_and_survive_a_reopen(tmp_path):
    from vtap.model.network import Link

    store = Store(tmp_path)
    store.save_links([Link(1, 2, 3, 4), Link(3, 4, 1, 2)])
    store.save_links([Link(1, 2, 3, 4)])
    store.close()
    assert Store(tmp_path).load_links() == [Link(1, 2, 3, 4)]


async def test_a_switch_certificate_pin_is_kept_until_deleted(tmp_path):
    store = Store(tmp_path)
    assert store.pin_of(2) is None
    store.save_pin(2, "ab" * 32)
    assert Store(tmp_path).pin_of(2) == "ab" * 32  # kept across restarts
    await store.delete_pin(2)
    assert store.pin_of(2) is None
    with pytest.raises(NotFound):
        await store.delete_pin(2)
    store.save_pin(0xFFFF_0000_0000_0001, "cd" * 32)  # 64 bits unsigned: beyond SQLite's INTEGER
    assert store.pin_of(0xFFFF_0000_0000_0001) == "cd" * 32


def test_hosts_and_links_are_written_behind_in_order_and_read_after_every_write_asked(tmp_path):
    """The loop asks for a write of the hosts or links it saw and goes on: while the
    writer thread is busy (a bulk apply's rows, say) it does not wait for it; what it
    asked is written in order, and read back once written."""
    import threading

    from vtap.model.network import Host, Link

    store = Store(tmp_path)
    busy, release = threading.Event(), threading.Event()
    store._write(lambda db: (busy.set(), release.wait(10)))
    assert busy.wait(10)
    store.save_hosts([Host("00:00:00:00:00:01", ("10.0.0.1",), 1, 1, 1.0)])  # returns at once
    store.save_links([Link(1, 2, 3, 4)])
    store.delete_hosts(["00:00:00:00:00:01"])
    store.save_hosts([Host("00:00:00:00:00:02", ("10.0.0.2",), 1, 2, 2.0)])
    assert store.db.execute("SELECT count(*) FROM hosts").fetchone()[0] == 0  # nothing written yet
    release.set()
    assert [h.mac for h in store.load_hosts()] == ["00:00:00:00:00:02"] and store.load_links() == [Link(1, 2, 3, 4)]
    store.close()


async def test_a_record_carrying_a_policy_is_written_as_its_json_and_verifies(tmp_path):
    """A bulk change hands its records the policies themselves; they are made into JSON
    where the records are written, and hashed as that JSON (the chain verifies from the
    rows alone)."""
    store = Store(tmp_path)
    p = spec("web", dst_ip="10.0.0.3")
    await store.append_audits([{**_record(1), "before": None, "after": p}, {**_record(2), "before": p, "after": None}])
    records = await store.audit_records()
    assert records[0]["after"] == p.model_dump(mode="json") == records[1]["before"]
    assert audit.verify(records) == (True, None, "2 records, chain intact")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(record=st.fixed_dictionaries({"time": st.floats(0, 4e9), "actor": st.text(), "remote": st.text(),
                                     "action": st.text(), "target": st.text(), "result": st.text(),
                                     "before": _json, "after": _json}),
       seq=st.integers(1, 2 ** 62), prev=st.text("0123456789abcdef", min_size=64, max_size=64))
def test_a_record_chained_in_one_pass_has_the_hash_verify_recomputes(record, seq, prev):
    """`chained` encodes each policy once and puts the record's canonical form together
    from parts; its hash must be `record_hash`'s over the whole record, whatever the
    strings hold (quotes, the keys' own names)."""
    before, after, digest = audit.chained(record, seq, prev)
    whole = {**record, "seq": seq}
    assert digest == audit.record_hash(whole, prev)
    assert (json.loads(before), json.loads(after)) == (record["before"], record["after"])


async def test_the_chain_verifies_from_the_rows_whatever_the_times_and_texts(tmp_path):
    """The rows go to SQLite as one JSON document per transaction: every time must come
    back as the same float (its hash covers it), and every text as written."""
    rng = random.Random(7)
    store = Store(tmp_path)
    records = [{**_record(i), "time": 1.7e9 + rng.random() * 1e8, "actor": f'a"ct\\or\u00e9 {i}', "after": {"q": '"after":null'}}
               for i in range(3000)]
    await store.append_audits(records)
    got = await store.audit_records()
    assert [r["time"] for r in got] == [r["time"] for r in records]
    assert [r["actor"] for r in got] == [r["actor"] for r in records]
    assert audit.verify(got) == (True, None, "3000 records, chain intact")


async def test_one_record_appended_comes_back_as_chained(tmp_path):
    store = Store(tmp_path)
    await store.append_audits([_record(1)])
    chained = await store.append_audit(_record(2))
    assert chained == (await store.audit_records())[-1] and chained["seq"] == 2


async def test_a_bulk_append_holds_one_slice_of_chained_records_at_a_time(tmp_path, monkeypatch):
    """A PUT's records are chained (a dict and two JSON documents each) a transaction at
    a time, and each slice's go once written: all of them held at once, next to a whole
    compile, left the controller's pages fragmented after they went."""
    import tracemalloc

    monkeypatch.setattr(audit_rows, "TXN", 200)
    store = Store(tmp_path)
    policies = [spec(f"p{i}", dst_ip="10.0.0.3", description="x" * 200) for i in range(4000)]
    records = [{**_record(i), "before": None, "after": p} for i, p in enumerate(policies)]
    tracemalloc.start()
    try:
        await store.append_audits(records)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(await store.audit_records()) == 4000
    # Chained, a record is ~1.5 KiB: all 4,000 held at once made a peak of ~6 MiB, a slice of 200 ~0.3.
    assert peak < 2 ** 20, f"{peak / 2 ** 20:.1f} MiB at the peak"


async def test_an_append_whose_head_moved_before_its_transaction_is_chained_again(tmp_path, monkeypatch):
    """A slice is chained from the head read before its transaction (the write lock is
    taken for the rows only); another process appending in between moves the head, and
    the slice is chained again inside: one intact chain, the other's record first."""
    import sqlite3

    store = Store(tmp_path)
    other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    real, moved = audit_rows.audit_head, []

    def head(db):
        now = real(db)
        if not moved:
            moved.append(now)
            audit_rows.append(other, [_record(99, "other-process")])  # between this read and the transaction
        return now

    monkeypatch.setattr(audit_rows, "audit_head", head)
    await store.append_audits([_record(i, "bulk") for i in range(3)])
    records = await store.audit_records()
    assert audit.verify(records) == (True, None, "4 records, chain intact")
    assert [(r["actor"], r["seq"]) for r in records] == [("other-process", 1), ("bulk", 2), ("bulk", 3), ("bulk", 4)]
    other.close()


async def test_records_chained_by_the_child_process_are_those_chained_here(tmp_path, monkeypatch):
    """A bulk change's records (the policies themselves as before and after, as a PUT
    hands them) chained by the child process give the very rows, hashes included, that
    the writer thread gives for the same records."""
    policies = [spec(f"p{i}", dst_ip="10.0.0.3", vlan_id=i % 4096, description='q"uote \u00e9') for i in range(300)]
    records = [{**_record(i), "time": 1.7e9 + i / 7, "before": policies[i - 1] if i else None, "after": p}
               for i, p in enumerate(policies)] + [{**_record(300), "before": policies[-1], "after": None}]
    rows = {}
    for child in (False, True):
        monkeypatch.setattr(audit_rows, "CHILD_MIN", 1 if child else 10 ** 9)
        store = Store(tmp_path / str(child))
        await store.append_audit(_record(-1))
        await store.append_audits(records)
        rows[child] = await store.audit_records()
        store.close()
    assert rows[True] == rows[False] and len(rows[True]) == 302
    assert rows[True][1]["after"] == policies[0].model_dump(mode="json")
    assert audit.verify(rows[True]) == (True, None, "302 records, chain intact")


def test_the_child_writes_each_transaction_as_soon_as_its_lines_are_read(tmp_path):
    """The child does not wait for a bulk change's last line: the first `TXN` records
    are in the database while the parent is still making the rest (the PUT of 100,000
    is answered only once all are in). The chain goes on across the slices, intact."""
    import subprocess
    import sys
    import time

    Store(tmp_path).close()
    path = tmp_path / "vtap.db"
    n = audit_rows.TXN
    with subprocess.Popen([sys.executable, "-m", "vtap.store.audit_rows", str(path)], stdin=subprocess.PIPE,
                          stderr=subprocess.PIPE) as child:
        child.stdin.write("".join(audit_rows._line(_record(i)) + "\n" for i in range(n)).encode())
        child.stdin.flush()
        deadline, written = time.monotonic() + 30, 0
        while written < n and time.monotonic() < deadline:
            time.sleep(0.05)
            with sqlite3.connect(path) as db:
                written = db.execute("SELECT count(*) FROM audit").fetchone()[0]
        assert written == n, "the first transaction waited for the last line"
        child.stdin.write("".join(audit_rows._line(_record(i)) + "\n" for i in range(n, n + 5)).encode())
        child.stdin.close()
        assert child.wait(30) == 0, child.stderr.read()
    store = Store(tmp_path)
    records = asyncio.run(store.audit_records())
    store.close()
    assert [r["time"] for r in records] == [float(i) for i in range(n + 5)]
    assert audit.verify(records) == (True, None, f"{n + 5} records, chain intact")


def test_a_child_process_that_cannot_write_is_an_error_naming_why(tmp_path):
    with pytest.raises(RuntimeError, match=r"audit records not written by the child process \(exit 1\): .*unable to open"):
        audit_rows.append_in_child(tmp_path / "gone" / "vtap.db", [_record(1)])
