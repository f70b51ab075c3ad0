"""Capture jobs: compiled with the TAP rules, written as pcapng a real reader opens."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from pydantic import ValidationError

from tests.unit.fabric import Fabric, view_from_topo
from tests.unit.test_taps import ip, mac, tap, tcp
from vtap.compile.network import compile_network
from vtap.compile.pipeline import METER_CAPTURE
from vtap.control.capture import CaptureBook, CaptureLimit
from vtap.lab.topos import parse_topo
from vtap.model.capture import CaptureSpec, CaptureState, CaptureTarget
from vtap.model.policy import MatchSpec


def target(job_id: int, snaplen: int = 128, **fields) -> CaptureTarget:
    return CaptureTarget(job_id, MatchSpec(**fields), snaplen)


def test_a_capture_takes_matching_packets_once_at_entry_and_leaves_traffic_and_copies_alone():
    view = view_from_topo(parse_topo("fattree,4"))
    policy = tap(1, src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(9))
    captures = [target(1, src_ip=ip(1), ip_proto="tcp", dst_port=80), target(2, 200, src_ip=ip(1), dst_ip=ip(16))]
    desired, comp = compile_network(view, [policy], captures=captures)
    fab = Fabric(view, desired)
    h1, h9, h16 = (view.hosts[mac(i)] for i in (1, 9, 16))
    trace = fab.inject(h1.dpid, h1.port, tcp(1, 16))
    # One packet-in at the tap point (both jobs own the region: the larger snaplen), the
    # original and the policy's copy delivered as without captures.
    assert [(d, p, n) for d, p, n, _ in trace.captured] == [(h1.dpid, h1.port, 200)]
    assert sorted(trace.delivered) == sorted([(h16.dpid, h16.port), (h9.dpid, h9.port)])
    assert METER_CAPTURE in {m.meter_id for m in desired[h1.dpid].meters}
    # Only job 2 matches a UDP packet; the policy too.
    trace = fab.inject(h1.dpid, h1.port, {**tcp(1, 16), "ip_proto": 17, "udp_src": 1, "udp_dst": 2})
    assert len(trace.captured) == 1
    # Not from h1: nothing.
    h2 = view.hosts[mac(2)]
    assert fab.inject(h2.dpid, h2.port, tcp(2, 16)).captured == []
    assert comp.capture_states[1].switches == frozenset({h1.dpid})


def test_no_capture_no_rule_and_a_capture_of_an_unknown_source_is_pending():
    view = view_from_topo(parse_topo("linear,3"))
    without, _ = compile_network(view, [tap(1, src_ip=ip(1), monitor_ip=ip(2))])
    desired, comp = compile_network(view, [tap(1, src_ip=ip(1), monitor_ip=ip(2))], captures=[target(3, src_ip="10.9.9.9")])
    assert desired == without
    assert comp.capture_states[3].state == "pending" and "10.9.9.9" in comp.capture_states[3].reason


@pytest.mark.parametrize("body, field", [
    ({"count": 0, "src_ip": "10.0.0.1"}, "count"),
    ({"count": 10_001, "src_ip": "10.0.0.1"}, "count"),
    ({"duration_s": 10_000, "src_ip": "10.0.0.1"}, "duration_s"),
    ({"snaplen": 10, "src_ip": "10.0.0.1"}, "snaplen"),
    ({"src_ip": "10.0.0.300"}, "src_ip"),
    ({"dst_port": 80, "src_ip": "10.0.0.1"}, "dst_port"),
])
def test_bad_capture_requests_name_the_field(body, field):
    with pytest.raises(ValidationError) as exc:
        CaptureSpec(**body)
    assert field in str(exc.value)


def test_a_capture_names_a_policy_or_gives_a_match():
    with pytest.raises(ValidationError, match="at least one identifier"):
        CaptureSpec(count=5)
    with pytest.raises(ValidationError, match="not both"):
        CaptureSpec(tap_id=1, src_ip="10.0.0.1")
    assert CaptureSpec(tap_id=3).tap_id == 3


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark (Debian) reads the file")
def test_the_pcapng_file_opens_in_tshark_with_one_interface_per_switch(tmp_path):
    book = CaptureBook(tmp_path, max_running=1)
    spec = CaptureSpec(src_ip="10.0.0.1", count=3, snaplen=64)
    job = book.start(spec, MatchSpec(src_ip="10.0.0.1"), "alice", 1000.0)
    with pytest.raises(CaptureLimit):
        book.start(spec, MatchSpec(src_ip="10.0.0.1"), "alice", 1000.0)
    frame = bytes(range(256)) * 2  # 512 bytes
    assert not book.packet(job.id, 1, 3, frame, 512, 1000.5)
    assert not book.packet(job.id, 7, 1, frame[:100], 100, 1000.75)
    assert book.packet(job.id, 1, 3, frame, 512, 1001.0)  # the third: count reached
    book.finish(job, CaptureState.DONE, "3 packets captured", 1001.0)
    assert not book.packet(job.id, 1, 3, frame, 512, 1001.5)  # late: not written
    out = subprocess.run(["tshark", "-r", str(job.path), "-T", "json", "-x"], capture_output=True, text=True, check=True)
    packets = json.loads(out.stdout)
    assert len(packets) == 3
    frames = [p["_source"]["layers"]["frame"] for p in packets]
    assert [f["frame.len"] for f in frames] == ["512", "100", "512"]
    assert [f["frame.cap_len"] for f in frames] == ["64", "64", "64"]
    raw = [bytes.fromhex(p["_source"]["layers"]["frame_raw"][0]) for p in packets]
    assert raw[0] == frame[:64] and raw[1] == frame[:64]
    assert [f["frame.interface_id"] for f in frames] == ["0", "1", "0"]
    info = subprocess.run(["capinfos", str(job.path)], capture_output=True, text=True).stdout
    assert "src_ip=10.0.0.1" in info and "0000000000000001" in info and "0000000000000007" in info
    book.delete(job.id, 1002.0)
    assert not job.path.exists() and book.jobs == {}


def test_jobs_end_at_their_duration_and_only_the_newest_finished_are_kept(tmp_path):
    book = CaptureBook(tmp_path, max_running=2, keep=1)
    first = book.start(CaptureSpec(src_ip="10.0.0.1", duration_s=5), MatchSpec(src_ip="10.0.0.1"), "a", 100.0)
    second = book.start(CaptureSpec(src_ip="10.0.0.2", duration_s=50), MatchSpec(src_ip="10.0.0.2"), "a", 100.0)
    assert book.expired(104.9) == [] and book.expired(105.0) == [first]
    book.finish(first, CaptureState.DONE, "5 s elapsed", 105.0)
    assert book.expired(200.0) == [second]  # a finished job is not expired again
    book.finish(second, CaptureState.DONE, "50 s elapsed", 200.0)
    third = book.start(CaptureSpec(src_ip="10.0.0.3"), MatchSpec(src_ip="10.0.0.3"), "a", 201.0)
    # Two finished, one kept: the older job and its file are gone.
    assert set(book.jobs) == {second.id, third.id} and not first.path.exists() and second.path.exists()
    book.close(300.0)
    assert third.state == CaptureState.STOPPED and third.reason == "controller stopped"
