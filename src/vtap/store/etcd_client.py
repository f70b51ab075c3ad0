"""How the etcd store reaches etcd: the endpoints of a `--store` URL, and a client that
speaks TLS with a client certificate when the URL says `etcds://`.

A TAP policy decides whose traffic is copied where, so whoever can write etcd's keys can
redirect copies without an audit record. A deployment therefore runs etcd with
`--client-cert-auth` and its own authentication on: the controller shows a certificate
signed by etcd's CA, and etcd takes the certificate's common name as the user, whose
role grants read and write on vtap's prefix only. No password travels or sits in a file.

aetcd (the asyncio client the store uses) only opens plain channels; `EtcdClient` opens
a TLS channel instead when given credentials, and is aetcd's client otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aetcd
import grpc
from aetcd import rpc, watcher

log = logging.getLogger(__name__)

SCHEMES = {"etcd": False, "etcds": True}  # scheme -> over TLS
CLOSE_S = 2.0  # how long a closing store waits for its tasks to end, before and after its clients close


def parse_endpoints(url: str) -> list[tuple[str, int]]:
    """`etcd[s]://HOST:PORT[,HOST:PORT...]` -> [(host, port), ...]; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{url!r}: expected etcd://HOST:PORT[,HOST:PORT...] (or etcds:// for TLS)")
    endpoints = []
    for item in parts.netloc.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r}: {item!r} is not HOST:PORT")
        endpoints.append((host.strip("[]"), int(port)))
    return endpoints


def is_tls(url: str) -> bool:
    return SCHEMES.get(urlsplit(url).scheme, False)


# One operation or comparison of a transaction.
def put_op(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete_op(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def mod_is(key: bytes, revision: int) -> Any:
    return rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=key, mod_revision=revision)


def create_is(key: bytes, revision: int) -> Any:
    return rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key, create_revision=revision)


@dataclass(frozen=True)
class EtcdTLS:
    """The CA that signed etcd's certificate, and this client's certificate and key (PEM)."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def from_files(cls, ca: str | Path | None, cert: str | Path | None, key: str | Path | None) -> EtcdTLS:
        """Read the three files; ValueError naming the flag that is missing or unreadable."""
        read = {}
        for flag, path in (("--etcd-ca", ca), ("--etcd-cert", cert), ("--etcd-key", key)):
            if not path:
                raise ValueError(f"--store etcds:// (etcd over TLS) needs {flag}")
            try:
                read[flag] = Path(path).read_bytes()
            except OSError as exc:
                raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from None
            if b"-----BEGIN" not in read[flag]:
                raise ValueError(f"{flag} {path}: not a PEM file")
        return cls(read["--etcd-ca"], read["--etcd-cert"], read["--etcd-key"])

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)


class EtcdClient(aetcd.Client):
    """aetcd's client, over TLS when `tls` is given."""

    def __init__(self, host: str, port: int, timeout: float, tls: EtcdTLS | None = None):
        super().__init__(host=host, port=port, timeout=timeout)
        self._credentials = tls.credentials() if tls is not None else None

    async def connect(self) -> None:
        if self._credentials is None or self._connected.is_set():
            return await super().connect()
        # What aetcd's connect does, on a secure channel (opening one sends nothing yet;
        # the handshake happens on the first call, and its failure is that call's error).
        self.channel = grpc.aio.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                               options=list(self._options.items()))
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
        self._connected.set()


async def shut(tasks: list[asyncio.Task], clients: list[aetcd.Client]) -> None:
    """The store's tasks cancelled and its clients closed, within bounds. A watch on a
    stream to a member that went away and came back may not end on a cancel (aetcd's
    iterator waits on the dead stream: a test's close once hung there for minutes): the
    close of its client ends the stream, and a task that still runs is left, logged."""
    for task in tasks:
        task.cancel()
    stuck = (await asyncio.wait(tasks, timeout=CLOSE_S))[1] if tasks else set()
    for task in set(tasks) - stuck:
        if not task.cancelled():
            task.exception()  # retrieved: a task that had failed before is not logged again at its collection
    for client in clients:
        try:
            await asyncio.wait_for(client.close(), CLOSE_S)
        except (asyncio.TimeoutError, grpc.RpcError, OSError) as exc:
            log.warning("an etcd client did not close (%s)", exc or type(exc).__name__)
    if stuck and (await asyncio.wait(stuck, timeout=CLOSE_S))[1]:
        log.warning("etcd store closed with %d task(s) that did not end on a cancel", len(stuck))
