"""chunks.stem_spans -> chunks.term_spans: the places of every content morpheme, not only of stems

Highlights now come from the chunk's own morphemes (nouns too, at morpheme boundaries), so the
ingest stage stores all of them: ``{"terms": [[term id, start, end], ...]}``. Rows written before
keep their value, a plain list of verb/adjective stems, which the JSON's shape tells apart; search
highlights such chunks by analyzing a few words around the candidate places (see
``KoreanAnalyzer.highlights_many``). Renaming keeps every row as it is: no table rewrite.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE ... RENAME COLUMN on both SQLite (3.25+) and PostgreSQL; batch mode would copy the table.
    op.alter_column("chunks", "stem_spans", new_column_name="term_spans")


def downgrade() -> None:
    # Code before 0006 reads a list of [term id, start, end] and keeps the entries with a stem's id:
    # a new row's "terms" list (noun-noun bigram entries dropped) serves it as such.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE chunks SET term_spans = (SELECT coalesce(jsonb_agg(e), '[]'::jsonb)"
            " FROM jsonb_array_elements(term_spans -> 'terms') AS e WHERE jsonb_array_length(e) = 3)"
            " WHERE jsonb_typeof(term_spans) = 'object'"
        )
    else:
        op.execute(
            "UPDATE chunks SET term_spans = (SELECT coalesce(json_group_array(json(e.value)), '[]')"
            " FROM json_each(chunks.term_spans, '$.terms') AS e WHERE json_array_length(e.value) = 3)"
            " WHERE json_type(term_spans) = 'object'"
        )
    op.alter_column("chunks", "term_spans", new_column_name="stem_spans")
