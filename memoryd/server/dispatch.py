"""Socket requests -> the same handlers the REST API calls. One place, one table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from memoryd.errors import Unauthorized
from memoryd.handlers import categories, memories, messages, search
from memoryd.handlers.auth import caller_from_claims
from memoryd.handlers.context import Services
from memoryd.handlers.memo import threads as ai
from memoryd.protocol import frames as f
from memoryd.server.connection import Connection
from memoryd.server.hub import Hub


async def dispatch(svc: Services, hub: Hub, conn: Connection, frame: f.Request) -> Any:
    """Run one request; return the reply's ``data``. ClientError propagates as an error frame."""
    who = conn.caller
    assert who is not None
    match frame:
        case f.Ping():
            return {"pong": True, "time": datetime.now(UTC)}
        case f.AuthRefresh():
            claims = svc.tokens.verify_access(frame.access_token)
            if claims.expires_at <= datetime.now(UTC):  # inside the skew leeway: still expired
                raise Unauthorized("Token expired", code="token_expired")
            if claims.user_id != who.user_id:
                raise Unauthorized("That token belongs to another user", code="unauthorized")
            conn.caller = caller_from_claims(claims, device_id=who.device_id)
            conn.expire_at(claims.expires_at.timestamp())
            return {"expiresAt": claims.expires_at}
        case f.Typing():
            data = {"memoryId": frame.memory_id, "deviceId": who.device_id, "userId": who.user_id}
            hub.signal(who.user_id, "typing", data, exclude_device=who.device_id)
            return None
        case f.Presence():
            this = str(who.device_id)
            online = sorted(await hub.online_devices(who.user_id))
            devices = [{"deviceId": d, "online": True, "thisDevice": d == this} for d in online]
            return {"devices": devices}
        case f.Read():
            return await memories.mark_read(svc, who, frame.memory_id, frame.seq)
        case f.MemoryList():
            return await memories.list_memories(svc, who, frame)
        case f.MemoryGet():
            return await memories.get_memory(svc, who, frame.memory_id)
        case f.MemoryCreate():
            return await memories.create_memory(svc, who, frame)
        case f.MemoryUpdate():
            return await memories.update_memory(svc, who, frame.memory_id, frame)
        case f.MemoryDelete():
            await memories.delete_memory(svc, who, frame.memory_id)
            return {"deleted": True}
        case f.CategoryList():
            return {"categories": await categories.list_categories(svc, who)}
        case f.CategoryCreate():
            return await categories.create_category(svc, who, frame)
        case f.CategoryUpdate():
            return await categories.update_category(svc, who, frame.category_id, frame)
        case f.CategoryDelete():
            await categories.delete_category(svc, who, frame.category_id)
            return {"deleted": True}
        case f.MessageSend():
            result = await messages.send_message(svc, who, frame.memory_id, frame)
            return result.message
        case f.MessageEdit():
            return await messages.edit_message(svc, who, frame.message_id, frame)
        case f.MessageDelete():
            await messages.delete_message(svc, who, frame.message_id)
            return {"deleted": True}
        case f.MessageHistory():
            return await messages.history(svc, who, frame.memory_id, frame.before, frame.limit)
        case f.AiAsk():  # counts against the user's "ai" limit, as REST AI calls do
            return await ai.ask(svc, who, frame.memory_id, frame)
        case f.AiCancel():
            return await ai.cancel(svc, who, frame)
        case f.Search():
            return await search.search(svc, who, frame)
    raise AssertionError(f"no dispatch for {type(frame).__name__}")  # pragma: no cover
