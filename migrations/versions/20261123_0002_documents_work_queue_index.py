"""index the documents that wait for a stage (the embed worker's batch query, restart recovery)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index("ix_documents_status_stage_updated", ["status", "stage", "updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_status_stage_updated")
