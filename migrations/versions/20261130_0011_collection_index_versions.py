"""collections: the index a collection's searches address, its build count, analyzer version, reindex state

A reindex builds a new index beside the live one and switches to it (services/collections/reindex.py):
``index_name`` is what searches and writes address (the Qdrant Edge shard; on a Qdrant server an
alias once reindexed), ``index_version`` numbers the builds (the physical name of build n > 1 ends
in '-v<n>'), ``analyzer_version`` says which analyzer made the chunks' sparse vectors (NULL:
older than this revision), ``reindex`` the running or last reindex (status, target, progress).
Existing rows get the name the code derived before (saekin_<name>_<profile>, '-' spelled '_').

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: a batch copy of collections is not needed.
    op.add_column("collections", sa.Column("index_name", sa.String(255), nullable=True))
    op.add_column("collections", sa.Column("index_version", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("collections", sa.Column("analyzer_version", sa.String(64), nullable=True))
    op.add_column("collections", sa.Column("reindex", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))
    op.execute(
        "UPDATE collections SET index_name = "
        "'saekin_' || replace(name, '-', '_') || '_' || replace(profile, '-', '_') WHERE index_name IS NULL"
    )


def downgrade() -> None:
    # Code before 0011 derives the index name from name and profile: a collection reindexed since
    # addresses another index, which that code cannot find (reindex it again after upgrading).
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_column("reindex")
        batch_op.drop_column("analyzer_version")
        batch_op.drop_column("index_version")
        batch_op.drop_column("index_name")
