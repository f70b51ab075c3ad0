"""How fast the controller answers OpenFlow: ECHO_REQUEST round trips, measured from outside.

A client opens an OpenFlow 1.3 connection to the controller, says HELLO, and sends an
ECHO_REQUEST every `interval` seconds; the controller answers echoes from the moment a
connection opens, on the same event loop that serves every switch, LLDP and the
reconcilers. The client never completes the handshake (it is no switch: the controller
closes it after its handshake timeout), so it opens a new connection every few seconds.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

OFP_VERSION = 4
OFPT_HELLO, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY = 0, 2, 3
HEADER = struct.Struct("!BBHI")
CONNECTION_S = 8.0  # below the controller's handshake timeout (2 x 5 s)


class EchoProbe:
    def __init__(self, port: int, interval: float = 0.05, host: str = "127.0.0.1"):
        self.addr = (host, port)
        self.interval = interval
        self.rtts: list[float] = []  # seconds
        self.lost = 0  # echoes unanswered when their connection ended
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> EchoProbe:
        self._thread.start()
        return self

    def stop(self) -> EchoProbe:
        self._stop.set()
        self._thread.join(timeout=15)
        return self

    def _run(self) -> None:
        xid = 0
        while not self._stop.is_set():
            with socket.create_connection(self.addr, timeout=5) as s:
                s.sendall(HEADER.pack(OFP_VERSION, OFPT_HELLO, HEADER.size, 0))
                sent: dict[int, float] = {}
                buf = b""
                opened = time.monotonic()
                s.settimeout(self.interval)
                while not self._stop.is_set() and time.monotonic() - opened < CONNECTION_S:
                    xid += 1
                    sent[xid] = time.perf_counter()
                    s.sendall(HEADER.pack(OFP_VERSION, OFPT_ECHO_REQUEST, HEADER.size, xid))
                    deadline = time.monotonic() + self.interval
                    while time.monotonic() < deadline:
                        try:
                            data = s.recv(65536)
                        except socket.timeout:
                            break
                        if not data:
                            break
                        buf += data
                        while len(buf) >= HEADER.size:
                            _, kind, length, rxid = HEADER.unpack_from(buf)
                            if len(buf) < length:
                                break
                            buf = buf[length:]
                            if kind == OFPT_ECHO_REPLY and rxid in sent:
                                self.rtts.append(time.perf_counter() - sent.pop(rxid))
                self.lost += len(sent)

    def worst(self) -> float:
        return max(self.rtts, default=float("inf"))

    def percentile(self, p: float) -> float:
        ordered = sorted(self.rtts)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("inf")
