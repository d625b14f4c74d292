"""Dense embeddings: the encoder engine (one model per process, token-budget batching, query
micro-batching) and offline architecture twins of the supported models.

Importing this package does not import torch; the model loads when an `Encoder` is created.
"""

from services.embedding.encoder import Encoder, QueryEncoder, default_device, load_tokenizer, plan_batches
from services.embedding.twin import build_twin, ensure_twin, read_corpus_files, read_twin_info

__all__ = [
    "Encoder",
    "QueryEncoder",
    "build_twin",
    "default_device",
    "ensure_twin",
    "load_tokenizer",
    "plan_batches",
    "read_corpus_files",
    "read_twin_info",
]
