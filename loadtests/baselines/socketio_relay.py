"""The same relay on python-socketio, in its usual aiohttp set-up.

A client connects (Socket.IO v5) with the auth payload ``{"user": U, "device": D}`` and
joins the room ``U``. Every ``typing`` event ``{"memoryId": M}`` it emits goes to the
room, the sender skipped, as the event ``signal`` with
``{"signal":"typing","data":{"memoryId":M,"deviceId":D,"userId":U}}``: the payload of
memoryd's typing signal. No authentication, no storage.

    python loadtests/baselines/socketio_relay.py --port 8766
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
from aiohttp import web

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
WHO: dict[str, tuple[str, str]] = {}  # sid -> (user, device)


@sio.event
async def connect(sid: str, environ: Any, auth: Any) -> None:
    user, device = auth["user"], auth["device"]
    WHO[sid] = (user, device)
    await sio.enter_room(sid, user)


@sio.event
async def disconnect(sid: str, *args: Any) -> None:
    WHO.pop(sid, None)


@sio.on("typing")
async def typing(sid: str, data: Any) -> None:
    user, device = WHO[sid]
    payload = {
        "signal": "typing",
        "data": {"memoryId": data["memoryId"], "deviceId": device, "userId": user},
    }
    await sio.emit("signal", payload, room=user, skip_sid=sid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    app = web.Application()
    sio.attach(app)
    loop = uvloop.new_event_loop() if uvloop else None  # as memoryd runs
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
