"""REST: /api/v1/keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, status

from forecourt.http.deps import DbSession, ForecourtDep, Paging, require
from forecourt.http.guard import GuardedRoute
from forecourt.keys.models import ApiKey
from forecourt.keys.schemas import (
    KeyCreate,
    KeyCreated,
    KeyOut,
    KeyRotate,
    KeyUpdate,
    KeyUsage,
    TierOut,
    TiersOut,
)
from forecourt.keys.service import status as key_status
from forecourt.principal import Principal
from forecourt.schemas import Page

KeysRead = Annotated[Principal, Depends(require("keys:read"))]
KeysWrite = Annotated[Principal, Depends(require("keys:write"))]

router = APIRouter(route_class=GuardedRoute, prefix="/api/v1/keys", tags=["keys"])


def _out(key: ApiKey) -> KeyOut:
    return KeyOut.model_validate({**_fields(key), "status": key_status(key)})


def _created(key: ApiKey, raw: str) -> KeyCreated:
    return KeyCreated.model_validate({**_fields(key), "status": key_status(key), "key": raw})


def _fields(key: ApiKey) -> dict[str, Any]:
    return {name: getattr(key, name) for name in KeyOut.model_fields if name != "status"}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def create_key(
    body: KeyCreate, actor: KeysWrite, fc: ForecourtDep, session: DbSession
) -> KeyCreated:
    """Create a key. The full key is in the response, this once.

    A key holds no scope its creator lacks (``system:admin`` needs ``system:admin``) and
    expires no later than its creator; its tier and limits are no higher than its creator's
    unless the creator holds ``admin`` (403 otherwise)."""
    key, raw = await fc.keys(session).create(actor, body)
    return _created(key, raw)


@router.get("", response_model=Page[KeyOut])
async def list_keys(
    actor: KeysRead, fc: ForecourtDep, session: DbSession, page: Paging
) -> Page[KeyOut]:
    """Keys of the caller's tenant, newest first."""
    rows, cursor = await fc.keys(session).page(actor, page.cursor, page.limit)
    return Page[KeyOut](items=[_out(k) for k in rows], next_cursor=cursor)


@router.get("/tiers", response_model=TiersOut)
async def list_tiers(_: KeysRead, fc: ForecourtDep) -> TiersOut:
    """The rate-limit tiers a key may be given, with their limits per window, and the default
    one. Creating a key with a tier above your own still needs ``admin``."""
    policy = fc.policy
    return TiersOut(
        default=policy.default_tier,
        items=[TierOut(name=name, limits=limits) for name, limits in policy.tiers.items()],
    )


@router.get("/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, actor: KeysRead, fc: ForecourtDep, session: DbSession) -> KeyOut:
    return _out(await fc.keys(session).get(actor, key_id))


@router.patch("/{key_id}", response_model=KeyOut)
async def update_key(
    key_id: str,
    body: KeyUpdate,
    actor: KeysWrite,
    fc: ForecourtDep,
    session: DbSession,
) -> KeyOut:
    """Change name, description, scopes, tier, limits or expiry; omitted fields stay.

    Only a caller holding every scope of the key may change it (403 otherwise, whatever the
    key holds). New values follow the rules of creation; a key changing itself may lower its
    tier, limits and expiry, never raise or extend them (``admin`` or not)."""
    return _out(await fc.keys(session).update(actor, key_id, body))


@router.post("/{key_id}/rotate", response_model=KeyCreated)
async def rotate_key(
    key_id: str,
    actor: KeysWrite,
    fc: ForecourtDep,
    session: DbSession,
    body: KeyRotate | None = None,
) -> KeyCreated:
    """A new secret. The old one keeps working for ``grace_period_s`` (24 h by default).

    The caller receives the secret: another key is rotated only by a caller that could have
    created it (its scopes and expiry, and its tier and limits unless the caller is admin)."""
    key, raw = await fc.keys(session).rotate(actor, key_id, body or KeyRotate())
    return _created(key, raw)


@router.post("/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: str, actor: KeysWrite, fc: ForecourtDep, session: DbSession) -> KeyOut:
    """Stop the key at once, on every node. Needs every scope the key holds."""
    return _out(await fc.keys(session).revoke(actor, key_id))


@router.delete("/{key_id}", response_model=KeyOut)
async def delete_key(key_id: str, actor: KeysWrite, fc: ForecourtDep, session: DbSession) -> KeyOut:
    """Same as revoke: keys are kept, revoked, for the audit trail."""
    return _out(await fc.keys(session).revoke(actor, key_id))


@router.get("/{key_id}/usage", response_model=KeyUsage)
async def key_usage(key_id: str, actor: KeysRead, fc: ForecourtDep, session: DbSession) -> KeyUsage:
    """Requests per minute (last hour), hour (last day) and day (last 30 days). Needs every
    scope the key holds."""
    await fc.usage.flush()
    return KeyUsage.model_validate(await fc.keys(session).usage(actor, key_id))
