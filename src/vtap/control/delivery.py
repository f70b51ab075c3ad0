"""Delivery accounting: do the copies sent toward a monitor reach it?

Two kinds of group counters tell (compile/taps/): each tap group's bucket toward a
monitor counts the copies *sent* toward it at a tap point, and the monitor's delivery
group (fast failover, its one bucket watching the monitor's port) counts the copies
*delivered*, handed to a live port at its edge switch. Copies lost on the way (a link
down in the copy path, a monitor port down, a rule missing) show as the difference.

Budgeted copies (compile/budget.py) are counted sent at their send group, one per
policy, tap switch and monitor, after sampling and pool choice; a rate-limited one's
meter drops copies after that count (a switch credits a datapath flow's packets to
every rule and group it went through, dropped or not), so its meter's dropped packets
are taken off (and off what a monitor on the tap switch was delivered, its delivery group
being in the same datapath flow); a cut copy for a monitor on the tap switch is delivered
by its cut delivery group.

Counting is per monitor, not per policy: once copied, a copy does not say which policy
made it (a packet matched by two policies with one monitor is copied once), so the
switch can only tell per monitor. A policy's stats show its own tap-point counters and
its monitor's delivery; with one policy per monitor the two are the policy's.

Switches do not count in real time: OVS credits a rule's or group's counters when its
revalidators read the datapath's flows (every half second or so, per flow), so the
monitor's counter may lag the tap switches' by up to about a second. A copy is
therefore given `lag` seconds to be counted: copies sent up to `lag` seconds ago are
compared with copies delivered up to now.

The judgement, per monitor, from samples taken every poll (about a second):
- *failing* when, of the copies sent over the last `window` seconds (but `lag`), more
  than `tolerance` and more than `fraction` did not arrive;
- *recovered* when copies were sent over the last `recover` seconds (but `lag`) and
  no more than that was lost. Loss before a recovery does not count again. A monitor
  whose copies stopped altogether stays failing: nothing shows that it receives again.

At the tool, when a sensor reports (`vtap sensor` beside the tool, counting the copies
that reached the tool's interface): a monitor is also *failing* when, over the last
`tool_window` seconds, the copies delivered to its port exceed those the tool received
by more than the slack — `tolerance`, `fraction` of them, and `tool_slack` seconds of
copies at the window's peak rate (the port's counter is credited up to about a second
after the tool's sensor counted the same copy, and its report is up to half a second
old) — "lost between the port and the tool"; it recovers once that loss has left the
window. A sensor silent for `tool_stale` seconds is not judged on.

Pure: the controller feeds it counters and the time; it never reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 10.0
RECOVER_S = 3.0
LAG_S = 1.5  # how late a switch may credit its counters
TOLERANCE = 5  # copies
FRACTION = 0.01
TOOL_WINDOW_S = 20.0
TOOL_SLACK_S = 1.0
TOOL_STALE_S = 5.0


@dataclass
class MonitorDelivery:
    """Totals since this controller started counting (they never go down), and the verdict."""

    sent_packets: int = 0
    sent_bytes: int = 0
    delivered_packets: int = 0
    delivered_bytes: int = 0
    failing: bool = False  # at the port or at the tool
    reason: str = ""
    samples: deque = field(default_factory=deque)  # (time, sent_packets, delivered_packets)
    recovered_at: float = float("-inf")
    port_failing: bool = False
    port_reason: str = ""
    # At the tool (a sensor's reports): totals since the sensor started, and when it last said.
    received_packets: int | None = None
    received_bytes: int = 0
    reported_at: float = float("-inf")
    tool_samples: deque = field(default_factory=deque)  # (time, delivered_packets, received_packets)
    tool_failing: bool = False
    tool_reason: str = ""

    @property
    def undelivered_packets(self) -> int:
        return max(0, self.sent_packets - self.delivered_packets)


@dataclass(frozen=True)
class GroupCounters:
    """One group's counters as a switch reported them: per bucket (packets, bytes)."""

    group_id: int
    buckets: tuple[tuple[int, int], ...]


