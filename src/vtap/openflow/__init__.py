"""OpenFlow 1.3 southbound: the asyncio channel and the rule <-> message translation.

Knows bytes and messages, not policies. os-ken is used as a codec only, and of it only
OpenFlow 1.3, loaded here, before any module of vtap imports from `os_ken.ofproto`
(every import of it goes through this package: a unit test checks), and lighter than
os-ken loads itself (a controller's RSS once its imports are done: 70.4 → 61.3 MiB):

- The package module `os_ken.ofproto` imports the constants and parsers of every
  version from 1.0 to 1.5 (its own controller negotiates them): 4.6 MiB and 35 ms of a
  restart for versions vtap never speaks. The package is registered without running its
  `__init__`, so that importing 1.3's modules imports 1.3 alone. Its two functions
  (`get_ofp_modules`, `get_ofp_module`: os-ken's controller's) are then absent; a
  process that imported `os_ken.ofproto` before (a test suite) keeps it as it is.
- os-ken's packet library (1.3's parser imports it), as it is imported, asks of every
  class of every protocol module whether it is a packet class (`issubclass` against an
  abstract base class), and each abstract class caches every answer: ~24,000 weak
  references that nothing asks again, dropped once it is loaded.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _ofproto_without_every_version() -> None:
    if "os_ken.ofproto" in sys.modules:
        return
    import os_ken

    spec = importlib.machinery.ModuleSpec("os_ken.ofproto", None, is_package=True)
    spec.submodule_search_locations = [os.path.join(os.path.dirname(os_ken.__file__), "ofproto")]
    package = importlib.util.module_from_spec(spec)
    sys.modules["os_ken.ofproto"] = package
    os_ken.ofproto = package


def _load_openflow13() -> None:
    import os_ken.ofproto.ofproto_v1_3_parser  # noqa: F401 - and the packet library with it
    from os_ken.lib.packet import packet_base

    classes = [packet_base.PacketBase]
    while classes:
        cls = classes.pop()
        cls._abc_caches_clear()
        classes.extend(cls.__subclasses__())


_ofproto_without_every_version()
_load_openflow13()
