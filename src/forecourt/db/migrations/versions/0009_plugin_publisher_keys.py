"""the publisher keys the operator trusts to sign plugin packages

``plugin_publisher_keys``: a name, the public key (``ed25519:<base64>``), its fingerprint
(unique: one row per key), when and by whom ("operator") it was added. The keys of
FORECOURT_PLUGIN_TRUSTED_KEYS stay trusted beside them and are not stored.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from forecourt.db.base import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plugin_publisher_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("public_key", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_publisher_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_plugin_publisher_keys_fingerprint")),
    )


def downgrade() -> None:
    op.drop_table("plugin_publisher_keys")
