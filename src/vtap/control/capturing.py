"""Capture jobs, as the controller runs them: started and stopped through the API, their
packets arriving as packet-ins (the book of jobs is `control/capture.py`).

Part of `Controller` (a mixin of its methods, on its state)."""

from __future__ import annotations

import logging
import time

from vtap.control.capture import CaptureJob
from vtap.model.capture import CaptureSpec, CaptureState, CaptureTarget
from vtap.model.policy import MatchSpec
from vtap.model.state import PolicyState

log = logging.getLogger(__name__)


class CaptureJobs:
    """The controller's capture jobs (see the module docstring)."""

    def start_capture(self, spec: CaptureSpec, created_by: str) -> CaptureJob:
        """Start a job (CaptureLimit when too many run; KeyError for an unknown tap_id)."""
        if spec.tap_id is not None:
            match = MatchSpec(**self.core.taps[spec.tap_id].spec.match_fields())
        else:
            match = MatchSpec(**spec.match_fields())
        job = self.captures.start(spec, match, created_by, time.time())
        self.core.set_capture(CaptureTarget(job.id, match, spec.snaplen))
        log.info("capture job %d started by %s: %s", job.id, created_by, job.describe())
        self.changed(view=False)
        return job

    def capture_status(self, job: CaptureJob) -> tuple[CaptureState, str]:
        if job.finished:
            return job.state, job.reason
        st = self.core.capture_status(job.id, self.switch_syncs())
        if st.state == PolicyState.ACTIVE:
            return CaptureState.RUNNING, ""
        compiled = self.core.compilation.capture_states.get(job.id)
        if st.state == PolicyState.PENDING and (compiled is None or compiled.state == PolicyState.COMPILED):
            return CaptureState.STARTING, st.reason  # being compiled, or its rules on their way
        return CaptureState.PENDING, st.reason

    def delete_capture(self, job_id: int) -> bool:
        job = self.captures.delete(job_id, time.time())
        if job is None:
            return False
        self._end_capture(job_id)
        return True

    def _captured(self, dpid: int, in_port: int, data: bytes, total_len: int, cookie: int) -> None:
        now = time.time()
        for job_id in self.core.capture_jobs(cookie):
            if self.captures.packet(job_id, dpid, in_port, data, total_len, now):
                job = self.captures.jobs[job_id]
                self.captures.finish(job, CaptureState.DONE, f"{job.spec.count} packets captured", now)
                self._end_capture(job_id)

    def _end_capture(self, job_id: int) -> None:
        """The job's rules go with the next compile."""
        if job_id in self.core.captures:
            self.core.remove_capture(job_id)
            log.info("capture job %d ended", job_id)
            self.changed(view=False)

    def _captures_due(self) -> None:
        """A quarter of a second's duty: the jobs whose time is up end."""
        now = time.time()
        for job in self.captures.expired(now):
            self.captures.finish(job, CaptureState.DONE, f"{job.spec.duration_s:g} s elapsed", now)
            self._end_capture(job.id)
