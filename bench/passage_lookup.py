"""The search service's SQL lookup of passages at growing collection sizes, as JSON.

A search reads its hits' chunk rows (text, offsets, term positions) and their documents' ids,
titles and metadata in one SQL query by chunk id (services/search/service.py, `load_passages`).
This builds an embedded SQLite database through the migrations, fills it with `size` synthetic
chunk rows of the size real ones have (1,500 characters of Korean text, a 200-term sparse
vector, 150 terms' positions; 10 chunks a document), and times the lookup of `--hits` random
chunk ids, each in a fresh session as a request has, alone (no uploads, no other threads).

    .venv/bin/python bench/passage_lookup.py --sizes 10000,100000

stdout: {"sizes": [{"chunks", "database_mb", "build_s", "p50_ms", "p95_ms"}], "hits", "lookups"}
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import emit, log

TEXT = "가나다라마바사아자차카타파하 " * 100  # 1,500 characters
CHUNKS_PER_DOCUMENT = 10


def measure(size: int, hits: int, lookups: int, work: Path) -> dict:
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from services.db import make_engine, make_session_factory, upgrade_database
    from services.documents.models import Chunk, Collection, Document, DocumentStatus
    from services.search.service import load_passages
    from services.vectors import SparseVector

    url = f"sqlite:///{work / f'lookup-{size}.db'}"
    started = time.perf_counter()
    upgrade_database(url)
    engine = make_engine(url)
    rnd = random.Random(size)
    with Session(engine) as session:
        collection = Collection(name="bench", profile="bge-m3-ko")
        session.add(collection)
        session.flush()
        collection_id = collection.id
        documents = [
            Document(
                collection_id=collection_id,
                sha256=uuid.uuid4().hex,
                status=DocumentStatus.indexed,
                generation=1,
                indexed_generation=1,
            )
            for _ in range(size // CHUNKS_PER_DOCUMENT)
        ]
        session.add_all(documents)
        session.commit()
        document_ids = [d.id for d in documents]
    chunk_ids: list[uuid.UUID] = []
    with engine.begin() as conn:
        for n, document_id in enumerate(document_ids):
            rows = []
            for ordinal in range(CHUNKS_PER_DOCUMENT):
                chunk_id = uuid.uuid4()
                chunk_ids.append(chunk_id)
                rows.append(
                    {
                        "id": chunk_id,
                        "document_id": document_id,
                        "generation": 1,
                        "ordinal": ordinal,
                        "layout": 0,
                        "text": TEXT,
                        "char_start": 0,
                        "char_end": len(TEXT),
                        "token_count": 300,
                        "sparse": SparseVector(
                            indices=[rnd.randrange(1 << 30) for _ in range(200)],
                            values=[rnd.random() for _ in range(200)],
                        ),
                        "term_spans": {str(rnd.randrange(1 << 30)): [rnd.randrange(1500)] * 6 for _ in range(150)},
                        "sentence_starts": list(range(60, len(TEXT), 60)),
                    }
                )
            conn.execute(insert(Chunk), rows)
            if n % 1000 == 999:
                log(f"{size}: {(n + 1) * CHUNKS_PER_DOCUMENT} chunk rows")
    build_s = time.perf_counter() - started
    sessions = make_session_factory(engine)
    times = []
    for _ in range(lookups):
        ids = rnd.sample(chunk_ids, hits)
        with sessions() as session:
            t = time.perf_counter()
            found = load_passages(session, collection_id, ids)
            times.append((time.perf_counter() - t) * 1000)
        assert len(found) == hits
    engine.dispose()
    database = work / f"lookup-{size}.db"
    return {
        "chunks": size,
        "database_mb": round(database.stat().st_size / 2**20, 1),
        "build_s": round(build_s, 1),
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(sorted(times)[int(0.95 * len(times))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    parser.add_argument("--hits", type=int, default=10, help="chunk ids per lookup (a search's top_k)")
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="saekin-lookup-"))
    try:
        sizes = [measure(int(s), args.hits, args.lookups, work) for s in args.sizes.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit({"sizes": sizes, "hits": args.hits, "lookups": args.lookups})


if __name__ == "__main__":
    main()
