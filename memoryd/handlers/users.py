"""The caller's own profile."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from memoryd.errors import NotFound
from memoryd.handlers.auth import Name, Username
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.fields import fields_of
from memoryd.protocol.models import User


class UpdateProfileRequest(msgspec.Struct, rename="camel", kw_only=True):
    username: Username | UnsetType | None = UNSET
    first_name: Name | UnsetType | None = UNSET
    last_name: Name | UnsetType | None = UNSET
    avatar_url: Annotated[str, msgspec.Meta(max_length=2048)] | UnsetType | None = UNSET
    phone_number: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=r"^\+?[0-9 ()-]{5,20}$",
                max_length=20,
                extra={"message": "must be a phone number of at most 20 characters"},
            ),
        ]
        | UnsetType
        | None
    ) = UNSET
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=50)] | UnsetType = UNSET
    language: Annotated[str, msgspec.Meta(min_length=2, max_length=10)] | UnsetType = UNSET
    theme_preference: (
        Annotated[
            str,
            msgspec.Meta(
                pattern="^(light|dark|system)$", extra={"message": "must be light, dark or system"}
            ),
        ]
        | UnsetType
    ) = UNSET


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