class DeliveryLedger:
    def __init__(self, window: float = WINDOW_S, recover: float = RECOVER_S, lag: float = LAG_S, tolerance: int = TOLERANCE,
                 fraction: float = FRACTION):
        self.window, self.recover, self.lag, self.tolerance, self.fraction = window, recover, lag, tolerance, fraction
        self.monitors: dict[str, MonitorDelivery] = {}
        self._last: dict[tuple, tuple[int, int]] = {}  # counter key -> last (packets, bytes) read

    def _delta(self, key: tuple, packets: int, bytes_: int) -> tuple[int, int]:
        """What a counter gained since it was last read; a counter that went down was
        re-created (a group rewritten or deleted and added): all it holds is new."""
        last = self._last.get(key)
        self._last[key] = (packets, bytes_)
        if last is None or packets < last[0] or bytes_ < last[1]:
            return packets, bytes_
        return packets - last[0], bytes_ - last[1]

    def observe(self, now: float, counters: dict[int, list[GroupCounters]],
                sent_buckets: dict[tuple[int, int], tuple[str | None, ...]],
                deliveries: dict[str, tuple[int, int]], labels: dict[str, str],
                cut_deliveries: dict[tuple[int, int], str] | None = None,
                meter_drops: dict[tuple[int, int], tuple[int, str, int, int]] | None = None) -> list[str]:
        """Add one poll of every switch's group counters; the monitors whose verdict changed.

        `sent_buckets`: (dpid, tap or send group) -> the monitor each bucket copies to
        (None: not counted there); `deliveries`: monitor -> (dpid, delivery group);
        `cut_deliveries`: (dpid, cut delivery group) -> monitor; `meter_drops`: (dpid,
        meter) -> (policy, monitor, packets and bytes the meter dropped); `labels`: monitor -> how a reason
        names it (its IP where known)."""
        delivery_of = {(dpid, gid): mac for mac, (dpid, gid) in deliveries.items()}
        delivery_of.update(cut_deliveries or {})
        for mac in deliveries:
            self.monitors.setdefault(mac, MonitorDelivery())
        for dpid, groups in counters.items():
            for g in groups:
                sent_to = sent_buckets.get((dpid, g.group_id))
                if sent_to is not None:
                    for i, (packets, bytes_) in enumerate(g.buckets[: len(sent_to)]):
                        if sent_to[i] is None:
                            continue
                        dp, db = self._delta((dpid, g.group_id, i, sent_to[i]), packets, bytes_)
                        m = self.monitors.setdefault(sent_to[i], MonitorDelivery())
                        m.sent_packets += dp
                        m.sent_bytes += db
                mac = delivery_of.get((dpid, g.group_id))
                if mac is not None and g.buckets:
                    dp, db = self._delta((dpid, g.group_id, 0, mac), *g.buckets[0])
                    m = self.monitors.setdefault(mac, MonitorDelivery())
                    m.delivered_packets += dp
                    m.delivered_bytes += db
        for (dpid, meter), (_, mac, packets, bytes_) in (meter_drops or {}).items():
            if dpid in counters:  # read in the same poll as the send groups' counters
                dp, db = self._delta((dpid, "meter", meter, mac), packets, bytes_)
                m = self.monitors.setdefault(mac, MonitorDelivery())
                m.sent_packets -= dp
                m.sent_bytes -= db
                if deliveries.get(mac, (None,))[0] == dpid:  # a monitor on the tap switch: its delivery
                    m.delivered_packets -= dp  # group was in the dropped copies' datapath flow too
                    m.delivered_bytes -= db
        changed = []
        for mac, m in self.monitors.items():
            m.samples.append((now, m.sent_packets, m.delivered_packets))
            while len(m.samples) > 2 and m.samples[1][0] <= now - self.window - self.lag:
                m.samples.popleft()
            if self._judge(mac, m, now, labels.get(mac, mac)):
                changed.append(mac)
        return changed

    def _lost_since(self, m: MonitorDelivery, start: float, now: float) -> tuple[int, int]:
        """(not delivered, sent): copies sent from `start` until `lag` seconds ago, against
        copies delivered from `start` until now (from the last sample at or before each)."""
        first = next((s for s in reversed(m.samples) if s[0] <= start), m.samples[0])
        sent_by = next((s for s in reversed(m.samples) if s[0] <= now - self.lag), first)
        if sent_by[0] <= first[0]:
            return 0, 0
        sent = sent_by[1] - first[1]
        return max(0, sent - (m.samples[-1][2] - first[2])), sent

    def _lossy(self, lost: int, sent: int) -> bool:
        return lost > self.tolerance and lost > self.fraction * sent

    def _judge(self, mac: str, m: MonitorDelivery, now: float, label: str) -> bool:
        was = m.failing
        lost, sent = self._lost_since(m, max(now - self.window, m.recovered_at), now)
        if not m.port_failing:
            m.port_failing = self._lossy(lost, sent)
        else:
            recent_lost, recent_sent = self._lost_since(m, now - self.recover - self.lag, now)
            if recent_sent > 0 and not self._lossy(recent_lost, recent_sent):  # copies flow and arrive again
                m.port_failing = False
                m.recovered_at = now
        m.port_reason = f"{lost} of {sent} copies in the last {self.window:g} s did not reach {label}" if m.port_failing else ""
        self._judge_tool(m, now)
        m.failing = m.port_failing or m.tool_failing
        m.reason = m.port_reason or m.tool_reason
        return m.failing != was

    def report(self, mac: str, received_packets: int, received_bytes: int, now: float) -> None:
        """A sensor's totals for monitor `mac`: copies that reached the tool since it started."""
        m = self.monitors.setdefault(mac, MonitorDelivery())
        if m.received_packets is not None and received_packets < m.received_packets:
            m.tool_samples.clear()  # the sensor restarted: its totals begin again
        m.received_packets, m.received_bytes, m.reported_at = received_packets, received_bytes, now

    def _judge_tool(self, m: MonitorDelivery, now: float) -> None:
        if m.received_packets is None or now - m.reported_at > TOOL_STALE_S:
            m.tool_samples.clear()
            m.tool_failing, m.tool_reason = False, ""
            return
        s = m.tool_samples
        s.append((now, m.delivered_packets, m.received_packets))
        while len(s) > 2 and s[1][0] <= now - TOOL_WINDOW_S:
            s.popleft()
        first, last = s[0], s[-1]
        delivered, received = last[1] - first[1], last[2] - first[2]
        peak = max(((b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(s, list(s)[1:]) if b[0] > a[0]), default=0.0)
        lost = delivered - received
        m.tool_failing = lost > max(self.tolerance, self.fraction * delivered, peak * TOOL_SLACK_S)
        m.tool_reason = (f"{lost} of {delivered} copies delivered to the port in the last {TOOL_WINDOW_S:g} s did not "
                         "reach the tool: lost between the port and the tool") if m.tool_failing else ""

    def forget(self, keep: set[str]) -> None:
        """Drop monitors no policy names any more."""
        for mac in [m for m in self.monitors if m not in keep]:
            del self.monitors[mac]
        self._last = {k: v for k, v in self._last.items() if k[3] in keep}
