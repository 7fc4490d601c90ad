"""The publisher keys this installation trusts to sign plugin packages.

Trust spans tenants: a package installed for the installation runs for every tenant it is
available to, so trusting a publisher is the operator's (``system:admin``) alone. The keys
come from two places, and a package verifies with any of them:

- the database: added and removed through the API or the CLI, each with a name, when it was
  added and by whom ("operator"); each change is written to the log of every tenant, naming
  the actor "operator" (the operator's own tenant names its key or user);
- the configuration (FORECOURT_PLUGIN_TRUSTED_KEYS): listed beside them, changed only where
  the setting is set, so they cannot be removed here.

Removing a key refuses the packages it signed from then on; versions installed before stay
installed (their signature was checked when they were).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.audit import service as audit
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, InvalidInput, NotFound
from forecourt.ids import new_id
from forecourt.plugins.integrity import fingerprint, parse_public_key, public_key_string
from forecourt.plugins.models import PublisherKey
from forecourt.principal import Principal
from forecourt.settings import Settings
from forecourt.tenants import service as tenants

FROM_DATABASE = "database"
FROM_CONFIGURATION = "configuration"
CONFIGURATION_NAME = "FORECOURT_PLUGIN_TRUSTED_KEYS"
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class TrustedKey:
    """A trusted key as listed: a row of the database, or one of the setting (no id, no
    time, not removable)."""

    id: str | None
    name: str
    public_key: str
    fingerprint: str
    source: str
    created_at: datetime | None
    created_by: str | None


def _from_row(row: PublisherKey) -> TrustedKey:
    return TrustedKey(
        id=row.id,
        name=row.name,
        public_key=row.public_key,
        fingerprint=row.fingerprint,
        source=FROM_DATABASE,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def configured(settings: Settings) -> list[TrustedKey]:
    """The keys of FORECOURT_PLUGIN_TRUSTED_KEYS (checked when the settings were read)."""
    return [
        TrustedKey(
            id=None,
            name=f"{CONFIGURATION_NAME}[{index}]",
            public_key=key,
            fingerprint=fingerprint(key),
            source=FROM_CONFIGURATION,
            created_at=None,
            created_by=None,
        )
        for index, key in enumerate(settings.plugin_trusted_keys)
    ]


async def trusted_keys(session: AsyncSession, settings: Settings) -> list[str]:
    """Every key a package's signature may verify with: the setting's, then the database's."""
    stored = await session.scalars(select(PublisherKey.public_key).order_by(PublisherKey.id))
    return [*settings.plugin_trusted_keys, *stored.all()]


def summary(key: TrustedKey | PublisherKey) -> dict[str, str]:
    """What the audit log keeps of a key."""
    return {"name": key.name, "fingerprint": key.fingerprint, "public_key": key.public_key}


class PublisherKeys:
    """Trusting and no longer trusting publishers (the operator's; routes check the scope)."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    async def list(self) -> list[TrustedKey]:
        """The setting's keys, then the database's, oldest first."""
        rows = await self.session.scalars(select(PublisherKey).order_by(PublisherKey.id))
        return [*configured(self.settings), *(_from_row(row) for row in rows.all())]

    async def add(self, actor: Principal, name: str, public_key: str) -> TrustedKey:
        """Trust ``public_key``: InvalidInput if it is not an Ed25519 public key string,
        Conflict if it is trusted already (here or in the configuration)."""
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidInput(f"A name of 1 to {MAX_NAME_CHARS} characters.", field="name")
        try:
            # Written back as integrity writes it: one spelling of each key.
            text = public_key_string(parse_public_key(public_key.strip()))
        except ValueError as exc:
            raise InvalidInput(
                f"Not a publisher key: {exc} (ed25519:<base64 of the 32-byte public key>).",
                field="public_key",
            ) from None
        found = fingerprint(text)
        for key in await self.list():
            if key.fingerprint == found:
                where = "the configuration" if key.id is None else f"{key.id} ({key.name})"
                raise Conflict(f"The key {found} is trusted already: {where}.", fingerprint=found)
        row = PublisherKey(
            id=new_id("pbk"),
            name=name,
            public_key=text,
            fingerprint=found,
            created_at=utcnow(),
            created_by=audit.OPERATOR,
        )
        self.session.add(row)
        await self._record(actor, "plugin_publisher_key.added", row, after=summary(row))
        try:
            await self.session.commit()
        except IntegrityError:  # the same key, added at the same moment elsewhere
            await self.session.rollback()
            raise Conflict(f"The key {found} is trusted already.", fingerprint=found) from None
        return _from_row(row)

    async def remove(self, actor: Principal, key_id: str) -> None:
        """Stop trusting a key of the database (NotFound for another id: the configuration's
        keys have none)."""
        row = await self.session.get(PublisherKey, key_id)
        if row is None:
            raise NotFound(f"No publisher key {key_id!r} (the configuration's cannot be removed).")
        await self._record(actor, "plugin_publisher_key.removed", row, before=summary(row))
        await self.session.delete(row)
        await self.session.commit()

    async def _record(
        self,
        actor: Principal,
        action: str,
        row: PublisherKey,
        *,
        before: dict[str, str] | None = None,
        after: dict[str, str] | None = None,
    ) -> None:
        """The change in the actor's log by its actor, and in every other tenant's by
        "operator"."""
        target = ("plugin_publisher_key", row.id)
        audit.record(self.session, actor, action, *target, before=before, after=after)
        audit.record_operator(
            self.session,
            action,
            *target,
            await tenants.all_ids(self.session),
            before=before,
            after=after,
            skip=actor.tenant_id,
        )
