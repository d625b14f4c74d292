"""documents.indexed_title / indexed_metadata: what search shows with the searchable generation

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("indexed_title", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("indexed_metadata", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))
    # Until now search showed the latest upload's title and metadata: start from those.
    op.execute(
        "UPDATE documents SET indexed_title = title, indexed_metadata = metadata WHERE indexed_generation IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("indexed_metadata")
        batch_op.drop_column("indexed_title")
