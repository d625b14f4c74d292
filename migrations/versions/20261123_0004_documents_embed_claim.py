"""documents.embed_claim / embed_claimed_until: which embed task holds a waiting document, and until when

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: documents waiting when this revision is applied are unclaimed, as they should be.
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("embed_claim", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("embed_claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("embed_claimed_until")
        batch_op.drop_column("embed_claim")
