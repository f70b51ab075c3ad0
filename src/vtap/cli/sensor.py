"""`vtap sensor`: count the copies reaching a tool's interface and report them (`vtap.sensor`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vtap.cli.rest import add_api_flags, request


class _Client:
    def __init__(self, args: argparse.Namespace):
        self.args = args

    def get(self, path: str):
        return request("GET", self.args, path)

    def post(self, path: str, body: dict):
        return request("POST", self.args, path, json=body)


def cmd_sensor(args: argparse.Namespace) -> int:
    from vtap.sensor import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per report
    if args.interval <= 0:
        raise SystemExit("vtap sensor: --interval must be above 0")
    try:
        run(_Client(args), args.interface, args.interval, Path(args.eve) if args.eve else None, args.duration, args.netns)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise SystemExit(f"vtap sensor: --interface {args.interface}: {exc}") from None
    return 0


def add_sensor_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sensor", help="beside a tool: count the copies reaching its interface, per policy, and report "
                                      "them (needs a token of the sensor role)")
    s.add_argument("--interface", required=True, help="the interface the tool reads (the monitor's)")
    s.add_argument("--interval", type=float, default=0.5, help="seconds between reports (default 0.5)")
    s.add_argument("--eve", default=None, help="Suricata's eve.json: also count the tool's alerts per policy")
    s.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until stopped)")
    s.add_argument("--netns", default=None, metavar="PATH",
                   help="the interface is in this network namespace (a lab host's /proc/PID/ns/net); the sensor "
                        "stays where it reaches the controller")
    add_api_flags(s)
    s.set_defaults(func=cmd_sensor)
