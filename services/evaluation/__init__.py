"""Retrieval evaluation: standard metrics and loaders for AutoRAG and BEIR-like datasets."""

from services.evaluation.datasets import EvalDataset, load_dataset
from services.evaluation.metrics import (
    METRIC_NAMES,
    average_precision_at_k,
    dedupe_first,
    evaluate,
    f1_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

__all__ = [
    "METRIC_NAMES",
    "EvalDataset",
    "average_precision_at_k",
    "dedupe_first",
    "evaluate",
    "f1_at_k",
    "load_dataset",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]
