"""How long a change waits before it is compiled: a lone change at once, a burst (thousands
of policies posted one by one) coalesced into a few large compiles. Pure, apart from the
controller that keeps the times (`Controller.changed`).

The wait of a burst grows with the last compile's duration, so that a stream of changes
is compiled in a few large batches rather than once per change. A change is a lone one
when the last compile took in a single change (a client waiting for each change to apply
before the next) or after a quiet spell: no change for the last compile's time,
`QUIET_S` at most. The spell was once the time since that compile ended, as long as the
compile itself: one update among 100,000 policies, seconds after a whole compile of
22 s, waited the 2 s of a burst. A burst shows itself within one compile (it takes in
several changes) and is coalesced again."""

from __future__ import annotations

QUIET_S = 0.5  # no change for this long: the next is a lone one, however long the last compile took
COALESCE_MAX_S = 2.0  # the longest a change waits for others of its burst


def recompile_delay(debounce: float, last_compile_s: float, last_batch: int, since_last_change: float) -> float:
    """How long a change waits before it is compiled (see `Controller.changed`): the short
    debounce for a lone change, else as long as the last compile took (at most
    `COALESCE_MAX_S`), so that a burst is compiled in a few large batches."""
    lone = last_batch <= 1 or since_last_change > min(last_compile_s, QUIET_S)
    return debounce if lone else min(max(debounce, last_compile_s), COALESCE_MAX_S)
