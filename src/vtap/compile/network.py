"""The whole desired state: base forwarding plus TAP rules, per switch."""

from __future__ import annotations

from collections.abc import Mapping

from vtap.compile.forwarding import compile_forwarding, packet_in_meter
from vtap.compile.pipeline import (
    CAPTURE_BURST,
    CAPTURE_RATE_PPS,
    LLDP_BURST,
    LLDP_RATE_PPS,
    METER_CAPTURE,
    METER_LLDP,
    METER_LLDP_UNKNOWN,
)
from vtap.compile.taps import TapCompilation, TapMemo, compile_taps, in_place_candidate
from vtap.model.capture import CaptureTarget
from vtap.model.policy import Tap
from vtap.model.rules import Meter, SwitchRules
from vtap.model.view import NetworkView


def compile_network(view: NetworkView, taps: list[Tap] | Mapping[int, Tap], packet_in_rate: int = 0,
                    captures: list[CaptureTarget] = (), memo: TapMemo | None = None,
                    changed: set[int] | None = None, *,
                    whole: bool = True) -> tuple[dict[int, SwitchRules], TapCompilation] | None:
    """Every switch's desired rules and the policies' compilation. With `whole=False`,
    only if the last compile (in `memo`) can be changed in place, else None: the caller
    runs the whole compile where it will (the controller: off its event loop)."""
    memo = memo or TapMemo()
    if not whole and not in_place_candidate(view, captures, memo):
        return None
    forwarding = memo.get(("forwarding", memo.token(view), packet_in_rate), lambda: compile_forwarding(view, packet_in_rate))
    meter = packet_in_meter(packet_in_rate)
    meters = frozenset([meter] if meter else []) | {Meter(METER_CAPTURE, CAPTURE_RATE_PPS, CAPTURE_BURST),
                                                    Meter(METER_LLDP, LLDP_RATE_PPS, LLDP_BURST),
                                                    Meter(METER_LLDP_UNKNOWN, LLDP_RATE_PPS, LLDP_BURST)}
    comp = compile_taps(view, taps, captures, memo, changed, whole=whole)
    if comp is None:
        return None
    desired = {}
    last = memo.desired
    memo.desired = {}
    for dpid, base in forwarding.items():
        tap_rules = comp.rules.get(dpid, SwitchRules())
        before = last.get(dpid)
        if before is not None and before[0] is base and before[1] is tap_rules and before[2] == meters:
            desired[dpid] = before[3]  # the same object: the switch's reconciler sees at once that nothing changed
        else:
            desired[dpid] = SwitchRules(base.flows | tap_rules.flows, base.groups | tap_rules.groups, meters | tap_rules.meters)
        memo.desired[dpid] = (base, tap_rules, meters, desired[dpid])
    return desired, comp
