"""Users: argon2id passwords, roles mapped to scopes, sign-in sessions."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt import scopes as scope_rules
from forecourt.audit import service as audit
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, Forbidden, NotFound, Unauthenticated
from forecourt.ids import new_id
from forecourt.principal import Principal
from forecourt.tenants import service as tenants
from forecourt.users.models import User, UserSession
from forecourt.users.schemas import UserCreate, UserUpdate

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "owner": scope_rules.TENANT_SCOPES,
    "admin": scope_rules.TENANT_SCOPES,
    "member": frozenset(
        s
        for s in scope_rules.TENANT_SCOPES
        if s not in {"admin", "users:write", "keys:write", scope_rules.WEBHOOK_SECRETS}
    ),
    "viewer": scope_rules.READ_SCOPES - {"users:read"},
}
ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the email is unknown, so timing does not reveal
    accounts. Made on first use: hashing costs a third of a second."""
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def summary(user: User) -> dict[str, Any]:
    return {
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "disabled": user.disabled_at is not None,
    }


class UserService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, actor: Principal, data: UserCreate) -> User:
        await self._may_assign(actor, data.role)
        now = utcnow()
        user = User(
            id=new_id("usr"),
            tenant_id=actor.tenant_id,
            email=data.email.lower(),
            name=data.name,
            password_hash=await asyncio.to_thread(hash_password, data.password),
            role=data.role,
            created_at=now,
            updated_at=now,
        )
        self.session.add(user)
        audit.record(self.session, actor, "user.created", "user", user.id, after=summary(user))
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise Conflict(f"A user with the email {data.email!r} already exists.") from None
        return user

    async def list(self, actor: Principal) -> list[User]:
        rows = await self.session.scalars(
            select(User).where(User.tenant_id == actor.tenant_id).order_by(User.email)
        )
        return list(rows.all())

    async def get(self, actor: Principal, user_id: str) -> User:
        user = await self.session.scalar(
            select(User).where(User.id == user_id, User.tenant_id == actor.tenant_id)
        )
        if user is None:
            raise NotFound(f"No user {user_id!r}.")
        return user

    async def update(self, actor: Principal, user_id: str, data: UserUpdate) -> User:
        user = await self.get(actor, user_id)
        before = summary(user)
        if data.role is not None:
            await self._may_assign(actor, data.role)
            await self._may_assign(actor, user.role)
            user.role = data.role
        if data.name is not None:
            user.name = data.name
        if data.password is not None:
            user.password_hash = await asyncio.to_thread(hash_password, data.password)
        if data.disabled is not None:
            user.disabled_at = utcnow() if data.disabled else None
        user.updated_at = utcnow()
        if data.password is not None or data.disabled:
            await self._end_sessions(user.id)
        audit.record(
            self.session, actor, "user.updated", "user", user.id, before=before, after=summary(user)
        )
        await self.session.commit()
        return user

    async def sign_in(
        self,
        tenant_slug: str,
        email: str,
        password: str,
        ttl_s: int,
        ip: str | None,
        user_agent: str | None,
        request_id: str | None,
    ) -> tuple[User, UserSession, str]:
        """(user, session, cookie token); Unauthenticated with one message for every failure."""
        try:
            tenant = await tenants.get_by_slug(self.session, tenant_slug)
        except NotFound:
            tenant = None
        user = None
        if tenant is not None:
            user = await self.session.scalar(
                select(User).where(User.tenant_id == tenant.id, User.email == email.lower())
            )
        stored = user.password_hash if user is not None else await asyncio.to_thread(_dummy_hash)
        ok = await asyncio.to_thread(verify_password, stored, password)
        if user is None or not ok or user.disabled_at is not None:
            raise Unauthenticated("Wrong email or password.")
        now = utcnow()
        token = secrets.token_urlsafe(32)
        record = UserSession(
            id=new_id("ses"),
            tenant_id=user.tenant_id,
            user_id=user.id,
            token_hash=token_hash(token),
            csrf_token=secrets.token_urlsafe(32),
            ip=ip,
            user_agent=(user_agent or "")[:400] or None,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
        )
        user.last_login_at = now
        self.session.add(record)
        actor = Principal("user", user.id, user.tenant_id, ROLE_SCOPES[user.role], ip, request_id)
        audit.record(self.session, actor, "user.signed_in", "session", record.id)
        await self.session.commit()
        return user, record, token

    async def sign_out(self, actor: Principal, session_id: str) -> None:
        record = await self.session.get(UserSession, session_id)
        if record is not None and record.revoked_at is None:
            record.revoked_at = utcnow()
            audit.record(self.session, actor, "user.signed_out", "session", record.id)
            await self.session.commit()

    async def resolve_session(self, token: str) -> tuple[User, UserSession] | None:
        """The live session behind a cookie token, with its user."""
        record = await self.session.scalar(
            select(UserSession).where(UserSession.token_hash == token_hash(token))
        )
        if record is None or record.revoked_at is not None or record.expires_at <= utcnow():
            return None
        user = await self.session.get(User, record.user_id)
        if user is None or user.disabled_at is not None:
            return None
        return user, record

    async def _end_sessions(self, user_id: str) -> None:
        rows = await self.session.scalars(
            select(UserSession).where(
                UserSession.user_id == user_id, UserSession.revoked_at.is_(None)
            )
        )
        for record in rows:
            record.revoked_at = utcnow()

    async def _may_assign(self, actor: Principal, role: str) -> None:
        """Users hand out roles up to their own; keys need ``admin`` to make owners."""
        if actor.actor_type == "user" and actor.actor_id is not None:
            me = await self.session.get(User, actor.actor_id)
            if me is None or ROLE_RANK[me.role] < ROLE_RANK[role]:
                raise Forbidden(f"Your role cannot create or change {role}s.")
        elif role == "owner" and "admin" not in actor.scopes:
            raise Forbidden("Only an admin key may create or change owners.")


def user_principal(
    user: User, record: UserSession, ip: str | None, request_id: str | None
) -> Principal:
    return Principal(
        "user", user.id, user.tenant_id, ROLE_SCOPES[user.role], ip, request_id, via_cookie=True
    )
