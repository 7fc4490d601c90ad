"""First start: the default tenant and an owner key, printed once and kept in DATA_DIR."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from forecourt import principal as principals
from forecourt.keys.schemas import KeyCreate
from forecourt.plugins.policy import approve_host_permissions
from forecourt.scopes import SYSTEM_ADMIN
from forecourt.settings import OWNER_KEY_FILE, write_private
from forecourt.tenants import service as tenants
from forecourt.tenants.models import DEFAULT_TENANT_SLUG, Tenant

if TYPE_CHECKING:
    from forecourt.core import Forecourt

log = logging.getLogger("forecourt.bootstrap")

OWNER_KEY_NAME = "owner"
OWNER_TIER = "enterprise"


async def bootstrap(fc: Forecourt) -> str | None:
    """Create the default tenant and owner key if the database is empty; return the key."""
    async with fc.sessionmaker() as session:
        if await session.scalar(select(func.count()).select_from(Tenant)):
            return None
        try:
            tenant = await tenants.ensure(session, DEFAULT_TENANT_SLUG, "Default")
            await session.commit()
        except IntegrityError:
            # Another node bootstrapped at the same moment; it owns the first key.
            return None
        tier = OWNER_TIER if OWNER_TIER in fc.policy.tiers else fc.policy.default_tier
        _, raw = await fc.keys(session).create(
            principals.system(tenant.id),
            KeyCreate(
                name=OWNER_KEY_NAME,
                description="Created on first start.",
                # The first start's owner is the installation's operator as well.
                scopes=["admin", SYSTEM_ADMIN],
                tier=tier,
            ),
            announce=False,
        )
        # The operator's own tenant may use the permissions that reach the host.
        await approve_host_permissions(session, tenant.id)
        await session.commit()
    path = fc.settings.data_dir / OWNER_KEY_FILE
    fc.settings.ensure_data_dir()
    write_private(path, raw + "\n")
    announce_owner_key(path, raw)
    return raw


def announce_owner_key(path: Path, raw: str, stream: TextIO | None = None) -> None:
    """Show the new owner key on a terminal only. Anywhere else (a log file, journald, a
    pipe, a container's log) the output says where the key file is, never the key."""
    out = stream if stream is not None else sys.stderr
    if _is_terminal(out):
        print(
            f"\nForecourt created the owner API key (shown once, also saved to {path}):"
            f"\n\n    {raw}\n",
            file=out,
            flush=True,
        )
        return
    print(
        f"Forecourt created the owner API key and saved it to {path} (readable by its owner"
        " only); it is shown only on a terminal.",
        file=out,
        flush=True,
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
