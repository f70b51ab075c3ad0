"""Capture jobs' bookkeeping: their states, their packets, their pcapng files.

The rules that bring a job's packets to the controller are compiled with the TAP rules
(compile/taps/); this book keeps what happens to the packets once they arrive. Each
job writes its own pcapng file in the capture directory as packets come (nothing held
in memory), up to `count` packets; the file stays until the job is deleted, or until it
is the oldest of more than `keep` finished jobs.

Jobs live as long as the controller process: a restart ends them (their rules are
removed by the next reconcile, as they are no longer desired).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vtap.model.capture import CaptureSpec, CaptureState
from vtap.model.policy import MatchSpec
from vtap.store.pcapng import PcapngWriter

MAX_RUNNING = 8
KEEP_FINISHED = 32


class CaptureLimit(Exception):
    """Too many jobs at once."""


@dataclass
class CaptureJob:
    id: int
    spec: CaptureSpec
    match: MatchSpec  # the spec's own, or its policy's when it named one
    created_by: str
    created: float
    path: Path
    state: CaptureState = CaptureState.STARTING
    reason: str = ""
    packets: int = 0
    bytes: int = 0
    ended: float | None = None
    _file: BinaryIO | None = field(default=None, repr=False)
    _writer: PcapngWriter | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in (CaptureState.DONE, CaptureState.STOPPED)

    def describe(self) -> str:
        """The job's match as the pcapng section comment says it."""
        fields = ", ".join(f"{k}={v}" for k, v in self.match.match_fields().items() if v is not None)
        source = f"TAP policy {self.spec.tap_id}: " if self.spec.tap_id else ""
        return f"vtap capture job {self.id} ({source}{fields}); count {self.spec.count}, snaplen {self.spec.snaplen}"


class CaptureBook:
    def __init__(self, directory: Path, max_running: int = MAX_RUNNING, keep: int = KEEP_FINISHED):
        self.directory = Path(directory)
        self.max_running, self.keep = max_running, keep
        self.jobs: dict[int, CaptureJob] = {}
        self._next_id = 1

    def start(self, spec: CaptureSpec, match: MatchSpec, created_by: str, now: float) -> CaptureJob:
        running = sum(not j.finished for j in self.jobs.values())
        if running >= self.max_running:
            raise CaptureLimit(f"{running} capture jobs are running already (at most {self.max_running}); delete one first")
        self.directory.mkdir(parents=True, exist_ok=True)
        job = CaptureJob(self._next_id, spec, match, created_by, now, self.directory / f"capture-{self._next_id}.pcapng")
        self._next_id += 1
        job._file = open(job.path, "wb")  # noqa: SIM115 - open until the job ends
        job._writer = PcapngWriter(job._file, comment=job.describe(), snaplen=spec.snaplen)
        self.jobs[job.id] = job
        self._forget_old()
        return job

    def packet(self, job_id: int, dpid: int, in_port: int, data: bytes, total_len: int, now: float) -> bool:
        """Write one packet of the job; True when that was its last (count reached)."""
        job = self.jobs.get(job_id)
        if job is None or job.finished or job._writer is None:
            return False  # arrived after the job ended, before its rules went
        cut = data[: job.spec.snaplen]
        job._writer.packet(dpid, now, cut, max(total_len, len(data)), comment=f"in_port={in_port}")
        job.packets += 1
        job.bytes += len(cut)
        return job.packets >= job.spec.count

    def expired(self, now: float) -> list[CaptureJob]:
        return [j for j in self.jobs.values() if not j.finished and now - j.created >= j.spec.duration_s]

    def finish(self, job: CaptureJob, state: CaptureState, reason: str, now: float) -> None:
        if job.finished:
            return
        job.state, job.reason, job.ended = state, reason, now
        if job._file is not None:
            job._file.close()
        job._file = job._writer = None

    def delete(self, job_id: int, now: float) -> CaptureJob | None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            self.finish(job, CaptureState.STOPPED, "deleted", now)
            job.path.unlink(missing_ok=True)
        return job

    def close(self, now: float) -> None:
        for job in self.jobs.values():
            self.finish(job, CaptureState.STOPPED, "controller stopped", now)

    def _forget_old(self) -> None:
        finished = sorted((j for j in self.jobs.values() if j.finished), key=lambda j: j.id)
        for job in finished[: max(0, len(finished) - self.keep)]:
            del self.jobs[job.id]
            job.path.unlink(missing_ok=True)
