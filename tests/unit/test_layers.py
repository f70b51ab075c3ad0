"""The layer rule: which vtap package may import which, written once, here, and checked.

Imports point down only. `model` and `compile` never touch a socket, a file or the
clock; `api` asks the controller, never the compiler; the composition root (`serve`)
sits above `api` and `control`; the tools (`lab`, `bench`) and the commands (`cli`,
`demo`) sit on top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import vtap

ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "compile": {"model"},
    "openflow": {"model"},
    "store": {"model"},
    "control": {"model", "compile", "openflow", "store"},
    "api": {"model", "control", "store", "__init__"},
    "serve": {"model", "control", "openflow", "store", "api"},
    "console": set(),
    "lab": {"model"},  # talks to the controller over the network only (pure frame reading from model)
    "sensor": {"model"},  # beside a tool: talks to the controller over the network only
    "bench": {"model", "compile", "openflow", "control", "lab"},
    "cli": {"console", "serve", "lab", "bench", "model", "sensor"},
    "demo": {"cli", "console", "lab"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _imports() -> dict[str, set[str]]:
    root = Path(vtap.__file__).parent
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        layer = path.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "vtap":
                    target = parts[1] if len(parts) > 1 else "__init__"
                    if target != layer:
                        found.setdefault(layer, set()).add(f"{target} ({path.relative_to(root)})")
    return found


def test_every_package_imports_only_what_the_layer_rule_allows():
    bad = []
    for layer, targets in sorted(_imports().items()):
        assert layer in ALLOWED, f"{layer} is not in the layer rule"
        bad += [f"{layer} -> {t}" for t in sorted(targets) if t.split(" ")[0] not in ALLOWED[layer]]
    assert bad == []


def test_the_pure_layers_use_no_clock_socket_or_file():
    """`model`, `compile`, and the controller's decisions (`control/core*.py`: times
    come in as arguments, so that the core's unit tests drive it without waiting)."""
    root = Path(vtap.__file__).parent
    core = sorted((root / "control").glob("core*.py"))
    assert len(core) >= 4  # core.py and the mixins it is cut into
    for layer in ("model", "compile"):
        for path in [*(root / layer).rglob("*.py"), *(core if layer == "model" else ())]:
            text = path.read_text()
            for word in ("import time", "import socket", "import asyncio", "open(", "datetime"):
                assert word not in text, f"{path.relative_to(root)} uses {word!r}"


def test_the_api_asks_the_controller_only():
    """`api` reads everything it shows through `Controller` (control/reads.py): no api
    module imports the core or the compiler. Besides the controller, it may import the
    capture book's records (`CaptureJob` and the `CaptureLimit` it raises)."""
    root = Path(vtap.__file__).parent / "api"
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            bad += [f"{path.name} -> {n}" for n in names
                    if n.startswith(("vtap.control", "vtap.compile")) and n not in ("vtap.control.controller", "vtap.control.capture")]
    assert bad == []
    source = "\n".join(p.read_text() for p in root.rglob("*.py"))
    assert ".core." not in source and "ctl.core" not in source


def test_os_ken_s_openflow_is_imported_through_vtap_openflow_only():
    """`vtap.openflow` loads OpenFlow 1.3 alone (its docstring): a module elsewhere that
    imported `os_ken.ofproto` first would load every version again."""
    root = Path(vtap.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == "openflow":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            bad += [f"{path.relative_to(root)} -> {n}" for n in names if n.startswith("os_ken.ofproto")]
    assert bad == []


CONTROLLER_IMPORTS = """
import _abc  # the abstract classes' caches (for debugging, as here)
import sys
import vtap.serve, vtap.api.server, vtap.control.relay
from os_ken.lib.packet import packet_base
from os_ken.ofproto import ofproto_parser
from vtap.model.rules import FlowRule, Output, match
from vtap.openflow import translate
loaded = sorted(m for m in sys.modules if m.startswith("os_ken.ofproto.ofproto_v"))
print(loaded, "ofproto_protocol" in str(sys.modules.keys()), len(_abc._get_dump(packet_base.PacketBase)[2]))
rule = FlowRule(2, 50, match(in_port=3), (Output(1),), cookie=0x7674010000000000)
msg = translate.flow_add(rule)
msg.set_xid(1)
msg.serialize()
buf = bytes(msg.buf)
back = ofproto_parser.msg(translate.PROTOCOL, *ofproto_parser.header(buf), buf)
print(back.priority, back.match["in_port"], back.instructions[0].actions[0].port)
"""


def test_a_controller_process_loads_openflow_1_3_alone_and_still_encodes_and_decodes():
    """In a fresh interpreter, as `vtap serve` imports itself: no other version's
    module, no os-ken `ProtocolDesc`, the packet classes' cached answers dropped, and a flow mod still goes to bytes and back."""
    out = subprocess.run([sys.executable, "-c", CONTROLLER_IMPORTS], capture_output=True, text=True, check=True).stdout
    versions, _, decoded = out.strip().partition("\n")
    assert versions == "['os_ken.ofproto.ofproto_v1_3', 'os_ken.ofproto.ofproto_v1_3_parser'] False 0"
    assert decoded == "50 3 1"
