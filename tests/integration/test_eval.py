"""Evaluation through the real pipeline and search service: the AutoRAG quality bar, and `saekin eval`."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AUTORAG, REPO

# What decides an AutoRAG ingestion: the code that turns text into chunks, terms and points, the
# twin's tokenizer, the schema. A change to any of them ingests the corpus again.
_INGESTION_SOURCES = ("services/ingest", "services/index", "services/documents", "services/embedding/twin.py",
                      "services/vectors.py", "config", "migrations/versions")  # fmt: skip


def _ingestion_key() -> str:
    digest = hashlib.sha256()
    for source in _INGESTION_SOURCES:
        path = REPO / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(REPO).as_posix().encode() + file.read_bytes())
    for file in sorted(AUTORAG.glob("*.parquet")):
        digest.update(file.name.encode() + str(file.stat().st_size).encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def autorag(request, tmp_path_factory) -> Iterator[tuple]:
    """(runtime, dataset, ingested corpus) of AutoRAG in embedded mode.

    The ingestion is cached between runs (pytest's cache folder, keyed by the code and data that
    decide it) and copied before use, so the day-to-day loop pays for it once; CI, starting from a
    clean clone, ingests. The twin's tokenizer is trained on the corpus: the packaged twin
    tokenizer is trained on 40 KB and splits Korean into ~0.7 tokens per character, far more than
    bge-m3's 250k-piece SentencePiece; one trained on this corpus (8k-16k pieces) is closer, so the
    chunks are close to those the real model would get."""
    if not (AUTORAG / "qa_v4.parquet").exists():
        pytest.skip(f"AutoRAG data not present in {AUTORAG}")
    from config.profiles import get_profile
    from config.settings import Settings
    from services.db import upgrade_database
    from services.embedding.twin import build_twin
    from services.evaluation.datasets import load_dataset
    from services.evaluation.runner import IngestedCorpus, ingest_corpus
    from services.runtime import Runtime

    dataset = load_dataset(AUTORAG)
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    cached = Path(cache.mkdir("saekin-autorag")) / _ingestion_key() if cache is not None else None
    work = tmp_path_factory.mktemp("autorag")
    if cached is not None and (cached / "corpus.json").exists():
        shutil.copytree(cached, work, dirs_exist_ok=True)
    else:
        build_twin(get_profile("bge-m3-ko"), work / "twin", small=True, corpus=list(dataset.corpus.values()))
    settings = Settings(
        _env_file=None,
        data_dir=work / "data",
        embedding_model=str(work / "twin"),
        chunk_overlap_tokens=64,  # the default, which make_settings lowers for small tests
    )
    upgrade_database(settings.sqlalchemy_url)
    rt = Runtime(settings)
    if (work / "corpus.json").exists():
        corpus = IngestedCorpus(**json.loads((work / "corpus.json").read_text()))
    else:
        corpus = ingest_corpus(
            dataset, session_factory=rt.session_factory, process=rt.process_now, profile=rt.profile, progress=False
        )
        (work / "corpus.json").write_text(json.dumps(corpus.__dict__))
        if cached is not None:
            rt.close()  # flushed and unlocked before the copy
            for old in cached.parent.iterdir():
                shutil.rmtree(old, ignore_errors=True)
            shutil.copytree(work, cached.with_suffix(".partial"))
            cached.with_suffix(".partial").rename(cached)
            rt = Runtime(settings)
    yield rt, dataset, corpus
    rt.close()


def test_sparse_search_on_autorag_meets_the_korean_keyword_targets(autorag) -> None:
    """The real benchmark: 720 OCR'd pages, 114 questions, Kiwi morphemes in Qdrant with IDF."""
    from services.evaluation.runner import SearchConfig, run_queries

    rt, dataset, corpus = autorag
    result = run_queries(
        dataset,
        corpus,
        SearchConfig("sparse"),
        session_factory=rt.session_factory,
        index=rt.index,
        analyzer=rt.analyzer,
        query_encoder=None,
        profile=rt.profile,
        ks=[1, 3, 5, 10],
        progress=False,
    )
    assert result["n_judged_queries"] == 114 and corpus.n_documents == 720
    assert corpus.failed_documents == [] and result["warnings"] == []
    metrics = result["metrics"]
    assert metrics["recall@1"] >= 0.88, metrics
    assert metrics["recall@5"] >= 0.99, metrics


def _beir(folder: Path, *, qrels: str) -> Path:
    folder.mkdir()
    corpus = {
        "d1": "서울은 대한민국의 수도이다. 한강이 흐른다.",
        "d2": "부산은 항구 도시이다. 해운대가 유명하다.",
        "d3": "제주도에는 한라산이 있다. 감귤이 유명하다.",
    }
    (folder / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "text": v}, ensure_ascii=False) for k, v in corpus.items())
    )
    queries = [("q1", "수도 서울"), ("q2", "해운대 항구"), ("q3", "한라산"), ("q4", "그리고 또한")]
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": q, "text": t}, ensure_ascii=False) for q, t in queries)
    )
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


