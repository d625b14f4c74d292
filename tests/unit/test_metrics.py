import math

import pytest

from services.evaluation.metrics import (
    average_precision_at_k,
    dedupe_first,
    evaluate,
    f1_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

approx = pytest.approx

# Ranked list used by several cases: relevant docs a, c, f; hits at ranks 1, 3 and 6.
RUN = ["a", "b", "c", "d", "e", "f"]
REL = {"a", "c", "f"}


def test_several_relevant_documents_hand_computed():
    assert recall_at_k(RUN, REL, 1) == approx(1 / 3)
    assert recall_at_k(RUN, REL, 3) == approx(2 / 3)
    assert recall_at_k(RUN, REL, 5) == approx(2 / 3)
    assert recall_at_k(RUN, REL, 6) == approx(1.0)
    assert precision_at_k(RUN, REL, 1) == approx(1.0)
    assert precision_at_k(RUN, REL, 3) == approx(2 / 3)
    assert precision_at_k(RUN, REL, 10) == approx(3 / 10)  # divides by k, not by results
    assert f1_at_k(RUN, REL, 3) == approx(2 / 3)  # P = R = 2/3
    assert f1_at_k(RUN, REL, 5) == approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    assert mrr_at_k(RUN, REL, 5) == approx(1.0)
    # AP@5: (P@1 + P@3) / min(3, 5) = (1 + 2/3) / 3
    assert average_precision_at_k(RUN, REL, 5) == approx((1 + 2 / 3) / 3)
    # AP@10: (1 + 2/3 + 3/6) / 3
    assert average_precision_at_k(RUN, REL, 10) == approx((1 + 2 / 3 + 0.5) / 3)
    # AP@2: only rank 1 counts, divided by min(3, 2) = 2
    assert average_precision_at_k(RUN, REL, 2) == approx(0.5)
    # NDCG@3 binary: DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) + 1/log2(4)
    assert ndcg_at_k(RUN, dict.fromkeys(REL, 1), 3) == approx(1.5 / (1 + 1 / math.log2(3) + 0.5))


def test_first_relevant_lower_down():
    run = ["x", "y", "a"]
    assert mrr_at_k(run, {"a"}, 3) == approx(1 / 3)
    assert mrr_at_k(run, {"a"}, 2) == 0.0
    assert recall_at_k(run, {"a"}, 2) == 0.0
    assert average_precision_at_k(run, {"a"}, 3) == approx(1 / 3)
    assert ndcg_at_k(run, {"a": 1}, 3) == approx(1 / math.log2(4))


def test_none_retrieved():
    for fn in (recall_at_k, precision_at_k, f1_at_k, mrr_at_k, average_precision_at_k):
        assert fn([], {"a", "b"}, 5) == 0.0
        assert fn(["x", "y"], {"a", "b"}, 5) == 0.0
    assert ndcg_at_k([], {"a": 1}, 5) == 0.0


def test_no_relevant_documents():
    assert recall_at_k(["a"], set(), 1) == 0.0
    assert average_precision_at_k(["a"], set(), 1) == 0.0
    assert ndcg_at_k(["a"], {}, 1) == 0.0
    assert ndcg_at_k(["a"], {"a": 0}, 1) == 0.0  # grade 0 is not relevant


def test_duplicates_count_once():
    run = ["a", "a", "a", "b"]
    rel = {"a", "b"}
    assert precision_at_k(run, rel, 3) == approx(1 / 3)
    assert recall_at_k(run, rel, 3) == approx(0.5)
    assert recall_at_k(run, rel, 4) == approx(1.0)
    # AP@4: hits at ranks 1 and 4: (1/1 + 2/4) / 2
    assert average_precision_at_k(run, rel, 4) == approx((1 + 0.5) / 2)
    # NDCG@4: DCG = 1 + 1/log2(5); IDCG = 1 + 1/log2(3)
    assert ndcg_at_k(run, {"a": 1, "b": 1}, 4) == approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert dedupe_first(run) == ["a", "b"]


def test_graded_ndcg():
    grades = {"a": 3, "b": 2, "c": 1}
    run = ["c", "b", "a"]
    dcg = 1 + 2 / math.log2(3) + 3 / math.log2(4)
    idcg = 3 + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(run, grades, 3) == approx(dcg / idcg)
    assert ndcg_at_k(["a", "b", "c"], grades, 3) == approx(1.0)
    # ideal DCG is cut at k too
    assert ndcg_at_k(["a"], grades, 1) == approx(1.0)


def test_dedupe_first_keeps_order():
    assert dedupe_first(iter(["d2", "d1", "d2", "d3", "d1"])) == ["d2", "d1", "d3"]
    assert dedupe_first([]) == []


def test_invalid_k():
    with pytest.raises(ValueError):
        recall_at_k(["a"], {"a"}, 0)


def test_evaluate_means_over_judged_queries():
    runs = {"q1": ["a", "b"], "q2": ["x", "c"], "q3": ["z"]}
    qrels = {"q1": {"a": 1}, "q2": {"c": 1, "d": 1}, "q4": {"e": 1}, "q5": {"f": 0}}
    m = evaluate(runs, qrels, [1, 2])
    # judged queries: q1, q2, q4 (q4 has no run -> zeros; q5 has nothing relevant; q3 unjudged)
    assert m["recall@1"] == approx((1 + 0 + 0) / 3)
    assert m["recall@2"] == approx((1 + 0.5 + 0) / 3)
    assert m["precision@2"] == approx((0.5 + 0.5 + 0) / 3)
    assert m["mrr@2"] == approx((1 + 0.5 + 0) / 3)
    assert m["map@2"] == approx((1 + 0.5 / 2 + 0) / 3)
    assert m["f1@2"] == approx((2 * 0.5 * 1 / 1.5 + 0.5 + 0) / 3)
    expected_ndcg_q2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg@2"] == approx((1 + expected_ndcg_q2 + 0) / 3)
    assert set(m) == {f"{n}@{k}" for n in ("recall", "precision", "f1", "mrr", "map", "ndcg") for k in (1, 2)}


def test_evaluate_empty():
    assert evaluate({}, {}, [1])["recall@1"] == 0.0
