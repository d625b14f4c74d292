"""documents: one lease for every claimed stage (prepare and embed), and the stage's attempts

``embed_claim``/``embed_claimed_until`` held only the embed stage's claim; they become
``lease_owner``/``lease_until``, the lease of whichever stage holds the document (a worker renews it
while it works; an expired one is taken over by another worker), and ``attempts`` counts the claims
of the current stage (a document fails once it reaches SAEKIN_STAGE_MAX_ATTEMPTS). Renaming keeps
every row as it is; ``attempts`` starts at 0 for every document.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE ... RENAME COLUMN on both SQLite (3.25+) and PostgreSQL; batch mode would copy the table.
    op.alter_column("documents", "embed_claim", new_column_name="lease_owner")
    op.alter_column("documents", "embed_claimed_until", new_column_name="lease_until")
    op.add_column("documents", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("attempts")
    op.alter_column("documents", "lease_until", new_column_name="embed_claimed_until")
    op.alter_column("documents", "lease_owner", new_column_name="embed_claim")
