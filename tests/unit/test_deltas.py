"""The event stream's deltas (`model/deltas.py`): a reader that applies every delta in
order to the snapshot it began with holds what the ledger holds, whatever happened
between two takes; and a delta carries only what changed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vtap.model.deltas import FIELDS, STATUS, Delta, Ledger, entry, moved

STATES = ("pending", "active", "degraded", "error", "disabled")


def row(status: str = "active", packets: int = 0, name: str = "t") -> tuple:
    values = dict.fromkeys(FIELDS)
    values.update(name=name, enabled=True, status=status, status_reason="", packets=packets, bytes=packets * 100)
    return tuple(values[f] for f in FIELDS)


def apply(rows: dict[int, tuple], delta: Delta) -> None:
    """What a reader (the UI) does with one delta."""
    for tap_id in delta.removed:
        rows.pop(tap_id, None)
    rows.update(delta.added)
    for tap_id, fields in delta.changed.items():
        values = dict(zip(FIELDS, rows[tap_id]))
        values.update(fields)
        rows[tap_id] = tuple(values[f] for f in FIELDS)


def test_one_moved_counter_is_one_field_of_one_policy():
    ledger = Ledger()
    for i in range(1, 10_001):
        ledger.look(i, row())
    assert len(ledger.take().added) == 10_000
    for i in range(1, 10_001):
        ledger.look(i, row(packets=7 if i == 42 else 0))
    delta = ledger.take()
    assert (delta.added, delta.changed, delta.removed) == ({}, {42: {"packets": 7, "bytes": 700}}, set())
    assert not ledger.take()  # nothing moved since


def test_summary_counts_by_status_and_forgets_empty_ones():
    ledger = Ledger()
    ledger.look(1, row("pending"))
    ledger.look(2, row("pending"))
    ledger.look(1, row("active"))
    assert ledger.summary() == {"total": 2, "by_status": {"active": 1, "pending": 1}, "set_version": 2}
    ledger.drop([2, 99])
    assert ledger.summary() == {"total": 1, "by_status": {"active": 1}, "set_version": 3}
    ledger.look(3, row("active"))
    assert ledger.summary() == {"total": 2, "by_status": {"active": 2}, "set_version": 4}  # the same total, another set


def test_a_policy_new_and_changed_before_a_take_is_added_whole_and_one_gone_is_only_removed():
    ledger = Ledger()
    ledger.look(1, row("pending"))
    ledger.look(1, row("active", 3))
    ledger.look(2, row())
    ledger.drop([2])
    delta = ledger.take()
    assert delta.added == {1: row("active", 3)} and delta.changed == {} and delta.removed == {2}


def test_a_reader_watching_some_policies_gets_their_part_only():
    delta = Delta({1: row(), 5: row()}, {2: {"packets": 1}, 6: {"packets": 2}}, {3, 7})
    part = delta.only({5, 6, 7, 8})
    assert (part.added, part.changed, part.removed) == ({5: row()}, {6: {"packets": 2}}, {7})
    assert not delta.only(set())


def test_rows_and_moved_fields_as_the_stream_writes_them():
    assert entry(4, row("error", 2))["id"] == 4 and entry(4, row("error", 2))["status"] == "error"
    assert moved(row("active", 1), row("error", 1)) == {"status": "error"}
    assert FIELDS[STATUS] == "status"


# One step of the world between two looks: policies appear, change, vanish; then a take.
ids = st.integers(1, 12)
step = st.lists(st.one_of(st.tuples(st.just("look"), ids, st.sampled_from(STATES), st.integers(0, 3)),
                          st.tuples(st.just("drop"), ids)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=8), st.integers(0, 8), st.integers(0, 20))
def test_snapshot_then_deltas_give_the_ledgers_rows(steps, joined_step, joined_action):
    """A reader may join at any moment, between two takes or amid the changes: it copies
    the rows then (changes not yet taken come again in the next delta) and applies every
    later delta; the summary always counts the rows."""
    ledger = Ledger()
    reader: dict[int, tuple] | None = None
    for n, actions in enumerate(steps):
        for k, action in enumerate(actions):
            if (n, k) == (joined_step, joined_action):
                reader = dict(ledger.rows)
            if action[0] == "look":
                _, tap_id, status, packets = action
                ledger.look(tap_id, row(status, packets))
            else:
                ledger.drop([action[1]])
        delta = ledger.take()
        if reader is None and n == joined_step:
            reader = dict(ledger.rows)  # joined after this step's changes, just after the take
            continue
        if reader is not None:
            apply(reader, delta)
            assert reader == ledger.rows
        counted = {}
        for r in ledger.rows.values():
            counted[r[STATUS]] = counted.get(r[STATUS], 0) + 1
        summary = ledger.summary()
        assert (summary["total"], summary["by_status"]) == (len(ledger.rows), dict(sorted(counted.items())))
