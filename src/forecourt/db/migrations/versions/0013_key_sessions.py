"""sign-in sessions of API keys: ``user_sessions.key_id``

A session belongs to a user or to an API key (the dashboard's sign-in with a key): ``user_id``
becomes nullable, ``key_id`` (deleted with its key) and ``key_hash`` (the hash of the secret
that opened the session, which ends with that secret's rotation grace) are added, and a check
keeps exactly one of ``user_id`` and ``key_id`` set. Going down, the keys' sessions are deleted
first (a user's session needs a user).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ID_LENGTH = 40
HASH_LENGTH = 64
ONE_HOLDER = "(user_id IS NULL) <> (key_id IS NULL)"


def upgrade() -> None:
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.String(length=ID_LENGTH), nullable=True)
        batch_op.add_column(sa.Column("key_id", sa.String(length=ID_LENGTH), nullable=True))
        batch_op.add_column(sa.Column("key_hash", sa.String(length=HASH_LENGTH), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_user_sessions_key_id_api_keys"),
            "api_keys",
            ["key_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_user_sessions_key_id"), ["key_id"], unique=False)
        batch_op.create_check_constraint(batch_op.f("ck_user_sessions_one_holder"), ONE_HOLDER)


def downgrade() -> None:
    op.execute("DELETE FROM user_sessions WHERE key_id IS NOT NULL")
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_user_sessions_one_holder"), type_="check")
        batch_op.drop_index(batch_op.f("ix_user_sessions_key_id"))
        batch_op.drop_constraint(batch_op.f("fk_user_sessions_key_id_api_keys"), type_="foreignkey")
        batch_op.drop_column("key_hash")
        batch_op.drop_column("key_id")
        batch_op.alter_column("user_id", existing_type=sa.String(length=ID_LENGTH), nullable=False)
