"""Loaders for retrieval evaluation datasets: the AutoRAG format and a BEIR-like format.

AutoRAG (a folder, or the path of its qa parquet file):
  ``qa*.parquet`` with columns ``qid``, ``query`` and ``retrieval_gt`` (a list of lists of
  doc ids; every id listed is relevant, grade 1) and ``*corpus*.parquet`` with columns
  ``doc_id``, ``contents`` and optionally ``metadata`` (a struct/dict per row).

BEIR-like (a folder):
  ``corpus.jsonl`` (one JSON object per line: ``doc_id`` or ``_id``, ``text``, optional
  ``title`` and ``metadata``), ``queries.jsonl`` (``qid`` or ``_id``, ``query`` or
  ``text``) and ``qrels.tsv`` or ``qrels/test.tsv`` (tab-separated ``qid``, ``doc_id``,
  ``relevance`` with a header line; a TREC-style 4-column line ``qid 0 doc_id grade`` works too).

Anything else raises ValueError with the reason. Texts are returned as stored; the
ingestion pipeline normalizes them. Metadata values are made JSON-safe (datetimes become
ISO 8601 strings). Judgments that name an unknown query or document are dropped and
reported in ``EvalDataset.warnings``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalDataset", "load_dataset"]


@dataclass
class EvalDataset:
    """A corpus, its queries and relevance judgments (qrels: qid -> {doc_id: grade})."""

    name: str
    corpus: dict[str, str]
    corpus_metadata: dict[str, dict]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]
    warnings: list[str] = field(default_factory=list)


def load_dataset(path: Path) -> EvalDataset:
    """Load an AutoRAG or BEIR-like dataset from ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"dataset path {path} does not exist")
    if path.is_file():
        if path.suffix == ".parquet" and path.name.startswith("qa"):
            return _load_autorag(path.parent, qa_file=path)
        raise ValueError(
            f"{path} is a file; give a dataset folder (AutoRAG: qa*.parquet + *corpus*.parquet; "
            "BEIR-like: corpus.jsonl, queries.jsonl, qrels.tsv) or an AutoRAG qa*.parquet file"
        )
    if (path / "corpus.jsonl").is_file():
        return _load_beir(path)
    if list(path.glob("qa*.parquet")) or list(path.glob("*corpus*.parquet")):
        return _load_autorag(path)
    raise ValueError(
        f"{path} is neither an AutoRAG dataset (qa*.parquet and *corpus*.parquet) nor a "
        "BEIR-like one (corpus.jsonl, queries.jsonl and qrels.tsv or qrels/test.tsv)"
    )


# -- AutoRAG ----------------------------------------------------------------------------


def _one(path: Path, pattern: str, what: str) -> Path:
    found = sorted(p for p in path.glob(pattern) if p.is_file())
    if not found:
        raise ValueError(f"AutoRAG dataset {path}: no {what} file ({pattern})")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(
            f"AutoRAG dataset {path}: several {what} files ({names}); pass the qa parquet file itself"
            if what == "qa"
            else f"AutoRAG dataset {path}: several {what} files ({names}); keep one per folder"
        )
    return found[0]


