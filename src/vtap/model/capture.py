"""Capture jobs: "the next N packets of this flow", brought to the controller and saved.

A job names a TAP policy (`tap_id`: its match is copied when the job starts) or gives
match fields inline, with the same names and validation as a policy. It ends when it
has `count` packets, after `duration_s`, or when deleted; every rule it needed goes
with it. Packets are cut to `snaplen` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field, model_validator

from vtap.model.policy import MatchSpec

MAX_COUNT = 10_000
MAX_DURATION_S = 300
MIN_SNAPLEN, MAX_SNAPLEN = 64, 9216


class CaptureSpec(MatchSpec):
    """A capture job as the operator asks for it (REST body, CLI flags)."""

    tap_id: int | None = Field(None, ge=1, description="capture what this TAP policy matches (then give no match fields)")
    count: int = Field(100, ge=1, le=MAX_COUNT, description="stop after this many packets")
    duration_s: float = Field(60, gt=0, le=MAX_DURATION_S, description="stop after this many seconds")
    snaplen: int = Field(MAX_SNAPLEN, ge=MIN_SNAPLEN, le=MAX_SNAPLEN, description="bytes kept of each packet")

    def needs_identifiers(self) -> bool:
        return self.tap_id is None

    @model_validator(mode="after")
    def _tap_or_match(self) -> CaptureSpec:
        given = [name for name, value in self.match_fields().items() if value is not None and name != "direction"]
        if self.tap_id is not None and given:
            raise ValueError(f"give tap_id or match fields, not both (also given: {', '.join(given)})")
        return self


class CaptureState(StrEnum):
    STARTING = "starting"  # rules on their way to the switches
    RUNNING = "running"  # every switch concerned has them
    PENDING = "pending"  # the source host is not known yet: no tap point
    DONE = "done"  # count or duration reached
    STOPPED = "stopped"  # ended by the operator, or its policy went


@dataclass(frozen=True)
class CaptureTarget:
    """What the compiler needs of a running job: which packets, and how much of each."""

    id: int
    match: MatchSpec
    snaplen: int
