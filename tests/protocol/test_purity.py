"""memoryd.protocol stays sans-I/O: importing it pulls in no event loop, server or driver."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import memoryd.protocol

FORBIDDEN = ("asyncio", "aiohttp", "asyncpg", "redis", "websockets", "uvloop")
FORBIDDEN_OWN = ("memoryd.server", "memoryd.storage", "memoryd.handlers", "memoryd.bridges")

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_import(*names: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *names], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout))


def _protocol_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(memoryd.protocol.__path__, "memoryd.protocol.")]
    assert {"memoryd.protocol.frames", "memoryd.protocol.codec"} <= set(found)
    return ["memoryd.protocol", *sorted(found)]


def test_the_probe_sees_what_an_import_loads() -> None:
    assert "asyncio" in _modules_after_import("asyncio")  # the check itself can fail


def test_importing_the_protocol_loads_no_io_library() -> None:
    modules = _protocol_modules()
    loaded = _modules_after_import(*modules)
    assert set(modules) <= loaded
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN_OWN))
    assert bad == []


def test_each_protocol_module_alone_is_pure() -> None:
    for module in _protocol_modules():
        loaded = _modules_after_import(module)
        assert not [m for m in loaded if m.split(".")[0] in FORBIDDEN], module
