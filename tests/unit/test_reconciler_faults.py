"""The reconciler against a switch that refuses, times out or goes away: the error
state, the back-off and its cap, re-reading after a failure, the cluster's write fence,
the not-master refusal, settling, and the end of a closed channel."""

from __future__ import annotations

import asyncio
import time

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from tests.unit.datapath import FakeDatapath, error, until
from vtap.compile.pipeline import COOKIE_FORWARDING
from vtap.control import reconciler
from vtap.control.reconciler import SwitchReconciler
from vtap.model.rules import Bucket, FlowRule, GroupAction, GroupRule, Meter, Output, SwitchRules, match
from vtap.model.state import SyncState
from vtap.openflow.channel import ChannelClosed

G = GroupRule(0x76000001, "all", (Bucket((Output(3),)),))
A = FlowRule(1, 100, match(eth_src="00:00:00:00:00:01"), (GroupAction(G.group_id),), goto=2, cookie=COOKIE_FORWARDING)
M = Meter(0x76740001, 1000, 100)
STALE = FlowRule(2, 100, match(eth_dst="00:00:00:00:00:09"), (Output(9),), cookie=COOKIE_FORWARDING)
DESIRED = SwitchRules(frozenset({A}), frozenset({G}), frozenset({M}))
LEFT_OVER = SwitchRules(frozenset({STALE}))

TABLE_FULL = (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_TABLE_FULL)
IS_SLAVE = (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE)


class BackoffClock:
    """The reconciler module's `asyncio`, except that a back-off wait is recorded and over
    at once, as if its delay had passed: delays up to the 30 s cap are checked in no time.
    (`wait_synced` would end at once too: tests on this clock poll instead.)"""

    def __init__(self):
        self.waits: list[float] = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def wait_for(self, awaitable, timeout):
        self.waits.append(timeout)
        awaitable.close()
        raise asyncio.TimeoutError


@pytest.fixture
def clock(monkeypatch):
    clock = BackoffClock()
    monkeypatch.setattr(reconciler, "asyncio", clock)
    return clock


@pytest.fixture
def dp():
    dp = FakeDatapath()
    dp.install(LEFT_OVER)
    return dp


@pytest.fixture
async def started():
    """Start reconcilers as `started(rec)`; each is stopped when the test ends."""
    running = []

    def start(rec: SwitchReconciler) -> SwitchReconciler:
        rec.start()
        running.append(rec)
        return rec

    yield start
    for rec in running:
        await rec.stop()


async def test_a_pass_installs_the_desired_rules_and_confirms_their_generation(dp, started):
    """The fake switch itself: one pass reads it, sends the difference and converges."""
    synced = []
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=3, on_synced=lambda: synced.append(1)))
    await rec.wait_synced(5)
    assert dp.held() == DESIRED  # the stale flow is gone, the meter, group and flow are in
    assert (rec.status.state, rec.status.synced_generation, rec.status.batches) == (SyncState.IN_SYNC, 3, 1)
    assert synced == [1]


@pytest.mark.parametrize(
    ("method", "fault", "last_error", "n_refused"),
    [
        ("send_batch", error(*TABLE_FULL, "a batch"), str(error(*TABLE_FULL, "a batch")), 0),
        ("send_batch", error(*IS_SLAVE, "a batch"), str(error(*IS_SLAVE, "a batch")), 1),
        ("flow_stats_raw", asyncio.TimeoutError(), "TimeoutError", 0),
    ],
    ids=["table-full", "is-slave", "read-timeout"],
)
async def test_a_failed_pass_is_an_error_and_only_is_slave_says_not_master(dp, started, method, fault, last_error, n_refused):
    """ERROR with the switch's own words (or the timeout's name); only OFPBRC_IS_SLAVE
    tells the controller that another instance is master."""
    refusals = []
    dp.fail(method, fault)
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=1, retry_delay=60.0, on_refused=refusals.append))
    await until(lambda: rec.status.state == SyncState.ERROR)
    assert rec.status.last_error == last_error
    assert rec.status.synced_generation == -1
    assert dp.held() == LEFT_OVER  # nothing of the refused batch went in
    assert len(refusals) == n_refused and all("not its master" in why for why in refusals)


