"""`vtap capture`: a policy's (or a match's) next packets, saved from the controller as
pcapng; or the list of capture jobs."""

from __future__ import annotations

import argparse
import sys
import time

from vtap.cli.rest import add_api_flags, emit, request, request_bytes, stream_bytes
from vtap.console import table

CAPTURE_FIELDS = ["src_mac", "src_ip", "dst_mac", "dst_ip", "ip_proto", "vlan_id", "src_port", "dst_port", "direction"]


def _tap_id(args: argparse.Namespace, name: str) -> int:
    """A policy's id from its name (or its id)."""
    for t in request("GET", args, "/api/v1/taps"):
        if t["name"] == name or str(t["id"]) == name:
            return t["id"]
    raise SystemExit(f"vtap: --tap {name}: no TAP policy of that name")


def cmd_capture(args: argparse.Namespace) -> int:
    """Start a capture job, follow it until it ends, and save its pcapng."""
    if args.list:
        jobs = request("GET", args, "/api/v1/captures")
        return emit(args, jobs, lambda js: print(table(
            [[j["id"], j["tap_id"] or "-", j["state"], f"{j['packets']}/{j['count']}", j["created_by"], j["reason"]] for j in js],
            ["ID", "TAP", "STATE", "PACKETS", "BY", "REASON"])))
    if not args.write:
        raise SystemExit("vtap capture: -w FILE is needed (where the pcapng goes)")
    body: dict = {"count": args.count, "duration_s": args.duration, "snaplen": args.snaplen}
    if args.tap:
        body["tap_id"] = _tap_id(args, args.tap)
    body |= {f: getattr(args, f) for f in CAPTURE_FIELDS if getattr(args, f, None) is not None}
    job = request("POST", args, "/api/v1/captures", json=body)
    print(f"capture job {job['id']}: up to {job['count']} packets or {job['duration_s']:g} s", file=sys.stderr)
    if args.write == "-":
        return _follow(args, job)
    try:
        while job["state"] not in ("done", "stopped"):
            time.sleep(0.5)
            job = request("GET", args, f"/api/v1/captures/{job['id']}")
            print(f"\r{job['state']}: {job['packets']} packets", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: saving what was captured", file=sys.stderr)
    print(file=sys.stderr)
    data = request_bytes(args, job["download"])
    with open(args.write, "wb") as f:
        f.write(data)
    if not args.keep:
        request("DELETE", args, f"/api/v1/captures/{job['id']}")
    return emit(args, {**job, "file": args.write}, lambda j: print(f"{j['packets']} packets in {args.write} ({j['reason'] or j['state']})"))


def _follow(args: argparse.Namespace, job: dict) -> int:
    """`-w -`: the job's pcapng on stdout as packets arrive (`| tshark -r -`,
    `| wireshark -k -i -`), until the job ends; Ctrl-C stops the job."""
    try:
        stream_bytes(args, f"{job['download']}?follow=true", sys.stdout.buffer)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the job", file=sys.stderr)
    except BrokenPipeError:  # the reader (tshark, head) went away
        pass
    if not args.keep:
        request("DELETE", args, f"/api/v1/captures/{job['id']}")
    return 0


def add_capture_parser(sub: argparse._SubParsersAction) -> None:
    cp_ = sub.add_parser("capture", help="capture a policy's (or a match's) next packets to a pcapng file")
    cp_.add_argument("--tap", help="the policy (name or id) whose packets to capture; else give match fields")
    for f in CAPTURE_FIELDS:
        cp_.add_argument("--" + f.replace("_", "-"), dest=f, choices=["forward", "reverse", "both"] if f == "direction" else None)
    cp_.add_argument("-c", "--count", type=int, default=100, help="stop after this many packets (1-10000; default 100)")
    cp_.add_argument("-d", "--duration", type=float, default=60, help="stop after this many seconds (at most 300; default 60)")
    cp_.add_argument("--snaplen", type=int, default=9216, help="bytes kept of each packet (64-9216)")
    cp_.add_argument("-w", "--write", help="the pcapng file to write; - for stdout as packets arrive (| tshark -r -)")
    cp_.add_argument("--keep", action="store_true", help="keep the job (and its file) on the controller afterwards")
    cp_.add_argument("--list", action="store_true", help="list capture jobs instead")
    cp_.add_argument("--json", action="store_true", help="print JSON")
    add_api_flags(cp_)
    cp_.set_defaults(func=cmd_capture)
