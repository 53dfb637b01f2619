"""A minimal relay on bare ``websockets``: the peer memoryd's fan-out is measured against.

A socket connects to ``/?user=U&device=D`` and gets ``{"type":"welcome"}``. Every
``{"type":"typing","memoryId":M}`` it sends goes to the user's *other* sockets as
``{"type":"signal","signal":"typing","data":{"memoryId":M,"deviceId":D,"userId":U}}``:
the same frame, the same size as memoryd's typing signal. The frame is parsed and encoded
once with the standard ``json`` module, then handed to ``websockets.broadcast`` (which
never waits for a slow socket). No authentication, no storage, no limits: this is the
ceiling a WebSocket server in Python reaches for this fan-out.

    python loadtests/baselines/ws_relay.py --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

SOCKETS: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    query = parse_qs(urlsplit(ws.request.path).query)  # type: ignore[union-attr]
    user, device = query["user"][0], query["device"][0]
    peers = SOCKETS.setdefault(user, set())
    peers.add(ws)
    try:
        await ws.send('{"type":"welcome"}')
        async for message in ws:
            frame = json.loads(message)
            if frame.get("type") == "typing":
                out = json.dumps(
                    {
                        "type": "signal",
                        "signal": "typing",
                        "data": {"memoryId": frame["memoryId"], "deviceId": device, "userId": user},
                    },
                    separators=(",", ":"),
                )
                broadcast([p for p in peers if p is not ws], out)
    finally:
        peers.discard(ws)
        if not peers:
            SOCKETS.pop(user, None)


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, compression=None, max_queue=None, ping_interval=30):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    (uvloop.run if uvloop else asyncio.run)(main(args.host, args.port))
