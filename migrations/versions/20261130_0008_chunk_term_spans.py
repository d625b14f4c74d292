"""chunks.stem_spans -> chunks.term_spans: the places of every content morpheme, not only of stems

Highlights now come from the chunk's own morphemes (nouns too, at morpheme boundaries), so the
ingest stage stores all of them: ``{"<term id>": [start, end, start, end, ...], ...}``. Rows
written before keep their value, a plain list of [term id, start, end] of verb/adjective stems,
which the JSON's shape (array, not object) tells apart; search highlights such chunks by analyzing
a few words around the candidate places (see ``KoreanAnalyzer.highlights_many``). Renaming keeps
every row as it is: no table rewrite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE ... RENAME COLUMN on both SQLite (3.25+) and PostgreSQL; batch mode would copy the table.
    op.alter_column("chunks", "stem_spans", new_column_name="term_spans")


def downgrade() -> None:
    # Code before 0008 reads a list of stems; for NULL it analyzes the words around candidate
    # places, as it did for chunks ingested before 0003. Rows of the new shape become NULL.
    is_object = "jsonb_typeof(term_spans)" if op.get_bind().dialect.name == "postgresql" else "json_type(term_spans)"
    op.execute(f"UPDATE chunks SET term_spans = NULL WHERE {is_object} = 'object'")
    op.alter_column("chunks", "term_spans", new_column_name="stem_spans")