def test_hybrid_eval_runs_end_to_end_from_the_cli(tmp_path: Path, small_twin: Path, saekin) -> None:
    """A BEIR-like dataset through `saekin eval --mode hybrid`, JSON written as documented."""
    data = _beir(tmp_path / "beir", qrels="q1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    out = tmp_path / "result.json"
    args = ["eval", "--dataset", str(data), "--mode", "hybrid", "--k", "1,3", "--output-json", str(out)]
    proc = saekin(*args, SAEKIN_EMBEDDING_MODEL=str(small_twin))
    assert proc.exit_code == 0, proc.stderr + proc.stdout
    result = json.loads(out.read_text())
    assert result["mode"] == "hybrid" and result["n_queries"] == 4 and result["n_judged_queries"] == 3
    assert result["model"] == str(small_twin) and result["profile"] == "bge-m3-ko"
    assert set(result["metrics"]) >= {
        f"{m}@{k}" for m in ("recall", "precision", "f1", "mrr", "map", "ndcg") for k in (1, 3)
    }
    assert result["metrics"]["recall@3"] == 1.0  # three documents, top 3
    assert "recall@1" in proc.stdout and result["timings"]["ingest_s"] >= 0 and result["timings"]["load_s"] >= 0
    [run] = result["runs"]
    assert run["settings"] == {"mode": "hybrid", "fusion": {"method": "convex", "alpha": 0.05}, "rerank": False}
    assert [q["query_id"] for q in run["per_query"]] == ["q1", "q2", "q3"]
    assert all(q["relevant"] and q["ranked"] and q["first_relevant_rank"] for q in run["per_query"])
    assert "query q4: no relevant documents judged (not scored)" in result["warnings"]


def test_eval_warns_about_bad_judgements_and_empty_answers(tmp_path: Path, small_twin: Path, saekin) -> None:
    # q1 judges a document that does not exist (dropped, and said so); q4 has only particles, so a
    # sparse search returns nothing for it; q3 has no judgement at all.
    data = _beir(tmp_path / "beir", qrels="q1\td1\t1\nq1\tghost\t1\nq2\td2\t1\nq4\td1\t1\n")
    out = tmp_path / "result.json"
    args = ["eval", "--dataset", str(data), "--mode", "sparse", "--k", "1", "--output-json", str(out)]
    proc = saekin(*args, SAEKIN_EMBEDDING_MODEL=str(small_twin))
    assert proc.exit_code == 0, proc.stderr + proc.stdout
    result = json.loads(out.read_text())
    assert result["n_judged_queries"] == 3  # q1, q2, q4
    assert any("unknown document 'ghost'" in w for w in result["warnings"])
    assert "query q3: no relevant documents judged (not scored)" in result["warnings"]
    [run] = result["runs"]
    assert any(w.startswith("query q4: returned nothing") for w in run["warnings"])
    q4 = next(q for q in run["per_query"] if q["query_id"] == "q4")
    assert q4["ranked"] == [] and q4["first_relevant_rank"] is None
    assert result["metrics"]["recall@1"] == pytest.approx(2 / 3)  # q4 counts, as a miss


def test_eval_sweep_runs_every_configuration_on_one_ingestion(tmp_path: Path, small_twin: Path, saekin) -> None:
    data = _beir(tmp_path / "beir", qrels="q1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    out = tmp_path / "sweep.json"
    args = ["eval", "--dataset", str(data), "--sweep", "--k", "1,3", "--output-json", str(out)]
    proc = saekin(*args, SAEKIN_EMBEDDING_MODEL=str(small_twin))
    assert proc.exit_code == 0, proc.stderr + proc.stdout
    result = json.loads(out.read_text())
    names = [run["name"] for run in result["runs"]]
    assert names[:3] == ["sparse", "dense", "hybrid/convex(alpha=0.05)"] and len(names) == len(set(names)) > 8
    assert "hybrid/rrf(k=60)" in names and "hybrid/dbsf(dense=0.25, sparse=1)" in names
    assert result["best"]["recall@1"] in names and result["n_documents"] == 3
    for name in names:  # one table row per configuration
        assert name in proc.stdout
    # Each run says how to make it a collection's default (PATCH /v1/collections/{c}).
    from services.search.schemas import SearchDefaults

    for run in result["runs"]:
        SearchDefaults.model_validate(run["settings"])


def test_eval_refuses_bad_fusions_and_rerank_without_a_reranker(tmp_path: Path, small_twin: Path, saekin) -> None:
    data = _beir(tmp_path / "beir", qrels="q1\td1\t1\n")
    env = dict(SAEKIN_EMBEDDING_MODEL=str(small_twin))
    bad = saekin("eval", "--dataset", str(data), "--fusion", '{"method": "convex", "alpha": 3}', **env)
    assert bad.exit_code == 1 and "--fusion" in bad.stderr
    sparse = saekin("eval", "--dataset", str(data), "--mode", "sparse", "--fusion", "rrf", **env)
    assert sparse.exit_code == 1 and "--mode hybrid" in sparse.stderr
    rerank = saekin("eval", "--dataset", str(data), "--rerank", **env)
    assert rerank.exit_code == 1 and "SAEKIN_RERANK_PROFILE" in rerank.stderr
