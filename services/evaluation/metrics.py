"""Retrieval metrics with their standard (TREC / BEIR) definitions.

Conventions shared by every function:

* ``retrieved`` is a ranked list of document ids, best first. A document that appears
  again lower in the list (several chunks of one document) counts only at its first
  rank; later copies are non-relevant. Use :func:`dedupe_first` to map chunk hits to
  documents before computing metrics.
* ``relevant`` is a collection of relevant document ids (binary relevance). Where a
  mapping ``{doc_id: grade}`` is given, documents with a grade > 0 are relevant.
* ``k`` is the cut-off: only the first ``k`` ranks count. Fewer than ``k`` results are
  treated as the missing ranks being non-relevant (precision@k still divides by ``k``).

Definitions (rel = set of relevant documents, hits@k = relevant documents in the top k):

* recall@k = |hits@k| / |rel| (0 when rel is empty)
* precision@k = |hits@k| / k
* f1@k = 2·P·R / (P + R) (0 when both are 0)
* mrr@k = 1 / rank of the first relevant document within the top k, else 0
* map@k (average precision) = Σ_{i ≤ k, doc_i relevant} precision@i / min(|rel|, k)
* ndcg@k = DCG@k / IDCG@k with DCG@k = Σ_{i ≤ k} gain_i / log2(i + 1), gain = the graded
  relevance (1 for binary), IDCG@k the DCG of the ideal ordering; 0 when nothing is relevant.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence

__all__ = [
    "METRIC_NAMES",
    "average_precision_at_k",
    "dedupe_first",
    "evaluate",
    "f1_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]

METRIC_NAMES = ("recall", "precision", "f1", "mrr", "map", "ndcg")


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _relevant_set(relevant: Collection[str] | Mapping[str, float]) -> set[str]:
    if isinstance(relevant, Mapping):
        return {doc for doc, grade in relevant.items() if grade > 0}
    return set(relevant)


def _first_hits(retrieved: Sequence[str], relevant: set[str], k: int) -> list[int]:
    """1-based ranks within the top k at which a relevant document appears the first time."""
    seen: set[str] = set()
    ranks = []
    for rank, doc in enumerate(retrieved[:k], start=1):
        if doc in relevant and doc not in seen:
            ranks.append(rank)
        seen.add(doc)
    return ranks


def dedupe_first(doc_ids: Iterable[str]) -> list[str]:
    """Keep the first occurrence of each id, in order (chunk hits -> documents)."""
    return list(dict.fromkeys(doc_ids))


def recall_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant documents found in the top k (0 when none is relevant)."""
    _check_k(k)
    rel = _relevant_set(relevant)
    if not rel:
        return 0.0
    return len(_first_hits(retrieved, rel, k)) / len(rel)


def precision_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant documents in the top k divided by k."""
    _check_k(k)
    rel = _relevant_set(relevant)
    return len(_first_hits(retrieved, rel, k)) / k


def f1_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Harmonic mean of precision@k and recall@k."""
    p = precision_at_k(retrieved, relevant, k)
    r = recall_at_k(retrieved, relevant, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def mrr_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k, else 0."""
    _check_k(k)
    hits = _first_hits(retrieved, _relevant_set(relevant), k)
    return 1.0 / hits[0] if hits else 0.0


def average_precision_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Sum of precision@i over the ranks i <= k holding a relevant document, / min(|rel|, k)."""
    _check_k(k)
    rel = _relevant_set(relevant)
    if not rel:
        return 0.0
    hits = _first_hits(retrieved, rel, k)
    total = sum(n / rank for n, rank in enumerate(hits, start=1))
    return total / min(len(rel), k)


def ndcg_at_k(retrieved: Sequence[str], relevance: Mapping[str, float] | Collection[str], k: int) -> float:
    """Normalized DCG with linear gains (the relevance grade) and a log2(rank + 1) discount."""
    _check_k(k)
    if not isinstance(relevance, Mapping):
        relevance = dict.fromkeys(relevance, 1.0)
    grades = {doc: float(g) for doc, g in relevance.items() if g > 0}
    if not grades:
        return 0.0
    dcg = sum(grades[retrieved[r - 1]] / math.log2(r + 1) for r in _first_hits(retrieved, set(grades), k))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg


def evaluate(
    runs: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    ks: Sequence[int],
) -> dict[str, float]:
    """Mean of every metric at every k over the judged queries.

    The queries averaged over are those of ``qrels`` with at least one relevant document
    (grade > 0); a judged query missing from ``runs`` counts as an empty result list.
    Keys: ``"recall@1"``, ``"precision@1"``, ``"f1@1"``, ``"mrr@1"``, ``"map@1"``,
    ``"ndcg@1"``, ... for each k in ``ks``. Empty ``qrels`` give all zeros.
    """
    ks = sorted({int(k) for k in ks})
    for k in ks:
        _check_k(k)
    judged = [qid for qid, grades in qrels.items() if any(g > 0 for g in grades.values())]
    sums = {f"{name}@{k}": 0.0 for k in ks for name in METRIC_NAMES}
    for qid in judged:
        grades = qrels[qid]
        rel = _relevant_set(grades)
        retrieved = list(runs.get(qid, ()))
        for k in ks:
            p = precision_at_k(retrieved, rel, k)
            r = recall_at_k(retrieved, rel, k)
            sums[f"recall@{k}"] += r
            sums[f"precision@{k}"] += p
            sums[f"f1@{k}"] += 0.0 if p + r == 0 else 2 * p * r / (p + r)
            sums[f"mrr@{k}"] += mrr_at_k(retrieved, rel, k)
            sums[f"map@{k}"] += average_precision_at_k(retrieved, rel, k)
            sums[f"ndcg@{k}"] += ndcg_at_k(retrieved, grades, k)
    n = len(judged)
    return {key: (value / n if n else 0.0) for key, value in sums.items()}