async def test_after_a_failure_the_retry_waits_the_back_off_and_reads_the_switch_again(dp, started):
    """The retry is not immediate, and it re-reads the switch: what it holds after an
    error is not known."""
    dp.fail("send_batch", asyncio.TimeoutError())
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=2, retry_delay=0.05))
    await rec.wait_synced(5)
    reads = [t for name, t in dp.calls if name == "flow_stats_raw"]
    failed = next(t for name, t in dp.calls if name == "send_batch")
    assert len(reads) == 2 and reads[1] - failed >= 0.05 * 0.9
    assert (rec.status.state, rec.status.synced_generation, rec.status.last_error) == (SyncState.IN_SYNC, 2, None)
    assert dp.held() == DESIRED


async def test_the_back_off_doubles_up_to_30_s_and_starts_over_after_a_success(dp, started, clock):
    """A switch that keeps failing is asked less and less often, but at least every 30 s;
    once it answers, the next failure is retried after the short delay again."""
    dp.fail("flow_stats_raw", *(asyncio.TimeoutError() for _ in range(8)))
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=1, retry_delay=1.0))
    await until(lambda: rec.status.state == SyncState.IN_SYNC)
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert dp.count("flow_stats_raw") == 9

    changed = SwitchRules(DESIRED.flows - {A}, DESIRED.groups, DESIRED.meters)
    dp.fail("send_batch", asyncio.TimeoutError())
    rec.set_desired(changed, generation=2)
    await until(lambda: rec.status.synced_generation == 2)
    assert clock.waits[8:] == [1.0]
    assert dp.held() == changed


async def test_a_kick_ends_the_back_off_at_once(dp, started):
    """A new role (say) may have cured the failure: kicked, the reconciler does not sit
    out its back-off."""
    dp.fail("flow_stats_raw", asyncio.TimeoutError())
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=1, retry_delay=60.0))
    await until(lambda: rec.status.state == SyncState.ERROR)
    rec.kick()
    await rec.wait_synced(5)  # far less than the 60 s back-off
    assert dp.count("flow_stats_raw") == 2 and dp.held() == DESIRED


async def test_a_kick_during_the_failing_pass_is_not_lost(dp, started):
    """A kick that comes while the pass is still out (a role granted just as a read times
    out) counts: the back-off it would have cut short does not begin."""
    rec = SwitchReconciler(dp, desired=DESIRED, generation=1, retry_delay=60.0)
    read = dp.flow_stats_raw

    async def kicked_then_timed_out(*args, **kwargs):
        dp.flow_stats_raw = read  # once
        rec.kick()
        raise asyncio.TimeoutError()

    dp.flow_stats_raw = kicked_then_timed_out
    started(rec)
    await rec.wait_synced(5)  # far less than the 60 s back-off
    assert dp.held() == DESIRED


async def test_no_write_while_the_lease_is_in_doubt(dp, started):
    """The fence: while `may_write` says no, nothing is sent and the switch is read again
    at each retry (whoever leads may change it); once it says yes, the changes go."""
    lease = [False]
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=1, retry_delay=0.01, may_write=lambda: lease[0]))
    await until(lambda: dp.count("flow_stats_raw") >= 3)
    assert dp.count("send_batch") == 0 and dp.held() == LEFT_OVER
    assert rec.status.state == SyncState.SYNCING and rec.status.synced_generation == -1
    lease[0] = True
    await rec.wait_synced(5)
    assert dp.held() == DESIRED


async def test_while_settling_rules_are_added_and_nothing_removed_until_it_ends(dp, started):
    """A view still missing links must not tear down what the switch holds: the stale
    flow stays, and the switch is not called in sync, until settling ends."""
    applied = []
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=1, settle_until=time.monotonic() + 60,
                                   on_applied=lambda: applied.append(1)))
    await until(lambda: applied)
    assert dp.held() == SwitchRules(DESIRED.flows | LEFT_OVER.flows, DESIRED.groups, DESIRED.meters)
    assert rec.status.state == SyncState.SYNCING
    rec.end_settling()
    await rec.wait_synced(5)
    assert dp.held() == DESIRED


