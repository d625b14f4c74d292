import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.evaluation.datasets import EvalDataset, load_dataset

AUTORAG = Path(__file__).resolve().parents[3] / "shared" / "data" / "autorag-ko"


@pytest.mark.skipif(
    not (AUTORAG / "qa_v4.parquet").is_file(),
    reason=f"the AutoRAG Korean benchmark is not at {AUTORAG} (a sibling 'shared' folder of the repo)",
)
def test_real_autorag_dataset():
    ds = load_dataset(AUTORAG)
    assert isinstance(ds, EvalDataset)
    assert ds.name == "autorag-ko"
    assert len(ds.corpus) == 720
    assert len(ds.queries) == 114
    assert len(ds.qrels) == 114
    assert all(len(j) == 1 and set(j.values()) == {1.0} for j in ds.qrels.values())
    assert all(doc in ds.corpus for j in ds.qrels.values() for doc in j)
    assert ds.warnings == []
    meta = ds.corpus_metadata["commerce - B2BDigComm.pdf - 1"]
    json.dumps(meta)  # JSON-safe (the datetime became a string)
    assert meta["last_modified_datetime"].startswith("2024-")
    assert ds.queries["0_finance"].startswith("시중은행")


def _write_autorag(folder: Path, qa_name="qa.parquet"):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "doc_id": ["d1", "d2", "d3"],
                "contents": ["서울에서 만났다.", "탄소중립 정책", "은행 인가"],
                "metadata": [{"last_modified_datetime": dt.datetime(2024, 1, 2, 3, 4, 5)}] * 3,
            }
        ),
        folder / "my_corpus.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "qid": ["q1", "q2"],
                "query": ["서울?", "정책과 은행"],
                "retrieval_gt": [[["d1"]], [["d2", "d3"], ["missing"]]],
                "generation_gt": [["답"], ["답"]],
            }
        ),
        folder / qa_name,
    )
    return folder


def test_small_autorag_dataset(tmp_path):
    ds = load_dataset(_write_autorag(tmp_path / "mini"))
    assert ds.corpus == {"d1": "서울에서 만났다.", "d2": "탄소중립 정책", "d3": "은행 인가"}
    assert ds.corpus_metadata["d1"] == {"last_modified_datetime": "2024-01-02T03:04:05"}
    assert ds.queries == {"q1": "서울?", "q2": "정책과 은행"}
    assert ds.qrels == {"q1": {"d1": 1.0}, "q2": {"d2": 1.0, "d3": 1.0}}
    assert len(ds.warnings) == 1 and "missing" in ds.warnings[0]


def test_autorag_several_qa_files(tmp_path):
    folder = _write_autorag(tmp_path / "two")
    _write_autorag(folder, qa_name="qa_sample.parquet")
    with pytest.raises(ValueError, match="several qa files"):
        load_dataset(folder)
    ds = load_dataset(folder / "qa_sample.parquet")  # the qa file itself picks one
    assert len(ds.queries) == 2


def test_autorag_missing_columns(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    pq.write_table(pa.table({"doc_id": ["d1"], "text": ["x"]}), folder / "corpus.parquet")
    pq.write_table(pa.table({"query": ["q"], "retrieval_gt": [[["d1"]]]}), folder / "qa.parquet")
    with pytest.raises(ValueError, match="contents"):
        load_dataset(folder)


def _write_jsonl(path: Path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")


def test_beir_like_dataset(tmp_path):
    folder = tmp_path / "beirish"
    folder.mkdir()
    _write_jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "d1", "title": "서울", "text": "서울에서 만났다."},
            {"doc_id": "d2", "text": "탄소중립 정책", "metadata": {"year": 2024}},
            {"_id": 3, "text": "은행 인가"},
        ],
    )
    _write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "서울?"}, {"qid": "q2", "query": "정책"}])
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\t3\t0\nq9\td1\t1\nq1\tnope\t1\n", encoding="utf-8"
    )
    ds = load_dataset(folder)
    assert ds.name == "beirish"
    assert ds.corpus == {"d1": "서울에서 만났다.", "d2": "탄소중립 정책", "3": "은행 인가"}
    assert ds.corpus_metadata == {"d1": {"title": "서울"}, "d2": {"year": 2024}, "3": {}}
    assert ds.queries == {"q1": "서울?", "q2": "정책"}
    assert ds.qrels == {"q1": {"d1": 1.0}, "q2": {"d2": 2.0, "3": 0.0}}
    assert len(ds.warnings) == 2


def test_beir_qrels_in_subfolder(tmp_path):
    folder = tmp_path / "sub"
    (folder / "qrels").mkdir(parents=True)
    _write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "가"}])
    _write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "가"}])
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert load_dataset(folder).qrels == {"q1": {"d1": 1.0}}


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda f: None, "neither an AutoRAG"),
        (lambda f: (f / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n'), "queries.jsonl"),
        (
            lambda f: (
                (f / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n'),
                (f / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n'),
            ),
            "qrels",
        ),
        (
            lambda f: (
                (f / "corpus.jsonl").write_text("not json\n"),
                (f / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n'),
                (f / "qrels.tsv").write_text("q\td\ts\n"),
            ),
            "not JSON",
        ),
        (
            lambda f: (
                (f / "corpus.jsonl").write_text('{"title": "no id"}\n'),
                (f / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n'),
                (f / "qrels.tsv").write_text("q\td\ts\n"),
            ),
            "doc_id, _id",
        ),
        (
            lambda f: (
                (f / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n'),
                (f / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n'),
                (f / "qrels.tsv").write_text("q\td\ts\nq1\td1\n"),
            ),
            "expected qid",
        ),
    ],
)
def test_unusable_folders_raise_value_error(tmp_path, setup, message):
    folder = tmp_path / "ds"
    folder.mkdir()
    setup(folder)
    with pytest.raises(ValueError, match=message):
        load_dataset(folder)


def test_missing_path_and_stray_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    stray = tmp_path / "notes.txt"
    stray.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load_dataset(stray)
