"""Who holds what: this instance's role in a cluster, and which connection holds a
datapath id.

Part of `Controller` (a mixin of its methods, on its state): a cluster's leadership
(elected through `control/cluster.py`, fenced at the switches by OpenFlow roles and
the generation), what the leader publishes and a follower reads, and the two checks
a connection passes before it may stand for a switch: the certificate pinned for its
datapath id, and the contest with a connection that already holds it."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING

from vtap.model.capture import CaptureState
from vtap.model.state import PolicyState, PolicyStatus
from vtap.openflow.channel import ChannelClosed, Datapath, OpenFlowError, echo_request
from vtap.openflow.translate import ofp

if TYPE_CHECKING:
    from vtap.store.etcd import KeyChange

log = logging.getLogger(__name__)

ECHO_CONTEST_S = 2.0  # how long a connected switch has to answer when another claims its dpid
LINK_GRACE_S = 10.0  # how long stored or published links stand in for LLDP (a restart, a new leader)


class Claims:
    """The controller's claims and contests (see the module docstring)."""

    @property
    def leading(self) -> bool:
        """Whether this instance drives the switches (always, without a cluster)."""
        return self.cluster is None or self.cluster.leading

    def may_write(self) -> bool:
        return self.cluster is None or self.cluster.may_write()

    def role_changed(self, leading: bool, generation: int, why: str) -> None:
        """The cluster elected this instance, or another (`generation` is the leader's)."""
        if leading:
            # The published links are the view until LLDP proves them again.
            self.core.links_published(self.core.links.links(), time.monotonic() + LINK_GRACE_S)
            # Switches that connected while another instance led, or before any did, and
            # have no pin yet: pinned now, with the certificate they connected with.
            for dp in self.datapaths.values():
                if dp.certificate is not None and self.store.pin_of(dp.dpid) is None:
                    self.store.save_pin(dp.dpid, dp.certificate)
            self.changed()
        else:
            for rec in self.reconcilers.values():
                asyncio.ensure_future(rec.stop())
            self.reconcilers.clear()
            now = time.time()
            for job in [j for j in self.captures.jobs.values() if not j.finished]:
                self.captures.finish(job, CaptureState.DONE, f"stopped: this instance no longer leads ({why})", now)
                self._end_capture(job.id)
        for dp in list(self.datapaths.values()):
            asyncio.ensure_future(self._take_role(dp))

    async def _take_role(self, dp: Datapath) -> None:
        """MASTER under this instance's generation when it leads, then its reconciler
        starts; SLAVE under the leader's otherwise. A refusal (stale generation) is logged."""
        cluster = self.cluster
        leading, generation = cluster.leading, cluster.generation if cluster.leading else (cluster.store.leader or ("", 0))[1]
        role = ofp.OFPCR_ROLE_MASTER if leading else ofp.OFPCR_ROLE_SLAVE
        try:
            await dp.role_request(role, generation)
        except OpenFlowError as exc:
            self.roles[dp.dpid] = "refused"
            log.error("%r refused role %s under generation %d: %s", dp, "master" if leading else "slave", generation, exc)
            if leading and exc.msg.type == ofp.OFPET_ROLE_REQUEST_FAILED and exc.msg.code == ofp.OFPRRFC_STALE:
                cluster.step_down(f"{dp!r} knows a newer generation than {generation}")
            return
        except (ChannelClosed, asyncio.TimeoutError):
            return
        if self.datapaths.get(dp.dpid) is not dp or cluster.leading != leading:
            return  # gone, or the role changed again meanwhile (that change asks again)
        self.roles[dp.dpid] = "master" if leading else "slave"
        if leading and dp.dpid not in self.reconcilers:
            self._start_reconciler(dp, settle=False)
            self._send_lldp(dp)
            self.changed()
        elif leading:
            # Its reconciler may be backing off after refusals while this instance did not
            # lead (up to 30 s): master now, it re-reads the switch at once.
            self.reconcilers[dp.dpid].kick()

    def _refused(self, why: str) -> None:
        """A switch refused a write as from a slave: another instance leads (the switch
        has seen its newer generation), so this one steps down at once."""
        if self.cluster is not None and self.cluster.leading:
            self.cluster.step_down(why)

    def store_changed(self, change: KeyChange) -> None:
        """A key of the (etcd) store changed: another instance's write, or the leader's publication."""
        if change.kind == "tap":
            tap_id = int(change.name)
            if change.value is None:
                if tap_id in self.core.taps:
                    self.core.remove_tap(tap_id)
                    self.changed(view=False)
            elif self.core.taps.get(tap_id) != change.value:
                self.core.set_tap(change.value)
                self.changed(view=False)
        elif change.kind == "leader":
            self.cluster.leader_changed(change.value)
            self.view_version += 1
        elif change.kind == "member":
            self.view_version += 1
        elif self.leading:
            return  # hosts and links: this instance published them
        elif change.kind == "host":
            if change.value is None:
                self.core.hosts.hosts.pop(change.name, None)
            else:
                self.core.host_published(change.value)
            self.changed()
        elif change.kind == "links":
            self.core.links_published(change.value, math.inf)
            self.changed()

    async def _status_loop(self) -> None:
        """The leader publishes the policies' states (with the revision of the version
        they are about) whenever they change, for the followers' API: looked at after
        every compile, every switch confirmed in sync and every delivery check, and
        once a second."""
        last: dict = {}
        while True:
            try:
                await asyncio.wait_for(self._status_due.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(0.002)  # switches confirming one compile together: one look
            self._status_due.clear()
            if not self.leading:
                last = {}
                continue
            status = {}
            for tap_id in self.core.taps:
                st = self.tap_status(tap_id)
                status[str(tap_id)] = [self.store.tap_revision(tap_id), st.state.value, st.reason]
            if status != last:
                self.store.publish_status(status)
                last = status

    def _follower_status(self, tap_id: int) -> PolicyStatus:
        compiled = self.core.compilation.states.get(tap_id)
        switches = compiled.switches if compiled else frozenset()
        if self.cluster.store.leader is None:
            return PolicyStatus(PolicyState.PENDING, "no leader: waiting for one to be elected", switches)
        entry = self.cluster.store.status.get(str(tap_id))
        if entry is None or entry[0] != self.store.tap_revision(tap_id):
            return PolicyStatus(PolicyState.PENDING, "waiting for the leader to apply this version", switches)
        return PolicyStatus(PolicyState(entry[1]), entry[2], switches)


    def _certificate_holds(self, dp: Datapath) -> bool:
        """Over TLS, a datapath id is bound to the certificate it first connected with.

        One ovs-vswitchd holds one TLS configuration for all its bridges (`ovs-vsctl
        set-ssl`), so a certificate cannot name each bridge's dpid: instead the first
        certificate a dpid connects with is pinned (trust on first use, kept in the
        store), and a connection claiming that dpid with any other certificate is
        refused, even while the real switch is away. Only an admin unpins it
        (`DELETE /api/v1/devices/{dpid}/certificate`)."""
        if dp.certificate is None:
            return True
        pinned = self.store.pin_of(dp.dpid)
        if pinned is None:
            if self.leading:  # a cluster's leader pins for all (followers read the pins it publishes)
                self.store.save_pin(dp.dpid, dp.certificate)
                log.info("%r: certificate sha256:%s pinned", dp, dp.certificate)
            return True
        if pinned == dp.certificate:
            return True
        self.refused_connections += 1
        log.warning("refused %r from %s: its certificate sha256:%s is not the one pinned for this datapath id "
                    "(sha256:%s); if the switch really changed, an admin unpins it: DELETE /api/v1/devices/%016x/certificate",
                    dp, dp.peer, dp.certificate, pinned, dp.dpid)
        dp.writer.close()
        return False

    async def _contest(self, old: Datapath, new: Datapath) -> None:
        """Refuse `new` while `old` answers an echo (an error reply is an answer too);
        replace `old` only when it is dead. If `old` ended while the echo was out, the
        datapath id is free: `new`, if still open, takes it."""
        try:
            await old.request(echo_request(), timeout=ECHO_CONTEST_S)
            alive = True
        except OpenFlowError:
            alive = True
        except (ChannelClosed, asyncio.TimeoutError):
            alive = False
        holder = self.datapaths.get(old.dpid)
        if not new.closed.is_set() and (holder is None or (holder is old and not alive)):
            if holder is old:
                log.warning("%r connected again from %s; its previous connection is dead, replacing it", new, new.peer)
                old.writer.close()
                self._forget_switch(old)
            else:
                log.warning("%r connected again from %s; its previous connection ended meanwhile", new, new.peer)
            self._adopt(new)
            return
        self.refused_connections += 1
        log.warning("refused a second connection claiming %r from %s: %s", new, new.peer,
                    "it closed" if new.closed.is_set() else "the connected switch answers")
        new.writer.close()
