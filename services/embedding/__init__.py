"""Dense embeddings and cross-encoder reranking, one model per process.

- loading.py: tokenizers, device and precision set-up (shared by both models);
- batching.py: token-budget batch planning, padded and padding-free batches, prefetching;
- encoder.py: `Encoder`, the embedding model's forward pass (documents and queries);
- backends.py: the CPU backends of that forward pass (ONNX Runtime, OpenVINO), exported once per model;
- query_encoder.py: `QueryEncoder`, micro-batching of questions from concurrent requests;
- reranker.py: `Reranker`, a cross-encoder scoring (question, passage) pairs, long passages on a
  window around their highlights;
- twin.py: offline architecture twins of the profiles in config/profiles.py.

Importing this package does not import torch; a model loads when its class is instantiated.
"""