async def test_a_closed_channel_ends_the_reconciler_without_an_error(dp, started):
    """The connection is gone: no error state, no retry (the next connection gets a
    reconciler of its own)."""
    dp.fail("flow_stats_raw", ChannelClosed("closed"))
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=1, retry_delay=0.01))
    await until(lambda: rec._task.done())
    rec.set_desired(SwitchRules(), generation=2)
    await asyncio.sleep(0.05)
    assert dp.count("flow_stats_raw") == 1 and dp.held() == LEFT_OVER
    assert (rec.status.state, rec.status.last_error) == (SyncState.SYNCING, None)


async def test_before_its_first_compile_a_reconciler_deletes_nothing(dp, started):
    """A restart ends settling as its last stored switch comes back, and compiles then (in
    a thread, for a large set): until that compile's rules are given, the empty desired
    set held meanwhile must not delete the switch's rules, which carry the traffic."""
    rec = started(SwitchReconciler(dp, settle_until=time.monotonic() + 60))
    await until(lambda: dp.count("barrier"))
    rec.end_settling()
    await until(lambda: dp.count("barrier") >= 2)
    assert dp.held() == LEFT_OVER and rec.status.state != SyncState.IN_SYNC
    rec.set_desired(DESIRED, 1)
    await until(lambda: rec.status.state == SyncState.IN_SYNC)
    assert dp.held() == DESIRED


def _copy(rules: SwitchRules) -> SwitchRules:
    """Equal rules in other objects, as a compile reused from the last stop and the same
    set compiled afresh are."""
    return SwitchRules(frozenset(rules.flows), frozenset(rules.groups), frozenset(rules.meters))


async def test_an_equal_desired_set_in_another_object_is_kept_and_sends_nothing(dp, started):
    """The new object is kept (the next compare is by identity, not 12,000 rules anew);
    nothing goes to the switch and the new generation is confirmed at once."""
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=1))
    await rec.wait_synced(5)
    batches = dp.count("send_batch")
    same = _copy(DESIRED)
    assert same == DESIRED and same is not DESIRED
    rec.set_desired(same, 2)
    assert rec.desired is same and rec.installed is same
    assert (rec.status.state, rec.status.synced_generation) == (SyncState.IN_SYNC, 2)
    await asyncio.sleep(0.01)
    assert dp.count("send_batch") == batches


async def test_an_equal_set_given_while_a_pass_sends_is_still_confirmed(dp, started):
    """A pass confirms the object it began with: the equal one given meanwhile takes one
    more pass (a barrier), never a reconciler left syncing."""
    rec = started(SwitchReconciler(dp, desired=DESIRED, generation=1))
    await rec.wait_synced(5)
    other = SwitchRules(frozenset({A, STALE}), frozenset({G}), frozenset({M}))
    entered, held, send = asyncio.Event(), asyncio.Event(), dp.send_batch

    async def held_send(msgs, *, atomic=True):
        entered.set()
        await held.wait()
        await send(msgs, atomic=atomic)

    dp.send_batch = held_send
    rec.set_desired(other, 2)
    await asyncio.wait_for(entered.wait(), 5)  # the pass for `other` is under way, its batch held
    rec.set_desired(_copy(other), 3)
    held.set()
    await until(lambda: rec.status.state == SyncState.IN_SYNC and rec.status.synced_generation == 3)
    assert dp.held() == other


async def test_a_large_diff_is_made_off_the_loop_and_installs_the_same(dp, started, monkeypatch):
    """Past `DIFF_OFF_LOOP` rules the diff (pure, on frozen sets) runs in a worker thread:
    12,500 rules against as many read back held the loop up to 1.3 s. What the switch
    then holds is the desired set, the stale rule gone."""
    import threading

    monkeypatch.setattr(reconciler, "DIFF_OFF_LOOP", 10)
    where, made = [], reconciler.diff

    def recorded(*args, **kw):
        where.append(threading.get_ident())
        return made(*args, **kw)

    monkeypatch.setattr(reconciler, "diff", recorded)
    flows = frozenset(FlowRule(2, 100, match(eth_dst=f"00:00:00:00:01:{i:02x}"), (Output(1),), cookie=COOKIE_FORWARDING)
                      for i in range(20))
    desired = SwitchRules(flows | {A}, frozenset({G}), frozenset({M}))
    rec = started(SwitchReconciler(dp, desired=desired, generation=1))
    await rec.wait_synced(5)
    assert where and threading.get_ident() not in where
    assert dp.held() == desired