def _read_parquet(file: Path, required: tuple[str, ...]) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise ValueError(f"cannot read parquet file {file}: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValueError(f"{file.name}: missing column(s) {', '.join(missing)} (has {', '.join(table.column_names)})")
    return table.to_pylist()


def _load_autorag(path: Path, qa_file: Path | None = None) -> EvalDataset:
    qa_file = qa_file or _one(path, "qa*.parquet", "qa")
    corpus_file = _one(path, "*corpus*.parquet", "corpus")
    corpus: dict[str, str] = {}
    metadata: dict[str, dict] = {}
    for row in _read_parquet(corpus_file, ("doc_id", "contents")):
        doc_id = str(row["doc_id"])
        if doc_id in corpus:
            raise ValueError(f"{corpus_file.name}: duplicate doc_id {doc_id!r}")
        corpus[doc_id] = "" if row["contents"] is None else str(row["contents"])
        meta = row.get("metadata")
        metadata[doc_id] = _jsonable(meta) if isinstance(meta, dict) else {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    warnings: list[str] = []
    for index, row in enumerate(_read_parquet(qa_file, ("query", "retrieval_gt"))):
        qid = str(row["qid"]) if row.get("qid") is not None else str(index)
        if qid in queries:
            raise ValueError(f"{qa_file.name}: duplicate qid {qid!r}")
        queries[qid] = str(row["query"])
        judged: dict[str, float] = {}
        for doc_id in _flatten(row["retrieval_gt"]):
            if doc_id in corpus:
                judged[doc_id] = 1.0
            else:
                warnings.append(f"query {qid}: relevant doc {doc_id!r} is not in the corpus (dropped)")
        if judged:
            qrels[qid] = judged
    return EvalDataset(path.name, corpus, metadata, queries, qrels, warnings)


def _flatten(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value.decode() if isinstance(value, bytes) else value]
    out: list[str] = []
    for item in value:
        out.extend(_flatten(item))
    return out


# -- BEIR-like --------------------------------------------------------------------------


def _read_jsonl(file: Path) -> list[dict]:
    rows = []
    with file.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{file.name} line {lineno}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{file.name} line {lineno}: expected a JSON object")
            rows.append(row)
    return rows


def _field(row: dict, names: tuple[str, ...], file: Path, lineno: int) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise ValueError(f"{file.name} row {lineno}: needs one of the fields {', '.join(names)}")


def _load_beir(path: Path) -> EvalDataset:
    corpus_file, queries_file = path / "corpus.jsonl", path / "queries.jsonl"
    if not queries_file.is_file():
        raise ValueError(f"BEIR-like dataset {path}: queries.jsonl is missing")
    qrels_file = next((f for f in (path / "qrels.tsv", path / "qrels" / "test.tsv") if f.is_file()), None)
    if qrels_file is None:
        raise ValueError(f"BEIR-like dataset {path}: neither qrels.tsv nor qrels/test.tsv exists")

    corpus: dict[str, str] = {}
    metadata: dict[str, dict] = {}
    for n, row in enumerate(_read_jsonl(corpus_file), start=1):
        doc_id = str(_field(row, ("doc_id", "_id"), corpus_file, n))
        if doc_id in corpus:
            raise ValueError(f"corpus.jsonl: duplicate doc id {doc_id!r}")
        corpus[doc_id] = str(_field(row, ("text", "contents"), corpus_file, n))
        meta = _jsonable(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
        if row.get("title"):
            meta["title"] = str(row["title"])
        metadata[doc_id] = meta

    queries: dict[str, str] = {}
    for n, row in enumerate(_read_jsonl(queries_file), start=1):
        qid = str(_field(row, ("qid", "_id"), queries_file, n))
        if qid in queries:
            raise ValueError(f"queries.jsonl: duplicate query id {qid!r}")
        queries[qid] = str(_field(row, ("query", "text"), queries_file, n))

    qrels: dict[str, dict[str, float]] = {}
    warnings: list[str] = []
    with qrels_file.open(encoding="utf-8-sig") as fh:
        lines = [line.rstrip("\n\r") for line in fh]
    rows = [line for line in lines if line.strip()]
    if not rows:
        raise ValueError(f"{qrels_file.name} is empty")
    first = _split(rows[0])
    # The header line is expected; a file that starts with a judgment is read whole.
    start = 0 if len(first) >= 3 and _is_number(first[-1]) else 1
    for lineno, line in enumerate(rows[start:], start=start + 1):
        parts = _split(line)
        if len(parts) < 3 or not _is_number(parts[-1]):
            raise ValueError(f"{qrels_file.name} line {lineno}: expected qid<TAB>doc_id<TAB>relevance")
        qid, doc_id, grade = parts[0], parts[-2], float(parts[-1])
        if qid not in queries:
            warnings.append(f"qrels line {lineno}: unknown query {qid!r} (dropped)")
            continue
        if doc_id not in corpus:
            warnings.append(f"qrels line {lineno}: unknown document {doc_id!r} (dropped)")
            continue
        qrels.setdefault(qid, {})[doc_id] = grade
    return EvalDataset(path.name, corpus, metadata, queries, qrels, warnings)


def _split(line: str) -> list[str]:
    return [p.strip() for p in (line.split("\t") if "\t" in line else line.split())]


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _jsonable(value: Any) -> Any:
    """A JSON-serializable copy of a metadata value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    if hasattr(value, "tolist"):  # numpy arrays
        return _jsonable(value.tolist())
    return str(value)
