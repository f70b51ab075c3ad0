"""The last compile, kept across a clean restart, so that the first compile of a
restarted controller does not start from nothing.

A whole compile of 10,000 policies takes about two seconds, and a restart used to wait
for one before any policy was active again. `compile_network` is a pure function of its
inputs (`CompileInputs`: the view, the policies, the packet-in rate, the capture jobs),
so a controller that stops writes its last compile down with those inputs, and the next
one reuses it only if its own first compile's inputs are equal to them, field by field
— the same view (switches and their ports, links, hosts, port roles), the same policies,
the same capture jobs — and only if the compiler is the very same code (a digest of the
`vtap.compile` and `vtap.model` sources, and the Python and pydantic versions).
Anything else, and it compiles anew, as before; the log says which input differed.
After reusing it, the controller compiles the whole set again in the background, to
fill the memo the in-place path needs, and checks that the result is the one it reused.

The file is pickled, so it is authenticated: a keyed BLAKE2b digest under a key derived
from a secret of the store (a file in the state directory that is not vtap's own is ignored, not
loaded). It is read once: a snapshot is deleted as it is loaded, so that a controller
killed later does not find a stale one (a stale one would be harmless, only a waste).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pydantic

import vtap.compile
import vtap.model
from vtap.control.core import CompileInputs

log = logging.getLogger(__name__)

FILE = "compile.snapshot"
FORMAT = 1
MAC_BYTES = 32
# Written at the stop, which must end within 2 s (serve.STOP_S): pickling takes about
# 30 ms per 1,000 policies on the reference machine, so a larger set is not written.
MAX_POLICIES = 40_000


def code_digest() -> str:
    """What the compile's result depends on besides its inputs: the compiler's and the
    model's source, and the versions of what pickles them."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{FORMAT} {sys.version_info[:2]} {pydantic.VERSION}".encode())
    for package in (vtap.compile, vtap.model):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def taps_digest(taps: dict) -> bytes:
    """The policies, by id, as a digest of their canonical JSON: parsing 10,000 pickled
    policies took 0.55 s of a restart's 2, their digest 0.08 s."""
    h = hashlib.blake2b(digest_size=32)
    for ident in sorted(taps):
        h.update(b"%d %s\n" % (ident, taps[ident].spec.model_dump_json().encode()))
    return h.digest()


@dataclass(frozen=True)
class Snapshot:
    """A compile and the inputs it was made from (the policies as their digest)."""

    inputs: CompileInputs  # with no policies: see `taps`
    taps: bytes
    result: tuple


def key_from(secret: bytes) -> bytes:
    """The snapshot's own key, derived from a secret every store keeps (the LLDP one:
    an etcd store makes only the secrets it knows of, for the whole cluster)."""
    return hashlib.blake2b(b"vtap compile snapshot", key=secret[:64], digest_size=32).digest()


def _mac(key: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(body, key=key[:64], digest_size=MAC_BYTES).digest()


def save(state_dir: Path, key: bytes, inputs: CompileInputs, result: tuple) -> bool:
    """Write the compile down (atomically: a new file renamed over the old), unless the
    set is too large to write within a stop's time or the disk refuses it (logged).
    Whether it was written. A stop calls it in a thread, with a copy of the policies."""
    if len(inputs.taps) > MAX_POLICIES:
        log.info("compile snapshot not written: %d policies (at most %d are written at a stop)", len(inputs.taps), MAX_POLICIES)
        return False
    # The view's fields, not what it derived from them (paths); the policies as a digest.
    kept = replace(inputs, view=replace(inputs.view), taps={})
    body = pickle.dumps((code_digest(), kept, taps_digest(inputs.taps), result), protocol=pickle.HIGHEST_PROTOCOL)
    path = Path(state_dir) / FILE
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_mac(key, body) + body)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("compile snapshot not written: %s", exc)
        return False
    log.info("compile snapshot written: %d policies, %.1f MiB", len(inputs.taps), len(body) / 2 ** 20)
    return True


def load(state_dir: Path, key: bytes) -> Snapshot | None:
    """The snapshot a clean stop wrote, or None (none, not vtap's, another compiler);
    the file is gone afterwards either way."""
    path = Path(state_dir) / FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    finally:
        path.unlink(missing_ok=True)
    mac, body = data[:MAC_BYTES], data[MAC_BYTES:]
    if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, _mac(key, body)):
        log.warning("compile snapshot ignored: %s is not signed with this store's key", path)
        return None
    digest, inputs, taps, result = pickle.loads(body)
    if digest != code_digest():
        log.info("compile snapshot ignored: written by another version of the compiler")
        return None
    return Snapshot(inputs, taps, result)


def reusable(snapshot: Snapshot | None, inputs: CompileInputs) -> tuple | None:
    """The snapshot's compile if it was made from inputs equal to `inputs`, else None
    (and the log names the first input that differs)."""
    if snapshot is None:
        return None
    why = snapshot.inputs.differs(replace(inputs, taps={}))
    if why is None and taps_digest(inputs.taps) != snapshot.taps:
        why = "taps"
    if why is not None:
        log.info("compile snapshot not reused: its %s differ from the first compile's", why)
        return None
    return snapshot.result
