"""The bodies of ``/api/auth/*`` and ``/api/users/me``: registration, login, refresh,
logout, Google sign-in and the caller's profile (the seed's Joi rules as msgspec
constraints)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from memoryd.protocol.models import User

# The seed's Joi rules.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PASSWORD_PATTERN = r"^(?=.*[a-z])(?=.*[A-Z])(?=.*\d)(?=.*[@$!%*?&])[A-Za-z\d@$!%*?&]"
Email = Annotated[
    str,
    msgspec.Meta(max_length=255, pattern=EMAIL_PATTERN, extra={"message": "must be a valid email"}),
]
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=256,
        pattern=PASSWORD_PATTERN,
        extra={
            "message": "must be at least 8 characters with a lowercase letter, an uppercase "
            "letter, a digit and one of @$!%*?&"
        },
    ),
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Username = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9]{3,30}$", extra={"message": "must be 3 to 30 letters or digits"}
    ),
]


class RegisterRequest(msgspec.Struct, rename="camel", kw_only=True):
    email: Email
    password: Password
    first_name: Name
    last_name: Name
    username: Username | None = None


class LoginRequest(msgspec.Struct, rename="camel", kw_only=True):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    remember_me: bool = False


class RefreshRequest(msgspec.Struct, rename="camel", kw_only=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class LogoutRequest(msgspec.Struct, rename="camel", kw_only=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    all_devices: bool = False


class OAuthRequest(msgspec.Struct, rename="camel", kw_only=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    redirect_uri: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class AuthResult(msgspec.Struct, rename="camel", kw_only=True):
    user: User
    access_token: str
    refresh_token: str


class OAuthResult(AuthResult, kw_only=True):
    is_new_user: bool


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
