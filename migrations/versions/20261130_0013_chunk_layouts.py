"""chunks.layout, collections.chunk_layout: a reindex re-chunks beside the live chunks

A reindex to a model with a smaller token budget chunks the documents again
(services/collections/reindex.py). The new chunk rows are written beside the live ones, for the
same document generations, under the next ``layout``; searches keep reading the live layout
(``collections.chunk_layout``) until the switch flips it, and the old rows go after it. Existing
rows and collections are layout 0. The unique key of a chunk gains the layout.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("collections", sa.Column("chunk_layout", sa.Integer(), nullable=False, server_default="0"))
    # SQLite alters a constraint by copying the table (batch mode).
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("layout", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_constraint("uq_chunks_document_generation_ordinal", type_="unique")
        batch_op.create_unique_constraint(
            "uq_chunks_document_generation_layout_ordinal", ["document_id", "generation", "layout", "ordinal"]
        )


def downgrade() -> None:
    # Rows of other layouts than a collection's live one would break the old unique key.
    op.execute(
        "DELETE FROM chunks WHERE layout <> (SELECT c.chunk_layout FROM documents d JOIN collections c "
        "ON c.id = d.collection_id WHERE d.id = chunks.document_id)"
    )
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_constraint("uq_chunks_document_generation_layout_ordinal", type_="unique")
        batch_op.create_unique_constraint(
            "uq_chunks_document_generation_ordinal", ["document_id", "generation", "ordinal"]
        )
        batch_op.drop_column("layout")
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_column("chunk_layout")
