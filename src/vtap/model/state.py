"""The states a policy and a switch can be in: one vocabulary for compile, control and API.

They are `StrEnum`s, so they compare equal to, and serialise as, the plain words the
REST API has always shown.
"""

from __future__ import annotations

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
