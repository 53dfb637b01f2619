"""The local embedder loads from its wheel with no network and embeds meaning."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from memoryd.bridges.embeddings.local import LocalEmbedder

_NO_NETWORK = textwrap.dedent(
    """
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    import math
    from memoryd.bridges.embeddings.local import LocalEmbedder

    [a, b, c] = LocalEmbedder().embed_sync(["the castle on the hill", "a fortress", "soup"])
    assert len(a) == 256 and abs(math.sqrt(sum(x * x for x in a)) - 1) < 1e-4
    print("ok")
    """
)


def test_loads_and_embeds_with_no_network() -> None:
    env = {"HF_HUB_OFFLINE": "0", "PATH": "/usr/bin:/bin"}  # nothing that would forbid a hub call
    done = subprocess.run([sys.executable, "-c", _NO_NETWORK], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_close_meanings_are_closer() -> None:
    embedder = LocalEmbedder()
    [castle, fortress, soup] = embedder.embed_sync(["castle", "fortress", "vegetable soup"])

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(castle, fortress) > cos(castle, soup) + 0.05


@pytest.mark.parametrize("dimension", [64, 128])
def test_smaller_dimensions(dimension: int) -> None:
    [v] = LocalEmbedder(dimension).embed_sync(["hello"])
    assert len(v) == dimension


def test_an_unsupported_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        LocalEmbedder(300)
