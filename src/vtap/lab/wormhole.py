"""A live LLDP relay between two hosts: the attack the threat model leaves open.

Two colluding hosts, each running one end, hand every LLDP frame their switch port
receives to the other end, which sends it out of its own port at once. The controller
then sees its own fresh, authenticated frames arrive at the other host's switch and
proves a link between the two host ports (a wormhole). `vtap bench relay` runs it in
the lab to measure what the relay adds to a link's LLDP transit time.

    python -m vtap.lab.wormhole IFACE BIND_PATH PEER_PATH

Each end listens on a Unix datagram socket (`BIND_PATH`) and sends to its peer's: the
fastest path two processes on one machine have, so the measured delay is a floor.
"""

from __future__ import annotations

import os
import select
import socket
import sys

ETH_P_LLDP = 0x88CC
PACKET_OUTGOING = 4  # the frames this end itself sends, seen again on its raw socket


def relay(iface: str, bind_path: str, peer_path: str) -> None:
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_LLDP))
    raw.bind((iface, ETH_P_LLDP))
    if os.path.exists(bind_path):
        os.unlink(bind_path)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unix.bind(bind_path)
    while True:
        ready, _, _ = select.select([raw, unix], [], [])
        if raw in ready:
            frame, addr = raw.recvfrom(65535)
            if addr[2] != PACKET_OUTGOING:
                try:
                    unix.sendto(frame, peer_path)
                except OSError:
                    pass  # the peer is not up yet
        if unix in ready:
            raw.send(unix.recv(65535))


if __name__ == "__main__":
    relay(*sys.argv[1:4])
