"""The REST client the API commands share: the token, requests and their errors, the
`--json` switch, and the flags that say where the controller is."""

from __future__ import annotations

import argparse
import json
import os
import ssl
from pathlib import Path

# httpx (and the rich console it brings) is imported by the commands that send a
# request, not here: `vtap serve` imports this module's parsers and starts 0.3 s sooner.

DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_TOKEN_FILE = "/var/lib/vtap/admin.token"


def _token(args: argparse.Namespace) -> str | None:
    """--token, else VTAP_TOKEN, else the contents of --token-file; None when none is there."""
    if args.token:
        return args.token
    if os.environ.get("VTAP_TOKEN"):
        return os.environ["VTAP_TOKEN"]
    try:
        return Path(args.token_file).read_text().strip()
    except OSError:
        return None


def request(method: str, args: argparse.Namespace, path: str, **kw):
    import httpx

    api = args.api
    token = _token(args)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        verify = ssl.create_default_context(cafile=args.ca_cert) if args.ca_cert else True
        resp = httpx.request(method, f"{api.rstrip('/')}{path}", timeout=30, headers=headers, verify=verify, **kw)
    except httpx.HTTPError as exc:
        raise SystemExit(f"vtap: cannot reach the controller at {api}: {exc}") from None
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else resp.text
    if resp.status_code in (403, 409, 422) and isinstance(detail, list):
        lines = []
        for d in detail:
            loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in d.get("loc", []) if x != "body").lstrip(".")
            lines.append(f"  {loc or 'request'}: {d.get('msg')}")
        what = {403: "not allowed", 409: "conflict"}.get(resp.status_code, "invalid request")
        raise SystemExit(f"vtap: {what}:\n" + "\n".join(lines))
    if resp.status_code == 401 and not token:
        raise SystemExit(f"vtap: the controller needs a token: give --token, set VTAP_TOKEN, or make --token-file "
                         f"readable ({args.token_file}) (HTTP 401)")
    if resp.status_code >= 400:
        raise SystemExit(f"vtap: {detail} (HTTP {resp.status_code})")
    return body


def request_bytes(args: argparse.Namespace, path: str) -> bytes:
    import httpx

    token = _token(args)
    verify = ssl.create_default_context(cafile=args.ca_cert) if args.ca_cert else True
    try:
        resp = httpx.get(f"{args.api.rstrip('/')}{path}", timeout=60, verify=verify,
                         headers={"authorization": f"Bearer {token}"} if token else {})
    except httpx.HTTPError as exc:
        raise SystemExit(f"vtap: cannot reach the controller at {args.api}: {exc}") from None
    if resp.status_code >= 400:
        raise SystemExit(f"vtap: {resp.text} (HTTP {resp.status_code})")
    return resp.content


def stream_bytes(args: argparse.Namespace, path: str, out) -> int:
    """GET `path` as a stream, each chunk written to the binary file `out` and flushed as it
    comes (a live pcapng for `tshark -r -`); the bytes written."""
    import httpx

    token = _token(args)
    verify = ssl.create_default_context(cafile=args.ca_cert) if args.ca_cert else True
    written = 0
    try:
        with httpx.stream("GET", f"{args.api.rstrip('/')}{path}", timeout=httpx.Timeout(30, read=None), verify=verify,
                          headers={"authorization": f"Bearer {token}"} if token else {}) as resp:
            if resp.status_code >= 400:
                raise SystemExit(f"vtap: {resp.read().decode(errors='replace')} (HTTP {resp.status_code})")
            for chunk in resp.iter_bytes():
                out.write(chunk)
                out.flush()
                written += len(chunk)
    except httpx.HTTPError as exc:
        raise SystemExit(f"vtap: the stream from {args.api} broke: {exc}") from None
    return written


def emit(args: argparse.Namespace, out, render) -> int:
    """JSON with --json, else the human rendering."""
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        render(out)
    return 0


def add_api_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=DEFAULT_API, help=f"controller REST API (default {DEFAULT_API})")
    p.add_argument("--token", default=None, help="a vtap token (else VTAP_TOKEN, else --token-file)")
    p.add_argument("--token-file", default=DEFAULT_TOKEN_FILE, help=f"file holding the token (default {DEFAULT_TOKEN_FILE})")
    p.add_argument("--ca-cert", default=None, help="CA certificate to verify an https API with")


def add_client_flags(p: argparse.ArgumentParser, json_help: str = "print JSON") -> None:
    """The API flags, then `--json`."""
    add_api_flags(p)
    p.add_argument("--json", action="store_true", help=json_help)
