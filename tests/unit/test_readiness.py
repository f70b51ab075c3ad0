"""Health's readiness: why an instance should not be sent work, said plainly, and not
flapping with every policy change."""

from __future__ import annotations

from types import SimpleNamespace

from vtap.control.controller import Controller
from vtap.model.network import Device, Port
from vtap.model.state import SwitchSync, SyncState
from vtap.store.sqlite import Store


def test_readiness_names_what_is_missing_and_not_a_switch_taking_a_change(tmp_path):
    ctl = Controller(Store(tmp_path))
    assert ctl.not_ready() == []  # nothing to wait for
    ctl.core.switch_up(Device(1, (Port(1, "s1-eth1", "00:00:00:00:01:01", True),), 0.0), 0.0)
    assert ctl.not_ready() == ["switch 0000000000000001 has not been in sync since it connected"]
    sync = SwitchSync()
    ctl.reconcilers[1] = SimpleNamespace(status=sync)
    assert ctl.not_ready() == ["switch 0000000000000001 has not been in sync since it connected"]
    sync.state, sync.last_sync = SyncState.IN_SYNC, 1.0
    assert ctl.not_ready() == []
    sync.state = SyncState.SYNCING  # the next policy change: still ready
    assert ctl.not_ready() == []
    sync.state, sync.last_error = SyncState.ERROR, "bundle refused"
    assert ctl.not_ready() == ["switch 0000000000000001: bundle refused"]
    sync.state = SyncState.IN_SYNC
    ctl.store.reachable, ctl.store.last_error = False, "etcd unreachable at 10.1.0.1:2379"
    assert ctl.not_ready() == ["the store does not answer: etcd unreachable at 10.1.0.1:2379"]
