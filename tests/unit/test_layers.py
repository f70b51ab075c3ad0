"""The layer rule: which vtap package may import which, written once, here, and checked.

Imports point down only. `model` and `compile` never touch a socket, a file or the
clock; `api` asks the controller, never the compiler; the composition root (`serve`)
sits above `api` and `control`; the tools (`lab`, `bench`) and the commands (`cli`,
`demo`) sit on top.
"""

from __future__ import annotations

import ast
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
