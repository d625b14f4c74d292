"""collections.model / model_sha256 / deleting_at, chunks.sentence_starts: what RAG serving needs

The collection records the model that embedded it (hub id or local path, and the sha256 of its
weights) so that a service running other weights refuses to mix them in; `deleting_at` marks a
collection whose deletion runs in the background (uploads and searches then answer 409/404).
`sentence_starts` holds the offsets (relative to the chunk) of the sentences that start inside a
chunk, from the ingest stage's one Kiwi pass, so that context assembly can trim at a sentence
boundary without analysing the text again. NULL for chunks ingested before this revision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("deleting_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sentence_starts", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("sentence_starts")
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_column("deleting_at")
        batch_op.drop_column("model_sha256")
        batch_op.drop_column("model")
