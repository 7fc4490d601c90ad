"""API keys: create, list, get, update, rotate, revoke, usage; and verification by hash."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt import scopes as scope_rules
from forecourt.audit import service as audit
from forecourt.broadcast import Broadcast
from forecourt.db.base import utcnow
from forecourt.errors import Forbidden, InvalidInput, NotFound
from forecourt.ids import new_id
from forecourt.keys import format as key_format
from forecourt.keys.cache import INVALIDATE_CHANNEL, CachedKey
from forecourt.keys.models import ApiKey, ApiKeyUsage
from forecourt.keys.schemas import KeyCreate, KeyRotate, KeyUpdate
from forecourt.keys.usage import aggregate
from forecourt.pagination import next_cursor, paginate
from forecourt.principal import Principal
from forecourt.ratelimit.policy import Policy, validate_limits


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """What the key service needs from the settings."""

    secret: bytes
    policy: Policy
    environment: str
    rotation_grace_s: int


def status(key: ApiKey, now: datetime | None = None) -> str:
    now = now or utcnow()
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def summary(key: ApiKey) -> dict[str, Any]:
    """What the audit log keeps of a key: no secret, no hash."""
    return {
        "name": key.name,
        "scopes": list(key.scopes),
        "tier": key.tier,
        "rate_limits": dict(key.rate_limits),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


class KeyService:
    def __init__(self, session: AsyncSession, config: KeyConfig, broadcast: Broadcast) -> None:
        self.session = session
        self.config = config
        self.broadcast = broadcast

    async def create(
        self, actor: Principal, data: KeyCreate, *, announce: bool = True
    ) -> tuple[ApiKey, str]:
        """A new key and its full secret (returned this once). ``announce``: publish
        ``key.created`` (off for the owner key made on first start, before any subscriber)."""
        scopes = self._grantable(actor, data.scopes)
        tier = self.config.policy.check_tier(data.tier or self.config.policy.default_tier)
        limits = validate_limits(data.rate_limits)
        expires_at = _future(data.expires_at)
        raw = key_format.generate(data.environment or self.config.environment)
        now = utcnow()
        key = ApiKey(
            id=new_id("key"),
            tenant_id=actor.tenant_id,
            name=data.name,
            description=data.description,
            environment=data.environment or self.config.environment,
            prefix=key_format.display_prefix(raw),
            key_hash=key_format.hash_key(raw, self.config.secret),
            scopes=scopes,
            tier=tier,
            rate_limits=limits,
            expires_at=expires_at,
            created_by=actor.actor_id,
            created_at=now,
            updated_at=now,
        )
        self.session.add(key)
        audit.record(self.session, actor, "key.created", "key", key.id, after=summary(key))
        if announce:
            await self._emit(actor, "key.created", key)
        await self.session.commit()
        return key, raw

    async def page(
        self, actor: Principal, cursor: str | None, limit: int, include_revoked: bool = True
    ) -> tuple[list[ApiKey], str | None]:
        stmt = select(ApiKey).where(ApiKey.tenant_id == actor.tenant_id)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        rows = (await self.session.scalars(paginate(stmt, ApiKey.id, cursor, limit))).all()
        return next_cursor(rows, limit)

    async def get(self, actor: Principal, key_id: str) -> ApiKey:
        key = await self.session.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == actor.tenant_id)
        )
        if key is None:
            raise NotFound(f"No key {key_id!r}.")
        return key

    async def update(self, actor: Principal, key_id: str, data: KeyUpdate) -> ApiKey:
        key = await self.get(actor, key_id)
        if key.revoked_at is not None:
            raise InvalidInput("A revoked key cannot be changed.", field="id")
        before = summary(key)
        fields = data.model_fields_set
        if "name" in fields:
            if data.name is None:
                raise InvalidInput("The name cannot be null.", field="name")
            key.name = data.name
        if "description" in fields:
            key.description = data.description or ""
        if "scopes" in fields:
            if data.scopes is None:
                raise InvalidInput("Scopes cannot be null.", field="scopes")
            key.scopes = self._grantable(actor, data.scopes)
        if "tier" in fields:
            key.tier = self.config.policy.check_tier(data.tier or self.config.policy.default_tier)
        if "rate_limits" in fields:
            key.rate_limits = validate_limits(data.rate_limits or {})
        if "expires_at" in fields:
            key.expires_at = _future(data.expires_at)
        key.updated_at = utcnow()
        audit.record(
            self.session, actor, "key.updated", "key", key.id, before=before, after=summary(key)
        )
        await self.session.commit()
        await self._invalidate(key.id)
        return key

    async def rotate(self, actor: Principal, key_id: str, data: KeyRotate) -> tuple[ApiKey, str]:
        """A new secret; the current one keeps working for the grace period, then stops."""
        key = await self.get(actor, key_id)
        if status(key) != "active":
            raise InvalidInput(
                f"Only active keys can be rotated; this one is {status(key)}.", field="id"
            )
        grace = self.config.rotation_grace_s if data.grace_period_s is None else data.grace_period_s
        raw = key_format.generate(key.environment)
        now = utcnow()
        key.previous_key_hash = key.key_hash if grace > 0 else None
        key.previous_expires_at = now + timedelta(seconds=grace) if grace > 0 else None
        # Flush the move of the old hash first: both columns are unique.
        key.key_hash = "pending-" + new_id("rot")[-40:]
        await self.session.flush()
        key.key_hash = key_format.hash_key(raw, self.config.secret)
        key.prefix = key_format.display_prefix(raw)
        key.updated_at = now
        audit.record(
            self.session,
            actor,
            "key.rotated",
            "key",
            key.id,
            after={"grace_period_s": grace, "prefix": key.prefix},
        )
        await self._emit(actor, "key.rotated", key)
        await self.session.commit()
        await self._invalidate(key.id)
        return key, raw

    async def revoke(self, actor: Principal, key_id: str) -> ApiKey:
        key = await self.get(actor, key_id)
        if key.revoked_at is None:
            before = summary(key)
            key.revoked_at = utcnow()
            key.updated_at = key.revoked_at
            audit.record(
                self.session,
                actor,
                "key.revoked",
                "key",
                key.id,
                before=before,
                after=summary(key),
            )
            await self._emit(actor, "key.revoked", key)
            await self.session.commit()
        await self._invalidate(key.id)
        return key

    async def usage(self, actor: Principal, key_id: str) -> dict[str, Any]:
        key = await self.get(actor, key_id)
        now = utcnow()
        rows = (
            await self.session.scalars(
                select(ApiKeyUsage).where(
                    ApiKeyUsage.key_id == key.id,
                    ApiKeyUsage.tenant_id == actor.tenant_id,
                    ApiKeyUsage.minute >= now - timedelta(days=30),
                )
            )
        ).all()
        return {"key_id": key.id, "last_used_at": key.last_used_at, **aggregate(list(rows), now)}

    def _grantable(self, actor: Principal, requested: list[str]) -> list[str]:
        scopes = scope_rules.validate(requested)
        for scope in scopes:
            if scope not in actor.scopes:
                raise Forbidden(f"You cannot grant {scope!r}: your credentials do not hold it.")
        return scopes

    async def _emit(self, actor: Principal, event_type: str, key: ApiKey) -> None:
        """Forecourt's own event about the key, in the same transaction as the change."""
        from forecourt.events.service import emit

        await emit(
            self.session,
            actor.tenant_id,
            event_type,
            {"key_id": key.id, "name": key.name, "prefix": key.prefix, "scopes": list(key.scopes)},
            subject=key.id,
        )

    async def _invalidate(self, key_id: str) -> None:
        await self.broadcast.publish(INVALIDATE_CHANNEL, key_id)


async def lookup(session: AsyncSession, key_hash: str) -> CachedKey | None:
    """The key whose current or (in its grace period) previous secret hashes to ``key_hash``."""
    row = await session.scalar(
        select(ApiKey).where(or_(ApiKey.key_hash == key_hash, ApiKey.previous_key_hash == key_hash))
    )
    if row is None:
        return None
    via_previous = row.key_hash != key_hash
    stored = row.previous_key_hash if via_previous else row.key_hash
    if stored is None or not hmac.compare_digest(stored, key_hash):
        return None
    return CachedKey(
        id=row.id,
        tenant_id=row.tenant_id,
        scopes=scope_rules.expand(row.scopes),
        tier=row.tier,
        rate_limits=dict(row.rate_limits),
        expires_at=row.expires_at.timestamp() if row.expires_at else None,
        revoked=row.revoked_at is not None,
        via_previous=via_previous,
        previous_expires_at=(
            row.previous_expires_at.timestamp() if row.previous_expires_at else None
        ),
    )


def _future(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when <= utcnow():
        raise InvalidInput("expires_at must be in the future.", field="expires_at")
    return when
