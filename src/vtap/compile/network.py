"""The whole desired state: base forwarding plus TAP rules, per switch."""

from __future__ import annotations

from vtap.compile.forwarding import compile_forwarding, packet_in_meter
from vtap.compile.pipeline import CAPTURE_BURST, CAPTURE_RATE_PPS, METER_CAPTURE
from vtap.compile.taps import TapCompilation, TapMemo, compile_taps
from vtap.model.capture import CaptureTarget
from vtap.model.policy import Tap
from vtap.model.rules import Meter, SwitchRules
from vtap.model.view import NetworkView


def compile_network(view: NetworkView, taps: list[Tap], packet_in_rate: int = 0,
                    captures: list[CaptureTarget] = (), memo: TapMemo | None = None) -> tuple[dict[int, SwitchRules], TapCompilation]:
    memo = memo or TapMemo()
    forwarding = memo.get(("forwarding", memo.token(view), packet_in_rate), lambda: compile_forwarding(view, packet_in_rate))
    meter = packet_in_meter(packet_in_rate)
    meters = frozenset([meter] if meter else []) | {Meter(METER_CAPTURE, CAPTURE_RATE_PPS, CAPTURE_BURST)}
    comp = compile_taps(view, taps, captures, memo)
    desired = {}
    for dpid, base in forwarding.items():
        tap_rules = comp.rules.get(dpid, SwitchRules())
        desired[dpid] = SwitchRules(base.flows | tap_rules.flows, base.groups | tap_rules.groups, meters | tap_rules.meters)
    return desired, comp
