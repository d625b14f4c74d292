"""collections.filter_indexes: the metadata keys a collection declares payload indexes for

A mapping of metadata key -> index kind (keyword, integer, float, datetime, bool), set with
PATCH /v1/collections/{c}; the index gets those payload indexes at once and again when a
reindex builds a new one (services/collections/service.py, services/collections/reindex.py).
NULL: none declared (indexes are still made when a filter first uses a key).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "collections", sa.Column("filter_indexes", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True)
    )


def downgrade() -> None:
    # The payload indexes stay on the index (code before 0014 treats them as made on first use).
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_column("filter_indexes")
