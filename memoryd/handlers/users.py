"""The caller's own profile."""

from __future__ import annotations

from memoryd.errors import NotFound
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.fields import fields_of

# REST bodies live in protocol/; re-exported for the routes that name them through here
from memoryd.protocol.auth import (
    UpdateProfileRequest as UpdateProfileRequest,
)
from memoryd.protocol.models import User


async def get_me(svc: Services, caller: Caller) -> User:
    user = await svc.store.users.get(caller.user_id)
    if user is None:
        raise NotFound("User not found")
    return user


async def update_me(svc: Services, caller: Caller, req: UpdateProfileRequest) -> User:
    changes = fields_of(req, UpdateProfileRequest)
    if not changes:
        return await get_me(svc, caller)
    user, event = await svc.store.users.update_profile(caller.user_id, changes)
    svc.publish(caller.user_id, event)
    return user
