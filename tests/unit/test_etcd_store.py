"""The etcd store against a real etcd (Debian's etcd-server, started here on loopback):
two instances sharing one store never lose each other's writes."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from tests.unit.test_store_interface import exercise
from vtap.lab.etcd import EtcdCluster
from vtap.model import audit
from vtap.model.network import Host, Link
from vtap.model.policy import TapSpec
from vtap.store.errors import NameTaken, NotFound, StoreUnavailable
from vtap.store.etcd import EtcdStore
from vtap.store.etcd_client import EtcdTLS, parse_endpoints

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def etcd():
    cluster = EtcdCluster(1, prefix="/t").start()  # secured: TLS, client certificates, auth; user vtap may use /t*
    yield cluster
    cluster.stop()


@pytest.fixture
async def pair(etcd, tmp_path):
    """Two instances' stores on one etcd, under a prefix of this test's own."""
    prefix = f"/t{next(_prefixes)}/"
    a = EtcdStore.from_url(etcd.url, tmp_path / "a", etcd.tls_files(), prefix=prefix)
    b = EtcdStore.from_url(etcd.url, tmp_path / "b", etcd.tls_files(), prefix=prefix)
    await a.open()
    await b.open()
    yield a, b
    await a.aclose()
    await b.aclose()


def spec(name: str, **kw) -> TapSpec:
    return TapSpec(name=name, src_ip="10.0.0.1", monitor_ip="10.0.0.2", **kw)


async def until(check, timeout: float = 3.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


def test_endpoints_are_parsed_and_bad_ones_named():
    assert parse_endpoints("etcd://127.0.0.1:2379,[::1]:2380") == [("127.0.0.1", 2379), ("::1", 2380)]
    with pytest.raises(ValueError, match="expected etcd://"):
        parse_endpoints("http://127.0.0.1:2379")
    with pytest.raises(ValueError, match="'host' is not HOST:PORT"):
        parse_endpoints("etcd://host")


async def test_writes_of_one_instance_reach_the_other_through_the_watch(pair):
    a, b = pair
    heard = []
    b.listener = heard.append
    tap = await a.add_tap(spec("web"))
    await until(lambda: tap.id in b.taps)
    assert b.taps[tap.id] == tap and [c.kind for c in heard] == ["tap"]
    await b.update_tap(tap.id, spec("web", dst_ip="10.0.0.3"))
    await until(lambda: a.taps[tap.id].spec.dst_ip == "10.0.0.3")
    assert a.tap_revision(tap.id) == b.tap_revision(tap.id) > 0
    await a.delete_tap(tap.id)
    await until(lambda: tap.id not in b.taps)
    with pytest.raises(NotFound):
        await b.delete_tap(tap.id)


async def test_concurrent_creations_get_distinct_ids_and_a_name_is_taken_once(pair):
    a, b = pair
    made = await asyncio.gather(*(s.add_tap(spec(f"p{i}")) for i, s in enumerate([a, b] * 10)))
    assert len({t.id for t in made}) == 20
    results = await asyncio.gather(a.add_tap(spec("same")), b.add_tap(spec("same")), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NameTaken", "Tap"]
    await until(lambda: len(a.taps) == len(b.taps) == 21)
    assert a.taps == b.taps


async def test_an_apply_is_one_transaction_planned_on_the_latest_set(pair):
    a, b = pair
    x = await a.add_tap(spec("x"))
    await b.add_tap(spec("y"))  # b's write moves taps-meta: a's next write must plan on it
    done = await a.replace_taps([spec("x", dst_ip="10.0.0.9"), spec("z")], prune=True)
    assert [t.spec.name for t in done.added] == ["z"] and [t.spec.name for t in done.removed] == ["y"]
    assert [(before.id, after.spec.dst_ip) for before, after in done.changed] == [(x.id, "10.0.0.9")]
    await until(lambda: sorted(t.spec.name for t in b.taps.values()) == ["x", "z"])
    with pytest.raises(ValueError, match="declared twice"):
        await b.replace_taps([spec("q"), spec("q")], prune=True)
    with pytest.raises(NameTaken):
        await b.update_tap(x.id, spec("z"))


async def test_audit_appends_from_two_instances_form_one_intact_chain(pair):
    a, b = pair
    await asyncio.gather(*(s.append_audit({"time": float(i), "actor": "admin", "remote": "127.0.0.1:1", "action": "tap.create",
                                            "target": f"tap:{i}", "before": None, "after": {"i": i}, "result": "201"})
                           for i, s in enumerate([a, b] * 5)))
    records = await b.audit_records()
    assert [r["seq"] for r in records] == list(range(1, 11))
    assert audit.verify(records) == (True, None, "10 records, chain intact")
    assert [r["seq"] for r in await a.audit_records(since=8)] == [9, 10]
    assert [r["target"] for r in await a.audit_records(target="tap:3")] == ["tap:3"]


async def test_tokens_secrets_and_revocation_are_shared(pair):
    a, b = pair
    assert a.secret("lldp") == b.secret("lldp") and len(a.secret("lldp")) == 32
    record = await a.add_token("ops", "operator", {"sources": ["10.0.0.0/8"], "monitors": []}, "h1", None)
    await until(lambda: b.token_by_hash("h1") is not None)
    assert b.token_by_hash("h1")["name"] == "ops"
    await b.delete_token(record["id"])
    await until(lambda: a.token_by_hash("h1") is None)


async def test_only_the_leader_publishes_hosts_links_and_pins(pair):
    a, b = pair
    lease = await a.grant_lease(3)
    a.save_hosts([Host("00:00:00:00:00:01", ("10.0.0.1",), 1, 1, 1.0)])  # not the leader: dropped
    await asyncio.sleep(0.2)
    assert not b.hosts
    generation = await a.campaign("a", lease)
    assert generation and await b.campaign("b", await b.grant_lease(3)) is None
    a.fence = ("a", generation)
    a.save_hosts([Host("00:00:00:00:00:01", ("10.0.0.1",), 1, 1, 1.0)])
    a.save_links([Link(1, 2, 3, 4)])
    a.save_pin(2, "ab" * 32)
    await until(lambda: b.hosts and b.links and b.pin_of(2))
    assert b.links == [Link(1, 2, 3, 4)] and b.leader == ("a", generation) and b.pin_of(2) == "ab" * 32
    await b.delete_pin(2)  # an admin's unpin, through any instance
    await until(lambda: a.pin_of(2) is None)
    await a.resign("a", generation)
    await until(lambda: b.leader is None)
    a.delete_hosts(["00:00:00:00:00:01"])  # the fence no longer holds: refused by etcd
    await asyncio.sleep(0.3)
    assert b.hosts


async def test_writes_are_refused_while_etcd_is_down_and_the_copy_is_read_again_after(tmp_path):
    etcd = EtcdCluster(1, prefix="/vtap/").start()
    try:
        a = EtcdStore.from_url(etcd.url, tmp_path / "a", etcd.tls_files(), timeout=1.0)
        await a.open()
        tap = await a.add_tap(spec("kept"))
        name = etcd.members[0][0]
        etcd.stop_member(name)
        with pytest.raises(StoreUnavailable, match="etcd unreachable at 127.0.0.1:"):
            await a.add_tap(spec("lost"))
        assert a.load_taps() == [tap]  # reads go on from the copy
        etcd.start_member(name)
        await until(lambda: a.reachable, timeout=15)
        assert (await a.add_tap(spec("after"))).id == tap.id + 1
        await a.aclose()
    finally:
        etcd.stop()


async def test_every_method_of_the_store_interface(etcd, pair):
    a, b = pair
    a.fence = ("a", await a.campaign("a", await a.grant_lease(30)))  # the leader: it publishes what it learns
    assert repr(a) == etcd.url
    status = await exercise(a, until)
    await until(lambda: a.status == b.status == status)  # the followers show the leader's states
    await until(lambda: (b.load_taps(), b.load_hosts(), b.list_tokens()) == (a.load_taps(), a.load_hosts(), a.list_tokens()))
    assert {t: b.tap_revision(int(t)) for t in status} == {t: rev for t, (rev, _, _) in status.items()}


async def test_election_one_leader_a_growing_generation_and_a_paused_leader_fenced(pair):
    from vtap.control.cluster import Cluster

    a, b = pair
    roles = []
    ca, cb = Cluster(a, "a", "http://a", ttl=2), Cluster(b, "b", "http://b", ttl=2)
    ca.on_role = lambda leading, gen, why: roles.append(("a", leading, gen))
    cb.on_role = lambda leading, gen, why: roles.append(("b", leading, gen))
    a.listener = lambda change: change.kind == "leader" and ca.leader_changed(change.value)
    b.listener = lambda change: change.kind == "leader" and cb.leader_changed(change.value)
    await ca.start()
    await cb.start()
    assert ca.leading and not cb.leading and ca.may_write() and not cb.may_write()
    first = ca.generation
    await until(lambda: b.leader == ("a", first))
    ca._task.cancel()  # a stops refreshing its lease, as a paused process would
    await until(lambda: not ca.may_write(), timeout=3)  # fenced by time alone, before any news from etcd
    await until(lambda: cb.leading, timeout=6)
    assert cb.generation > first and cb.may_write()
    ca.leader_changed(a.leader if a.leader else ("b", cb.generation))
    assert not ca.leading and ("a", False, cb.generation) in roles
    ca._task = asyncio.create_task(ca._keepalive())  # a resumes: its lease is gone, it joins again
    await cb.stop()  # b resigns: the key is free
    await until(lambda: ca.leading, timeout=6)
    assert ca.generation > cb.generation
    await ca.stop()


async def test_etcd_refuses_a_client_without_a_certificate_or_one_it_has_no_user_for(etcd, tmp_path):
    """Who may write the policies is etcd's to check too: TLS with a client certificate,
    and etcd's authentication, whose user is the certificate's common name."""
    ca, _, _ = etcd.tls_files()
    no_cert = EtcdStore(parse_endpoints(etcd.url), tmp_path / "n", timeout=1.0,
                        tls=EtcdTLS(Path(ca).read_bytes(), b"", b""))
    with pytest.raises(StoreUnavailable, match="etcd unreachable"):
        await no_cert.open()  # the TLS handshake fails: etcd asks for a client certificate
    await no_cert.aclose()
    plain = EtcdStore.from_url(etcd.url.replace("etcds://", "etcd://"), tmp_path / "p", timeout=1.0)
    with pytest.raises(StoreUnavailable, match="etcd unreachable"):
        await plain.open()
    await plain.aclose()
    stranger = EtcdStore.from_url(etcd.url, tmp_path / "s", etcd.tls_files("stranger"), prefix="/t-stranger/")
    with pytest.raises(StoreUnavailable, match="permission denied"):
        await stranger.open()  # a certificate of the right CA, but no etcd user of that name
    await stranger.aclose()
    outside = EtcdStore.from_url(etcd.url, tmp_path / "o", etcd.tls_files(), prefix="/elsewhere/")
    with pytest.raises(StoreUnavailable, match="permission denied"):
        await outside.open()  # the vtap user may use its prefix only
    await outside.aclose()


def test_tls_flags_are_checked_against_the_store_url(tmp_path):
    with pytest.raises(ValueError, match="needs --etcd-ca"):
        EtcdStore.from_url("etcds://127.0.0.1:2379", tmp_path)
    pem = tmp_path / "x.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="--etcd-key .*nothing: No such file"):
        EtcdStore.from_url("etcds://127.0.0.1:2379", tmp_path, (pem, pem, tmp_path / "nothing"))
    with pytest.raises(ValueError, match="--etcd-ca .*not a PEM file"):
        EtcdStore.from_url("etcds://127.0.0.1:2379", tmp_path, ("/etc/hostname", pem, pem))
    with pytest.raises(ValueError, match="plain etcd://.*use etcds://"):
        EtcdStore.from_url("etcd://127.0.0.1:2379", tmp_path, ("ca.pem", None, None))
    assert repr(EtcdStore.from_url("etcd://127.0.0.1:2379", tmp_path)) == "etcd://127.0.0.1:2379"


async def test_a_closing_store_ends_a_watch_that_ignores_its_cancel_by_closing_its_client(monkeypatch, caplog):
    """A watch whose stream went to a member that went away and came back did not end
    on a cancel, and a test's close waited on it for minutes: the store's close waits a
    bounded time, closes its clients (which ends such a stream), and leaves, logged, a
    task that runs on still."""
    from vtap.store import etcd_client

    monkeypatch.setattr(etcd_client, "CLOSE_S", 0.2)
    stream_closed = asyncio.Event()

    class Client:
        async def close(self):
            stream_closed.set()

    async def deaf_watch():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await stream_closed.wait()  # as aetcd's iterator does, on the dead stream

    deaf = [True]

    async def deafer():
        while deaf[0]:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    watch, other = asyncio.create_task(deaf_watch()), asyncio.create_task(deafer())
    await asyncio.sleep(0)
    t = time.monotonic()
    await etcd_client.shut([watch], [Client()])
    assert watch.done() and stream_closed.is_set() and time.monotonic() - t < 1.0
    await etcd_client.shut([other], [])
    assert not other.done() and "1 task(s) that did not end on a cancel" in caplog.text
    deaf[0] = False
    other.cancel()
    await asyncio.wait([other], timeout=1)
    assert other.done()
