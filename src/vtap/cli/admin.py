"""`vtap token` and `vtap audit`: the API's tokens (admin) and its hash-chained audit
trail."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from vtap.cli.rest import add_api_flags, add_client_flags, emit, request
from vtap.console import table


def cmd_token(args: argparse.Namespace) -> int:
    action = args.token_command
    if action == "add":
        body: dict = {"name": args.name, "role": args.role}
        if args.source or args.monitor:
            body["scope"] = {"sources": args.source, "monitors": args.monitor}
        if args.expires_in:
            body["expires_in_s"] = args.expires_in
        out = request("POST", args, "/api/v1/tokens", json=body)
        return emit(args, out, lambda t: print(f"token {t['id']} ({t['name']}, {t['role']}); shown once, keep it:\n{t['token']}"))
    if action == "list":
        return emit(args, request("GET", args, "/api/v1/tokens"), lambda ts: print(table(
            [[t["id"], t["name"], t["role"], json.dumps(t["scope"]) if t["scope"] else "-", t["expires_at"] or "never"] for t in ts],
            ["ID", "NAME", "ROLE", "SCOPE", "EXPIRES"])))
    if action == "rm":
        request("DELETE", args, f"/api/v1/tokens/{args.id}")
        return emit(args, {"deleted": args.id}, lambda o: print(f"revoked token {args.id}"))
    raise AssertionError(action)


def cmd_audit(args: argparse.Namespace) -> int:
    from vtap.model.audit import verify

    params = {k: v for k, v in (("since", args.since), ("actor", args.actor), ("target", args.target)) if v is not None}
    if args.verify:
        records, since = [], 0
        while True:  # the whole trail, a page at a time
            page = request("GET", args, "/api/v1/audit", params={"since": since, "limit": 10000})
            records += page
            if len(page) < 10000:
                break
            since = page[-1]["seq"]
        ok, seq, why = verify(records)
        print(f"audit trail: {why}" if ok else f"audit trail BROKEN at record {seq}: {why}")
        return 0 if ok else 1
    out = request("GET", args, "/api/v1/audit", params=params)
    return emit(args, out, lambda rs: print(table(
        [[r["seq"], datetime.fromtimestamp(r["time"], timezone.utc).isoformat(timespec="seconds"), r["actor"], r["remote"],
          r["action"], r["target"], r["result"]] for r in rs],
        ["SEQ", "TIME", "ACTOR", "REMOTE", "ACTION", "TARGET", "RESULT"])))


def add_token_parser(sub: argparse._SubParsersAction) -> None:
    tk = sub.add_parser("token", help="manage API tokens (admin)")
    ksub = tk.add_subparsers(dest="token_command", required=True)
    kadd = ksub.add_parser("add", help="make a token; its secret is printed once")
    kadd.add_argument("name")
    kadd.add_argument("--role", required=True, choices=["viewer", "operator", "admin", "sensor"])
    kadd.add_argument("--source", action="append", default=[], help="operator scope: a MAC or CIDR it may tap (repeat)")
    kadd.add_argument("--monitor", action="append", default=[], help="operator scope: a monitor MAC or IP (repeat)")
    kadd.add_argument("--expires-in", type=int, default=None, help="seconds until it expires (default never)")
    ksub.add_parser("list", help="tokens, without secrets")
    ksub.add_parser("rm", help="revoke a token at once").add_argument("id", type=int)
    for sp in ksub.choices.values():
        add_client_flags(sp)
    tk.set_defaults(func=cmd_token)


def add_audit_parser(sub: argparse._SubParsersAction) -> None:
    au = sub.add_parser("audit", help="the audit trail: every change and refusal, hash-chained")
    add_api_flags(au)
    au.add_argument("--verify", action="store_true", help="check the whole chain; exit 1 naming the first broken record")
    au.add_argument("--since", type=int, default=None, help="records after this sequence number")
    au.add_argument("--actor", default=None)
    au.add_argument("--target", default=None, help="e.g. tap:3, token:2")
    au.add_argument("--json", action="store_true", help="print JSON")
    au.set_defaults(func=cmd_audit)
