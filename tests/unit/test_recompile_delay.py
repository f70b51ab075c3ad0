"""How long a change waits before it is compiled: lone changes at once, bursts coalesced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vtap.control.coalescing import COALESCE_MAX_S, QUIET_S, recompile_delay

DEBOUNCE = 0.001


def test_a_lone_change_is_compiled_at_once_however_long_the_last_compile_took():
    # One update among 100,000 policies, seconds after a whole compile of 22 s that took in 84 changes.
    assert recompile_delay(DEBOUNCE, 22.0, 84, since_last_change=5.0) == DEBOUNCE
    # A client that waits for each change: the last compile took in one.
    assert recompile_delay(DEBOUNCE, 22.0, 1, since_last_change=0.01) == DEBOUNCE


def test_a_burst_is_coalesced_for_as_long_as_the_last_compile_took_at_most_two_seconds():
    assert recompile_delay(DEBOUNCE, 0.3, 50, since_last_change=0.01) == 0.3
    assert recompile_delay(DEBOUNCE, 22.0, 84, since_last_change=0.01) == COALESCE_MAX_S


@given(st.floats(0, 60), st.integers(0, 10_000), st.floats(0, 60))
def test_no_change_waits_longer_than_the_cap_nor_a_quiet_one_at_all(last_compile_s, last_batch, since):
    delay = recompile_delay(DEBOUNCE, last_compile_s, last_batch, since)
    assert DEBOUNCE <= delay <= COALESCE_MAX_S
    if since > QUIET_S or last_batch <= 1:
        assert delay == DEBOUNCE
