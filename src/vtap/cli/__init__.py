"""The `vtap` command: serve the controller, build a lab, look at the topology, manage
policies, tokens and the audit trail.

Commands that talk to the API find their token in `--token`, else `VTAP_TOKEN`, else the
file `--token-file` (default: the admin token `vtap serve` writes on first start).

Each group of commands lives in its own module, with the flags it takes: `serve`,
`lab` (lab and bench), `taps` (tap and apply), `capture`, `admin` (token and audit)
and `status` (cluster and topo); `rest` holds what the API commands share. Here the
top-level parser puts them together.
"""

from __future__ import annotations

import argparse
import sys

from vtap.cli.admin import add_audit_parser, add_token_parser
from vtap.cli.capture import add_capture_parser
from vtap.cli.lab import add_bench_parser, add_lab_parser
from vtap.cli.sensor import add_sensor_parser
from vtap.cli.serve import add_serve_parser, with_config
from vtap.cli.status import add_cluster_parser, add_topo_parser
from vtap.cli.taps import add_apply_parser, add_tap_parser

# In the order `vtap --help` lists them.
SUBCOMMANDS = (add_serve_parser, add_lab_parser, add_tap_parser, add_capture_parser, add_apply_parser,
               add_token_parser, add_audit_parser, add_bench_parser, add_cluster_parser, add_topo_parser, add_sensor_parser)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtap", description="A virtual TAP for software-defined networks.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    with_config(p, argv)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"vtap: {exc}", file=sys.stderr)
        return 2
