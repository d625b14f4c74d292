"""Sparse (Kiwi morpheme) retrieval quality on AutoRAG (or a BEIR-like folder): Saekin against plain Kiwi BM25.

Runs the same measurement as ``tests/e2e/test_eval.py`` (the real pipeline and search service in
sparse mode, chunks cut by a twin tokenizer trained on the corpus, overlap 64 tokens) and, as the
yardstick the held-out sets are judged by, plain BM25 over Kiwi morphemes computed here in numpy
over whole documents (k1 1.2, b 0.75, Lucene IDF; not product code). Two plain variants:

* ``plain_all``: every morpheme (particles and endings included), punctuation and symbols excluded;
* ``plain_content``: nouns of every kind (NNB included), numerals, roots, verb/adjective stems,
  foreign words, numbers and hanja, as ``form/tag``.

Prints one JSON object: ``{"dataset", "n_queries", "saekin": {metrics}, "plain_all": {...},
"plain_content": {...}, "timings"}`` with recall@1/3/5/10 and mrr@10.

    .venv/bin/python bench/sparse_quality.py [--dataset ../shared/data/autorag-ko] [--no-saekin]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DEFAULT_CORPUS, emit, log, make_work_dir

KS = (1, 3, 5, 10)
REPORTED = ("recall@1", "recall@3", "recall@5", "recall@10", "mrr@10")
_PUNCT = frozenset({"SF", "SP", "SS", "SSO", "SSC", "SE", "SO", "SW", "SB", "UN"})
_CONTENT = ("NNG", "NNP", "NNB", "NR", "XR", "VV", "VA", "SL", "SN", "SH")


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(metrics[key], 4) for key in REPORTED}


def _plain_tokens(kiwi, texts: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    every, content = [], []
    for tokens in (kiwi.tokenize(text) for text in texts):
        every.append([f"{t.form}/{t.tag}" for t in tokens if t.tag not in _PUNCT])
        content.append([f"{t.form}/{t.tag.split('-')[0]}" for t in tokens if t.tag.split("-")[0] in _CONTENT])
    return every, content


def _bm25_runs(
    doc_ids: list[str], docs: list[list[str]], queries: dict[str, list[str]], *, k1: float = 1.2, b: float = 0.75
) -> dict[str, list[str]]:
    import numpy as np

    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, tokens in enumerate(docs):
        for token, count in Counter(tokens).items():
            rows.append(i)
            cols.append(vocab.setdefault(token, len(vocab)))
            vals.append(count)
    tf = np.zeros((len(docs), len(vocab)), dtype=np.float32)
    tf[rows, cols] = vals
    lengths = np.array([len(d) for d in docs], dtype=np.float32)
    df = (tf > 0).sum(axis=0)
    idf = np.log1p((len(docs) - df + 0.5) / (df + 0.5))
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    weights = tf * (k1 + 1) / (tf + norm[:, None]) * idf[None, :]
    runs: dict[str, list[str]] = {}
    for qid, tokens in queries.items():
        columns = [vocab[t] for t in tokens if t in vocab]
        if not columns:
            runs[qid] = []
            continue
        scores = weights[:, columns].sum(axis=1)  # repeated query terms count again, as in Okapi BM25
        order = np.argsort(-scores, kind="stable")[:100]
        runs[qid] = [doc_ids[i] for i in order if scores[i] > 0]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--no-saekin", action="store_true", help="only the plain Kiwi BM25 baselines")
    parser.add_argument("--work-dir", type=Path, default=None, help="parent of the run's data folder")
    args = parser.parse_args()

    from kiwipiepy import Kiwi

    from services.evaluation.datasets import load_dataset
    from services.evaluation.metrics import evaluate
    from services.ingest.normalize import normalize_text

    dataset = load_dataset(args.dataset)
    result: dict = {"dataset": dataset.name, "n_queries": len(dataset.queries), "timings": {}}

    t0 = time.perf_counter()
    kiwi = Kiwi(num_workers=-1, typos=None)  # one thread
    doc_ids = list(dataset.corpus)
    docs_all, docs_content = _plain_tokens(kiwi, [normalize_text(dataset.corpus[d]) for d in doc_ids])
    qids = list(dataset.queries)
    q_all, q_content = _plain_tokens(kiwi, [normalize_text(dataset.queries[q]) for q in qids])
    result["plain_all"] = _round(evaluate(_bm25_runs(doc_ids, docs_all, dict(zip(qids, q_all))), dataset.qrels, KS))
    result["plain_content"] = _round(
        evaluate(_bm25_runs(doc_ids, docs_content, dict(zip(qids, q_content))), dataset.qrels, KS)
    )
    result["timings"]["plain_s"] = round(time.perf_counter() - t0, 1)
    log("plain", result["plain_all"], result["plain_content"])
    del kiwi

    if not args.no_saekin:
        from config.profiles import get_profile
        from config.settings import Settings
        from services.db import upgrade_database
        from services.embedding.twin import build_twin
        from services.evaluation.runner import SearchConfig, ingest_corpus, run_queries
        from services.runtime import Runtime

        t0 = time.perf_counter()
        work = make_work_dir("sparse-quality-", args.work_dir)
        log(f"building the corpus-trained twin in {work}")
        twin = build_twin(get_profile("bge-m3-ko"), work / "twin", small=True, corpus=list(dataset.corpus.values()))
        settings = Settings(  # as tests/integration/test_eval.py
            _env_file=None,
            data_dir=work / "data",
            embedding_model=str(twin),
            chunk_overlap_tokens=64,
            max_upload_mb=8,
        )
        upgrade_database(settings.sqlalchemy_url)
        rt = Runtime(settings)
        try:
            corpus = ingest_corpus(
                dataset, session_factory=rt.session_factory, process=rt.process_now, profile=rt.profile, progress=False
            )
            run = run_queries(
                dataset,
                corpus,
                SearchConfig("sparse"),
                session_factory=rt.session_factory,
                index=rt.index,
                analyzer=rt.analyzer,
                query_encoder=None,
                profile=rt.profile,
                ks=list(KS),
                progress=False,
            )
        finally:
            rt.close()
        result["saekin"] = _round(run["metrics"])
        result["n_chunks"] = corpus.n_chunks
        result["timings"]["saekin_s"] = round(time.perf_counter() - t0, 1)
        result["timings"]["saekin_ingest_s"] = round(corpus.ingest_s, 2)
    emit(result)


if __name__ == "__main__":
    main()
