"""Screenshots of the web UI on fattree,4 with one TAP selected -> docs/ui.png, and of
its panel after a capture under a stream of its traffic -> docs/capture.png.

    .venv/bin/python scripts/ui_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Flow, send_from

OUT = Path(__file__).resolve().parents[1] / "docs" / "ui.png"
CAPTURE = OUT.parent / "capture.png"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-quic", "--no-first-run", "--disable-sync"]


def main() -> int:
    with LabSession(parse_topo("fattree,4"), Path(tempfile.mkdtemp(prefix="vtap-shot-"))) as lab:
        lab.net.pingAll(timeout="1")
        api, http = lab.ctl.api, lab.ctl.http
        http.post("/api/v1/taps", json={"name": "tap1", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.16", "ip_proto": "tcp",
                                               "dst_port": 80, "monitor_ip": "10.0.0.9"}).raise_for_status()
        http.post("/api/v1/taps", json={"name": "tap2", "src_mac": "00:00:00:00:00:01", "ip_proto": "udp", "vlan_id": 100,
                                               "monitor_ip": "10.0.0.4"}).raise_for_status()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 860})
            page.goto(api + "/")
            page.fill("#sign-in input[name=token]", lab.ctl.token)
            page.click("#sign-in button[type=submit]")
            page.wait_for_function("window.vtap && window.vtap.cy.nodes('.host').length === 16")
            page.wait_for_selector("#tap-list tr:has-text('tap1') .status.active", timeout=15000)
            page.locator("#tap-list tr", has_text="tap1").click()
            page.wait_for_function("window.vtap.cy.elements('.tap-point').length > 0")
            page.locator("#tap-list tr", has_text="tap1").hover()
            page.wait_for_timeout(1500)
            OUT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(OUT), full_page=True)
            # tap1's traffic for ~40 s; a capture of 50 packets from the panel meanwhile.
            flow = Flow("00:00:00:00:00:01", "00:00:00:00:00:10", "10.0.0.1", "10.0.0.16", "tcp", 40000, 80)
            stream = threading.Thread(target=send_from, args=(lab.net["h1"], flow, "shot", 2000), kwargs={"interval": 0.02})
            stream.start()
            page.wait_for_timeout(20000)
            page.fill("#capture-form [name=count]", "50")
            page.fill("#capture-form [name=snaplen]", "128")
            page.click("#capture")
            page.wait_for_selector("#capture-status .capture-state:text('done')", timeout=20000)
            page.wait_for_timeout(8000)
            page.locator("#right").screenshot(path=str(CAPTURE))
            stream.join()
            browser.close()
    print(f"wrote {OUT} and {CAPTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
