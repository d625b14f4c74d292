"""documents: one document per content in a collection among those without an external_id

Uploads without an ``external_id`` are deduplicated by the sha256 of their bytes. That was a
check-then-insert, so concurrent identical uploads each inserted a row (16 parallel uploads of one
text gave up to 5 documents). A partial unique index on (collection_id, sha256) WHERE external_id
IS NULL now makes the database refuse the second row; the upload that loses the race takes the
winner's document (services/documents/lifecycle.py, services/dispatch.intake).

Duplicates stored before are merged first: in each group the oldest document (created_at, then id)
is kept, with its id, title, metadata, status and chunks, and the younger ones are deleted with
their chunk rows and stored source. Nothing is lost that the kept document does not hold: every
duplicate has the same bytes (the same sha256), so its source and chunks are the kept one's; a
duplicate differs at most in its title and metadata, which under one-at-a-time uploads a later
upload of the same content would have applied to the kept document as a new generation, and which
its client can apply again the same way. The deleted documents' points stay in the vector index
(a migration cannot reach Qdrant) where no search shows them: search keeps only hits whose chunk
row exists. The number of merged documents is printed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX = "uq_documents_collection_sha256_no_external_id"


def upgrade() -> None:
    conn = op.get_bind()
    groups = conn.execute(
        sa.text(
            "SELECT collection_id, sha256 FROM documents WHERE external_id IS NULL "
            "GROUP BY collection_id, sha256 HAVING COUNT(*) > 1"
        )
    ).all()
    merged = 0
    for collection_id, sha256 in groups:
        ids = [
            row[0]
            for row in conn.execute(
                sa.text(
                    "SELECT id FROM documents WHERE collection_id = :c AND sha256 = :s AND external_id IS NULL "
                    "ORDER BY created_at, id"
                ),
                {"c": collection_id, "s": sha256},
            )
        ]
        for younger in ids[1:]:
            # Explicit deletes: SQLite migrations run with foreign keys (and so cascades) off.
            for table in ("chunks", "document_sources"):
                conn.execute(sa.text(f"DELETE FROM {table} WHERE document_id = :d"), {"d": younger})
            conn.execute(sa.text("DELETE FROM documents WHERE id = :d"), {"d": younger})
            merged += 1
    if merged:
        print(f"0010: merged {merged} duplicate documents into the oldest of their {len(groups)} groups")
    op.create_index(
        INDEX,
        "documents",
        ["collection_id", "sha256"],
        unique=True,
        postgresql_where=sa.text("external_id IS NULL"),
        sqlite_where=sa.text("external_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="documents")
