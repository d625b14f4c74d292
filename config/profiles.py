"""The model profiles Saekin supports: four embedding models and two cross-encoder rerankers.

An embedding profile fixes everything that must agree between ingestion and search: the hub id,
the transformer architecture (used to build offline twins), the vector size, pooling and
normalisation, and the model's maximum sequence length, from which the chunk budget follows.
A reranker profile names a cross-encoder that scores (question, passage) pairs after retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeVar

Pooling = Literal["cls", "mean"]
TokenizerKind = Literal["unigram", "wordpiece"]


@dataclass(frozen=True, kw_only=True)
class TransformerProfile:
    """What every profile names: the model and the transformer it is (from which twins are built)."""

    name: str
    hub_id: str
    max_seq_length: int  # what the model reads
    architecture: str  # transformers model class, for twins
    tokenizer_kind: TokenizerKind
    config: dict = field(default_factory=dict)  # transformers config of the full-size model


@dataclass(frozen=True, kw_only=True)
class ModelProfile(TransformerProfile):
    """An embedding model."""

    dim: int
    pooling: Pooling
    normalize: bool
    # Tokens of a chunk, special tokens excluded. Never above max_seq_length - 2 (CLS/SEP),
    # so no chunk is ever truncated by the model; 512-token windows for the long-context model.
    chunk_tokens: int


@dataclass(frozen=True, kw_only=True)
class RerankerProfile(TransformerProfile):
    """A cross-encoder reranker: a sequence-classification model with one label (a relevance score)."""

    # Tokens of one (question, passage) pair, special tokens included: what scoring costs is set
    # by this, not by max_seq_length (a large cross-encoder on 8,192 tokens is far too slow).
    pair_tokens: int


# XLM-RoBERTa large as bge-m3 has it (8,192 positions after the padding offset); bge-m3's
# rerankers are the same transformer with a one-label classification head.
_XLM_ROBERTA_LARGE_8K = dict(
    model_type="xlm-roberta",
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    vocab_size=250002,
    max_position_embeddings=8194,
    type_vocab_size=1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    layer_norm_eps=1e-5,
)

PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="bge-m3-ko",
            hub_id="dragonkue/bge-m3-ko",
            dim=1024,
            pooling="cls",
            normalize=True,
            max_seq_length=8192,
            chunk_tokens=510,
            architecture="XLMRobertaModel",
            tokenizer_kind="unigram",
            config=_XLM_ROBERTA_LARGE_8K,
        ),
        ModelProfile(
            name="ko-sroberta-multitask",
            hub_id="jhgan/ko-sroberta-multitask",
            dim=768,
            pooling="mean",
            normalize=False,
            max_seq_length=128,
            chunk_tokens=126,
            architecture="RobertaModel",
            tokenizer_kind="wordpiece",
            config=dict(
                model_type="roberta",
                hidden_size=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                intermediate_size=3072,
                vocab_size=32000,
                max_position_embeddings=514,
                type_vocab_size=1,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                layer_norm_eps=1e-5,
            ),
        ),
        ModelProfile(
            name="kf-deberta-multitask",
            hub_id="upskyy/kf-deberta-multitask",
            dim=768,
            pooling="mean",
            normalize=False,
            max_seq_length=128,
            chunk_tokens=126,
            architecture="DebertaV2Model",
            tokenizer_kind="wordpiece",
            config=dict(
                model_type="deberta-v2",
                hidden_size=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                intermediate_size=3072,
                vocab_size=130000,
                max_position_embeddings=512,
                type_vocab_size=0,
                pad_token_id=0,
                relative_attention=True,
                position_buckets=256,
                max_relative_positions=-1,
                pos_att_type=["p2c", "c2p"],
                norm_rel_ebd="layer_norm",
                share_att_key=True,
                position_biased_input=False,
                layer_norm_eps=1e-7,
            ),
        ),
        ModelProfile(
            name="klue-sroberta-large",
            hub_id="snunlp/KLUE-SRoBERTa-Large-SNUExtended-klueNLI-klueSTS",
            dim=1024,
            pooling="mean",
            normalize=False,
            max_seq_length=512,
            chunk_tokens=510,
            architecture="RobertaModel",
            tokenizer_kind="wordpiece",
            config=dict(
                model_type="roberta",
                hidden_size=1024,
                num_hidden_layers=24,
                num_attention_heads=16,
                intermediate_size=4096,
                vocab_size=32000,
                max_position_embeddings=514,
                type_vocab_size=1,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                layer_norm_eps=1e-5,
            ),
        ),
    )
}

DEFAULT_PROFILE = "bge-m3-ko"


RERANKER_PROFILES: dict[str, RerankerProfile] = {
    p.name: p
    for p in (
        RerankerProfile(
            name="bge-reranker-v2-m3-ko",
            hub_id="dragonkue/bge-reranker-v2-m3-ko",
            max_seq_length=8192,
            pair_tokens=512,
            architecture="XLMRobertaForSequenceClassification",
            tokenizer_kind="unigram",
            config={**_XLM_ROBERTA_LARGE_8K, "num_labels": 1},
        ),
        RerankerProfile(
            name="bge-reranker-v2-m3",
            hub_id="BAAI/bge-reranker-v2-m3",
            max_seq_length=8192,
            pair_tokens=512,
            architecture="XLMRobertaForSequenceClassification",
            tokenizer_kind="unigram",
            config={**_XLM_ROBERTA_LARGE_8K, "num_labels": 1},
        ),
    )
}

DEFAULT_RERANKER_PROFILE = "bge-reranker-v2-m3-ko"


_Profile = TypeVar("_Profile", bound=TransformerProfile)


def _lookup(table: dict[str, _Profile], name: str, kind: str) -> _Profile:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} profile {name!r}; choose one of {', '.join(table)}") from None


def get_profile(name: str) -> ModelProfile:
    """The embedding profile called `name`, or a ValueError listing the valid names."""
    return _lookup(PROFILES, name, "embedding")


def get_reranker_profile(name: str) -> RerankerProfile:
    """The reranker profile called `name`, or a ValueError listing the valid names."""
    return _lookup(RERANKER_PROFILES, name, "reranker")
