"""The states a policy and a switch can be in: one vocabulary for compile, control and API.

They are `StrEnum`s, so they compare equal to, and serialise as, the plain words the
REST API has always shown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class PolicyState(StrEnum):
    """Where a TAP policy stands.

    The compiler decides `pending` (something it names is not yet seen), `compiled`
    (rules computed), `degraded` (some tap point cannot reach the monitor), `error` and
    `disabled`; the controller turns `compiled` into `active` once every switch
    concerned has confirmed the rules by barrier, and into `pending` while they are
    being installed.
    """

    PENDING = "pending"
    COMPILED = "compiled"
    ACTIVE = "active"
    DEGRADED = "degraded"
    ERROR = "error"
    DISABLED = "disabled"


class SyncState(StrEnum):
    """Where a switch's installed rules stand against its desired rules."""

    SYNCING = "syncing"
    IN_SYNC = "in_sync"
    ERROR = "error"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class PolicyStatus:
    """Where one policy stands, and the switches it concerns.

    The compiler makes one per policy (`compiled`, `pending`, `degraded`, `error`,
    `disabled`); the controller's core makes another from it for the API, `active` once
    every switch concerned has confirmed the rules by barrier. One record for both, so
    that the API shows exactly what the compiler decided until the switches speak.
    """

    state: PolicyState
    reason: str = ""
    switches: frozenset[int] = frozenset()


@dataclass
class SwitchSync:
    """One switch's reconciler, as it goes: where its rules stand, and its counters.

    The reconciler keeps it up to date; the core reads `state`, `synced_generation` and
    `last_error` to decide whether a policy is `active` on that switch.
    """

    state: SyncState = SyncState.SYNCING
    synced_generation: int = -1  # the compile generation last confirmed by barrier
    last_error: str | None = None
    last_sync: float | None = None
    batches: int = 0
    rules_sent: int = 0
    seconds: float = 0.0  # spent in reconcile passes (read-back, diff, send, barrier)


class SwitchSyncs(dict[int, SwitchSync]):
    """Each switch's sync at one moment (copies: a judgement made while the switches go
    on stays the one of that moment), and the judgements already made against it.

    Policies compiled alike share one `PolicyStatus` (compile/taps/points.py), and after a
    compile they share one generation: at 10,000 policies, judging each alone against
    the switches took 0.3 s of the loop for one count of the states; judged once per
    (generation, compiled status), a count is a dictionary look-up per policy.
    """

    def __init__(self, syncs: dict[int, SwitchSync]) -> None:
        super().__init__({dpid: replace(sync) for dpid, sync in syncs.items()})
        self.judged: dict[tuple[int, PolicyStatus], PolicyStatus] = {}
