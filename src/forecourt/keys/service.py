"""API keys: create, list, get, update, rotate, revoke, usage; and verification by hash."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt import power
from forecourt import scopes as scope_rules
from forecourt.audit import service as audit
from forecourt.broadcast import Broadcast
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, Forbidden, InvalidInput, NotFound
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
        tier_limits = self._tier_limits(tier)
        power.check_child_key(
            await self.actor_power(actor),
            tier_limits=tier_limits,
            limits=power.effective_limits(tier_limits, limits),
            expires_at=expires_at,
        )
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

    async def get_covered(self, actor: Principal, key_id: str) -> ApiKey:
        """The key, if the caller holds every scope it grants; Forbidden (saying nothing of
        what it holds) otherwise."""
        key = await self.get(actor, key_id)
        power.check_may_act_on_key(actor.scopes, key.scopes)
        return key

    async def actor_power(self, actor: Principal) -> power.Power:
        """The caller's power; for a key, its tier, limits and expiry come from its own row."""
        if actor.actor_type != "key" or actor.actor_id is None:
            return power.Power(frozenset(actor.scopes))
        own = await self.session.scalar(
            select(ApiKey).where(ApiKey.id == actor.actor_id, ApiKey.tenant_id == actor.tenant_id)
        )
        if own is None:
            raise Forbidden(power.KEY_REFUSED)
        found = self._power(own)
        # The narrower of what the request was authenticated with and what the row holds now.
        return replace(found, scopes=found.scopes & frozenset(actor.scopes))

    def _power(self, key: ApiKey) -> power.Power:
        return power.key_power(
            key.scopes, self._tier_limits(key.tier), key.rate_limits, key.expires_at
        )

    def _tier_limits(self, tier: str) -> dict[str, int]:
        policy = self.config.policy
        return policy.tiers.get(tier, policy.tiers[policy.default_tier])

    async def update(self, actor: Principal, key_id: str, data: KeyUpdate) -> ApiKey:
        key = await self.get_covered(actor, key_id)
        if key.revoked_at is not None:
            raise Conflict("A revoked key cannot be changed.")
        before = summary(key)
        fields = data.model_fields_set
        if "name" in fields and data.name is None:
            raise InvalidInput("The name cannot be null.", field="name")
        if "scopes" in fields and data.scopes is None:
            raise InvalidInput("Scopes cannot be null.", field="scopes")
        # Everything is checked before anything changes: a refusal leaves the row as it was.
        scopes = self._grantable(actor, data.scopes) if data.scopes is not None else key.scopes
        tier = key.tier
        if "tier" in fields:
            tier = self.config.policy.check_tier(data.tier or self.config.policy.default_tier)
        limits = key.rate_limits
        if "rate_limits" in fields:
            limits = validate_limits(data.rate_limits or {})
        expires_at = _future(data.expires_at) if "expires_at" in fields else key.expires_at
        await self._check_handed_out(actor, key, fields, tier, limits, expires_at)
        if data.name is not None:
            key.name = data.name
        if "description" in fields:
            key.description = data.description or ""
        key.scopes = scopes
        key.tier = tier
        key.rate_limits = limits
        key.expires_at = expires_at
        key.updated_at = utcnow()
        audit.record(
            self.session, actor, "key.updated", "key", key.id, before=before, after=summary(key)
        )
        await self.session.commit()
        await self._invalidate(key.id)
        return key

    async def rotate(self, actor: Principal, key_id: str, data: KeyRotate) -> tuple[ApiKey, str]:
        """A new secret; the current one keeps working for the grace period, then stops."""
        key = await self.get_covered(actor, key_id)
        if actor.actor_type != "key" or actor.actor_id != key.id:
            # The caller receives the new secret: the key must hold no more than it may make.
            power.check_may_take_over(await self.actor_power(actor), self._power(key))
        if status(key) != "active":
            raise Conflict(f"Only active keys can be rotated; this one is {status(key)}.")
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
        key = await self.get_covered(actor, key_id)
        if key.revoked_at is None:
            await self._revoke(actor, key)
            await self.session.commit()
        await self._invalidate(key.id)
        return key

    async def created_by(self, actor: Principal, user_id: str) -> list[ApiKey]:
        """The keys of the caller's tenant that ``user_id`` created, oldest first."""
        rows = await self.session.scalars(
            select(ApiKey)
            .where(ApiKey.tenant_id == actor.tenant_id, ApiKey.created_by == user_id)
            .order_by(ApiKey.created_at, ApiKey.id)
        )
        return list(rows.all())

    async def revoke_in_transaction(self, actor: Principal, keys: list[ApiKey]) -> list[str]:
        """Revoke ``keys`` in the caller's transaction (the caller commits, then calls
        ``invalidate`` with the returned ids so every node forgets them)."""
        revoked = []
        for key in keys:
            if key.revoked_at is None:
                await self._revoke(actor, key)
                revoked.append(key.id)
        return revoked

    async def invalidate(self, key_ids: list[str]) -> None:
        for key_id in key_ids:
            await self._invalidate(key_id)

    async def _revoke(self, actor: Principal, key: ApiKey) -> None:
        before = summary(key)
        key.revoked_at = utcnow()
        key.updated_at = key.revoked_at
        audit.record(
            self.session, actor, "key.revoked", "key", key.id, before=before, after=summary(key)
        )
        await self._emit(actor, "key.revoked", key)

    async def usage(self, actor: Principal, key_id: str) -> dict[str, Any]:
        key = await self.get_covered(actor, key_id)
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
        power.check_grant(actor.scopes, scopes)
        return scopes

    async def _check_handed_out(
        self,
        actor: Principal,
        key: ApiKey,
        fields: set[str],
        tier: str,
        limits: dict[str, int],
        expires_at: datetime | None,
    ) -> None:
        """Forbidden if the new tier, limits or expiry exceed what the caller may hand out:
        its own power for another key, the key's current values for itself."""
        tier_changed = "tier" in fields
        limits_changed = tier_changed or "rate_limits" in fields
        expiry_changed = "expires_at" in fields
        if not (limits_changed or expiry_changed):
            return
        new_tier_limits = self._tier_limits(tier)
        own = actor.actor_type == "key" and actor.actor_id == key.id
        check = power.check_self_update if own else power.check_child_key
        check(
            self._power(key) if own else await self.actor_power(actor),
            tier_limits=new_tier_limits if tier_changed else None,
            limits=power.effective_limits(new_tier_limits, limits) if limits_changed else None,
            expires_at=expires_at,
            check_expiry=expiry_changed,
        )

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
    return _cached(row, via_previous)


async def for_session(session: AsyncSession, key_id: str, key_hash: str) -> CachedKey | None:
    """The key ``key_id`` as authentication sees its secret of hash ``key_hash`` now (a key's
    sign-in session checks it on each request: revoked, expired, deleted, or rotated past
    that secret's grace, the session is refused)."""
    row = await session.get(ApiKey, key_id, populate_existing=True)
    if row is None:
        return None
    if hmac.compare_digest(row.key_hash, key_hash):
        return _cached(row, False)
    if row.previous_key_hash is not None and hmac.compare_digest(row.previous_key_hash, key_hash):
        return _cached(row, True)  # valid until the rotation's grace ends
    return None


def _cached(row: ApiKey, via_previous: bool) -> CachedKey:
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
