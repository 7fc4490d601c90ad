"""Request and response bodies of /api/v1/users and /api/v1/auth."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from forecourt.schemas import StrictModel

Role = Literal["owner", "admin", "member", "viewer"]
MIN_PASSWORD_LENGTH = 12
# No @, U+0000 or space around the one @. Spaces spelled out: the server's \s (Unicode White_Space)
# has U+0085 and not U+FEFF, a client's JSON Schema \s (ECMA-262) the reverse.
EMAIL_PATTERN = r"^[^@\s\x00\x85\ufeff]+@[^@\s\x00\x85\ufeff]+$"


class UserCreate(StrictModel):
    email: str = Field(min_length=3, max_length=320, pattern=EMAIL_PATTERN)
    name: str = Field(default="", max_length=200)
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    role: Role = "member"


class UserUpdate(StrictModel):
    name: str | None = Field(default=None, max_length=200)
    role: Role | None = None
    password: str | None = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    disabled: bool | None = None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    name: str
    role: str
    created_at: datetime
    last_login_at: datetime | None
    disabled_at: datetime | None


class UserKey(BaseModel):
    """A key the user created, as listed when the user is disabled or deleted."""

    id: str
    name: str
    prefix: str
    revoked: bool


class UserChanged(UserOut):
    keys: list[UserKey] = Field(
        default_factory=list,
        description=(
            "When the user is disabled or deleted: the API keys the user created, revoked"
            " unless FORECOURT_REVOKE_KEYS_OF_REMOVED_USERS is false; empty otherwise."
        ),
    )


class SessionsEnded(BaseModel):
    ended: int = Field(description="How many live sign-in sessions were ended.")


class Login(StrictModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    tenant: str = Field(default="default", max_length=64)


class KeyLogin(StrictModel):
    key: str = Field(
        min_length=1,
        max_length=200,
        description="An API key (fck_...): it is exchanged for a session, never stored.",
        json_schema_extra={"format": "password", "writeOnly": True},
    )


class SessionKey(BaseModel):
    """The API key a session was signed in with (never its secret)."""

    id: str
    name: str
    prefix: str
    scopes: list[str]


class KeySessionOut(BaseModel):
    key: SessionKey
    csrf_token: str = Field(description="Send as X-CSRF-Token on every cookie-authenticated write.")
    expires_at: datetime


class SessionOut(BaseModel):
    user: UserOut
    csrf_token: str = Field(description="Send as X-CSRF-Token on every cookie-authenticated write.")
    expires_at: datetime
