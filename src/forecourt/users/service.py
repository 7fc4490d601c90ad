"""Users: argon2id passwords, roles mapped to scopes, sign-in sessions."""

from __future__ import annotations

import asyncio
import builtins
import functools
import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt import power
from forecourt import scopes as scope_rules
from forecourt.audit import service as audit
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, Forbidden, NotFound, RateLimited, Unauthenticated
from forecourt.ids import new_id
from forecourt.keys import format as key_format
from forecourt.keys import service as key_lookup
from forecourt.keys.cache import CachedKey
from forecourt.principal import Principal
from forecourt.tenants import service as tenants
from forecourt.users.models import User, UserSession
from forecourt.users.schemas import UserCreate, UserUpdate
from forecourt.users.throttle import SignInThrottle

if TYPE_CHECKING:
    from forecourt.keys.models import ApiKey
    from forecourt.keys.service import KeyService

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
LAST_OWNER = (
    "This is the tenant's last enabled owner: it cannot be disabled, demoted or deleted."
    " Make another user owner first."
)
ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}
# One answer for every key that cannot sign in, whatever the reason.
KEY_REFUSED = "This key cannot sign in: it is unknown, revoked or expired."

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


def key_summary(key: ApiKey) -> dict[str, Any]:
    """A key as a removed user's response and audit entry list it."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "revoked": key.revoked_at is not None,
    }


class UserService:
    """``keys``: the key service on the same session, to list (and, with ``revoke_keys``,
    revoke) the keys of a user who is disabled or deleted."""

    def __init__(
        self,
        session: AsyncSession,
        keys: KeyService | None = None,
        *,
        revoke_keys: bool = True,
    ) -> None:
        self.session = session
        self.keys = keys
        self.revoke_keys = revoke_keys

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

    async def update(
        self, actor: Principal, user_id: str, data: UserUpdate
    ) -> tuple[User, builtins.list[ApiKey]]:
        """The changed user and, when it is disabled, the keys it created (revoked unless
        configured otherwise)."""
        user = await self.get(actor, user_id)
        await self._may_change(actor, user)
        if data.role is not None and data.role != user.role:
            await self._may_assign(actor, data.role)
        demoted = data.role is not None and data.role != "owner"
        removes_owner = await self._keep_an_owner(user, removing=bool(demoted or data.disabled))
        password_hash = None
        if data.password is not None:
            password_hash = await asyncio.to_thread(hash_password, data.password)
        before = summary(user)
        if data.role is not None:
            user.role = data.role
        if data.name is not None:
            user.name = data.name
        if password_hash is not None:
            user.password_hash = password_hash
        if data.disabled is not None and data.disabled != (user.disabled_at is not None):
            user.disabled_at = utcnow() if data.disabled else None
        user.updated_at = utcnow()
        ended = 0
        if data.password is not None or data.disabled:
            ended = await self._end_sessions(user.id)
        keys: builtins.list[ApiKey] = []
        revoked: builtins.list[str] = []
        if data.disabled:
            keys, revoked = await self._keys_of_removed(actor, user)
        after = summary(user)
        if data.password is not None:
            after["password_changed"] = True
        if data.disabled:
            after["keys"] = [key_summary(k) for k in keys]
        audit.record(
            self.session, actor, "user.updated", "user", user.id, before=before, after=after
        )
        if ended:
            self._record_sessions_ended(actor, user, ended)
        await self._commit_removal(user, removes_owner, revoked)
        return user, keys

    async def delete(self, actor: Principal, user_id: str) -> tuple[User, builtins.list[ApiKey]]:
        """Delete the user and its sessions; the keys it created are listed and (unless
        configured otherwise) revoked."""
        user = await self.get(actor, user_id)
        await self._may_change(actor, user)
        removes_owner = await self._keep_an_owner(user, removing=True)
        keys, revoked = await self._keys_of_removed(actor, user)
        ended = await self._end_sessions(user.id)
        await self.session.execute(delete(UserSession).where(UserSession.user_id == user.id))
        audit.record(
            self.session,
            actor,
            "user.deleted",
            "user",
            user.id,
            before=summary(user),
            after={"keys": [key_summary(k) for k in keys]},
        )
        if ended:
            self._record_sessions_ended(actor, user, ended)
        await self.session.delete(user)
        await self._commit_removal(user, removes_owner, revoked)
        return user, keys

    async def end_sessions(self, actor: Principal, user_id: str) -> int:
        """End every live sign-in session of the user; how many there were."""
        user = await self.get(actor, user_id)
        await self._may_change(actor, user)
        ended = await self._end_sessions(user.id)
        self._record_sessions_ended(actor, user, ended)
        await self.session.commit()
        return ended

    async def sign_in(
        self,
        tenant_slug: str,
        email: str,
        password: str,
        ttl_s: int,
        ip: str | None,
        user_agent: str | None,
        request_id: str | None,
        throttle: SignInThrottle | None = None,
    ) -> tuple[User, UserSession, str]:
        """(user, session, cookie token); Unauthenticated with one message for every failure.

        With a ``throttle``, an attempt that must wait is refused first (RateLimited, 429).
        Every failure is audited in the tenant's log (email and reason, never the password).
        The password is checked against a dummy hash when the account is unknown, so the time
        taken does not tell which accounts exist.
        """
        try:
            tenant = await tenants.get_by_slug(self.session, tenant_slug)
        except NotFound:
            tenant = None
        if throttle is not None:
            try:
                await throttle.attempt(tenant_slug, email, ip)
            except RateLimited:
                await self._sign_in_failed(tenant, None, email, "throttled", ip, request_id)
                raise
        user = None
        if tenant is not None:
            user = await self.session.scalar(
                select(User).where(User.tenant_id == tenant.id, User.email == email.lower())
            )
        stored = user.password_hash if user is not None else await asyncio.to_thread(_dummy_hash)
        ok = await asyncio.to_thread(verify_password, stored, password)
        if user is None or not ok or user.disabled_at is not None:
            reason = (
                "unknown_account"
                if user is None
                else "wrong_password"
                if not ok
                else "disabled_account"
            )
            await self._sign_in_failed(tenant, user, email, reason, ip, request_id)
            raise Unauthenticated("Wrong email or password.")
        if throttle is not None:
            await throttle.succeeded(tenant_slug, email, ip)
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

    async def sign_in_with_key(
        self,
        raw: str,
        secret: bytes,
        ttl_s: int,
        ip: str | None,
        user_agent: str | None,
        request_id: str | None,
        throttle: SignInThrottle | None = None,
    ) -> tuple[CachedKey, UserSession, str]:
        """(key, session, cookie token) for a valid API key; Unauthenticated with one message
        for every key that is unknown, malformed, revoked, expired, past its rotation grace
        (or a pre-rotation secret at all), or of a suspended tenant.

        The session holds the key's power and no more: each request checks the key again
        (``resolve_session``). With a ``throttle``, failures are counted per address as for
        a password sign-in. Failures of a known key are audited in its tenant's log (the
        key's id and the reason); the presented value is never stored, logged or audited.
        """
        if throttle is not None:
            await throttle.attempt_key(ip)
        key = None
        digest = key_format.hash_key(raw, secret) if key_format.is_well_formed(raw) else ""
        if digest:
            key = await key_lookup.lookup(self.session, digest)
        if key is None:
            raise Unauthenticated(KEY_REFUSED)
        tenant = await tenants.find(self.session, key.tenant_id)
        reason = None
        if tenant is None or tenant.suspended_at is not None:
            reason = "suspended_tenant"
        elif key.revoked:
            reason = "revoked_key"
        elif key.expires_at is not None and key.expires_at <= utcnow().timestamp():
            reason = "expired_key"
        elif key.via_previous:
            # A pre-rotation secret may finish its grace period but not open a session.
            reason = "previous_secret"
        if reason is not None:
            if tenant is not None:
                actor = Principal("key", None, tenant.id, frozenset(), ip, request_id)
                audit.record(
                    self.session,
                    actor,
                    "key.sign_in_failed",
                    "key",
                    key.id,
                    after={"reason": reason},
                )
                await self.session.commit()
            raise Unauthenticated(KEY_REFUSED)
        if throttle is not None:
            await throttle.key_succeeded(ip)
        now = utcnow()
        expires_at = now + timedelta(seconds=ttl_s)
        if key.expires_at is not None:
            expires_at = min(expires_at, datetime.fromtimestamp(key.expires_at, UTC))
        token = secrets.token_urlsafe(32)
        record = UserSession(
            id=new_id("ses"),
            tenant_id=key.tenant_id,
            user_id=None,
            key_id=key.id,
            key_hash=digest,
            token_hash=token_hash(token),
            csrf_token=secrets.token_urlsafe(32),
            ip=ip,
            user_agent=(user_agent or "")[:400] or None,
            created_at=now,
            expires_at=expires_at,
        )
        self.session.add(record)
        actor = Principal("key", key.id, key.tenant_id, key.scopes, ip, request_id)
        audit.record(self.session, actor, "key.signed_in", "session", record.id)
        await self.session.commit()
        return key, record, token

    async def _sign_in_failed(
        self,
        tenant: Any,
        user: User | None,
        email: str,
        reason: str,
        ip: str | None,
        request_id: str | None,
    ) -> None:
        """Audit a failed sign-in in the tenant's log (none when the tenant is unknown).

        The actor is an unidentified user (no id): whoever tried is not known to be the
        account's holder."""
        if tenant is None:
            return
        actor = Principal("user", None, tenant.id, frozenset(), ip, request_id)
        audit.record(
            self.session,
            actor,
            "user.sign_in_failed",
            "user",
            user.id if user is not None else None,
            after={"email": email.strip().lower()[:320], "reason": reason},
        )
        await self.session.commit()

    async def sign_out(self, actor: Principal, session_id: str) -> None:
        record = await self.session.get(UserSession, session_id)
        if record is not None and record.revoked_at is None:
            record.revoked_at = utcnow()
            action = "key.signed_out" if record.key_id is not None else "user.signed_out"
            audit.record(self.session, actor, action, "session", record.id)
            await self.session.commit()

    async def resolve_session(self, token: str) -> tuple[User | CachedKey, UserSession] | None:
        """The live session behind a cookie token, with its holder: its user (enabled), or
        its API key as authentication sees it now (valid: not revoked, not expired)."""
        record = await self.session.scalar(
            select(UserSession).where(UserSession.token_hash == token_hash(token))
        )
        if record is None or record.revoked_at is not None or record.expires_at <= utcnow():
            return None
        if record.key_id is not None:
            key = await key_lookup.for_session(self.session, record.key_id, record.key_hash or "")
            if key is None or not key.valid_at(utcnow().timestamp()):
                return None
            return key, record
        user = await self.session.get(User, record.user_id) if record.user_id else None
        if user is None or user.disabled_at is not None:
            return None
        return user, record

    async def _end_sessions(self, user_id: str) -> int:
        now = utcnow()
        rows = await self.session.scalars(
            select(UserSession).where(
                UserSession.user_id == user_id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > now,
            )
        )
        ended = 0
        for record in rows:
            record.revoked_at = now
            ended += 1
        return ended

    def _record_sessions_ended(self, actor: Principal, user: User, count: int) -> None:
        audit.record(
            self.session, actor, "user.sessions_ended", "user", user.id, after={"count": count}
        )

    async def _keys_of_removed(
        self, actor: Principal, user: User
    ) -> tuple[builtins.list[ApiKey], builtins.list[str]]:
        """(the keys the user created, the ids of those revoked now)."""
        if self.keys is None:
            return [], []
        keys = await self.keys.created_by(actor, user.id)
        revoked = await self.keys.revoke_in_transaction(actor, keys) if self.revoke_keys else []
        return keys, revoked

    async def _commit_removal(
        self, user: User, removes_owner: bool, revoked: builtins.list[str]
    ) -> None:
        """Commit a change to ``user``: checked first, when it removes an enabled owner, to
        leave one; then every node forgets the keys ``revoked`` in it."""
        if removes_owner:
            await self._an_owner_is_left(user.tenant_id)
        await self.session.commit()
        if self.keys is not None and revoked:
            await self.keys.invalidate(revoked)

    async def _keep_an_owner(self, user: User, *, removing: bool) -> bool:
        """Whether the change (``removing``: it disables, demotes or deletes ``user``) removes
        an enabled owner; if so, Conflict unless another enabled owner remains. The tenant's
        enabled owners are locked (PostgreSQL), so two concurrent removals cannot both pass."""
        if not (removing and user.role == "owner" and user.disabled_at is None):
            return False
        owners = await self.session.scalars(
            select(User.id)
            .where(
                User.tenant_id == user.tenant_id,
                User.role == "owner",
                User.disabled_at.is_(None),
            )
            .with_for_update()
        )
        if not [owner for owner in owners.all() if owner != user.id]:
            raise Conflict(LAST_OWNER)
        return True

    async def _an_owner_is_left(self, tenant_id: str) -> None:
        """After the change is written (SQLite: this transaction now holds the write lock, so
        concurrent removals are serialised here): Conflict, undoing it, if no enabled owner
        is left."""
        await self.session.flush()
        left = await self.session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.tenant_id == tenant_id, User.role == "owner", User.disabled_at.is_(None))
        )
        if not left:
            await self.session.rollback()
            raise Conflict(LAST_OWNER)

    async def _acting_user(self, actor: Principal) -> User:
        me = await self.session.get(User, actor.actor_id) if actor.actor_id else None
        if me is None or me.tenant_id != actor.tenant_id or me.disabled_at is not None:
            raise Forbidden(power.USER_REFUSED)
        return me

    async def _covers_role(self, actor: Principal, role: str) -> bool:
        """Whether the caller outranks or equals ``role`` (a user) or holds every scope of it
        (a key); Forecourt itself covers every role."""
        if actor.actor_type == "user":
            me = await self._acting_user(actor)
            return power.rank_covers(ROLE_RANK[me.role], ROLE_RANK[role])
        if actor.actor_type == "key":
            return power.role_covered(actor.scopes, ROLE_SCOPES[role])
        return True

    async def _may_change(self, actor: Principal, target: User) -> None:
        """Forbidden unless the caller covers the target's role."""
        if not await self._covers_role(actor, target.role):
            raise Forbidden(power.USER_REFUSED)

    async def _may_assign(self, actor: Principal, role: str) -> None:
        """Users hand out roles up to their own; keys, roles whose scopes they all hold."""
        if not await self._covers_role(actor, role):
            raise Forbidden(f"Your credentials cannot assign the {role} role.")


def user_principal(
    user: User, record: UserSession, ip: str | None, request_id: str | None
) -> Principal:
    return Principal(
        "user", user.id, user.tenant_id, ROLE_SCOPES[user.role], ip, request_id, via_cookie=True
    )


def key_session_principal(key: CachedKey, ip: str | None, request_id: str | None) -> Principal:
    """A key's sign-in session acts as the key: its scopes, tenant, tier and rate limits."""
    return Principal(
        "key",
        key.id,
        key.tenant_id,
        key.scopes,
        ip,
        request_id,
        via_cookie=True,
        tier=key.tier,
        rate_limits=key.rate_limits,
    )
