#!/usr/bin/env bash
# Installs what vtap needs, idempotently: Debian packages (Open vSwitch, Mininet's
# mnexec, capture tools, etcd for cluster mode, OVS-DPDK, the DPDK drivers the lab uses,
# dpdk-testpmd for the bench's DPDK guests, Suricata from bookworm-backports; the plain
# ovs-vswitchd stays the system's default) and a venv with the project. Safe to run again
# and again: it only does work when something is missing or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(openvswitch-switch openvswitch-common mininet net-tools tcpdump iproute2
      iputils-ping procps ethtool chromium netsniff-ng tshark etcd-server
      openvswitch-switch-dpdk librte-net-af-packet23 librte-mempool-ring23
      dpdk-dev librte-net-virtio23 librte-net-pcap23 nftables)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Suricata 7 (the IDS on the lab's monitors) comes from bookworm-backports: bookworm's own
# archive no longer carries it.
if ! dpkg-query -W -f='${Status}' suricata 2>/dev/null | grep -q "install ok installed"; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "setup: adding bookworm-backports for suricata" >&2
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | $SUDO tee /etc/apt/sources.list.d/vtap-backports.sources >/dev/null
    fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports suricata
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.vtap-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing vtap and its dependencies into .venv" >&2
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
# vtap's own bytecode, written now: an editable install is not compiled by pip, and where
# PYTHONDONTWRITEBYTECODE is set every `vtap serve` would compile its modules again at
# each start (0.3 s of a restart). Python checks each file's date, so a stale one is not used.
.venv/bin/python -m compileall -q src/vtap >/dev/null
