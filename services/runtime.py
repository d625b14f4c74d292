"""Process-wide resources: each is created on first use, once, and shared by threads.

The API process, each Celery worker process and the CLI hold one `Runtime`. Heavy pieces
(Kiwi ~0.5 GB, the model) load lazily so a process only pays for what it uses: the embed
worker never loads Kiwi, the ingest worker never loads the model.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from config.settings import Settings
from services.db import make_engine, make_session_factory

if TYPE_CHECKING:
    from services.embedding.encoder import Encoder
    from services.embedding.query_encoder import QueryEncoder
    from services.embedding.reranker import Reranker
    from services.index.base import VectorIndex
    from services.ingest.analyzer import KoreanAnalyzer

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.sqlalchemy_url)
        self.session_factory = make_session_factory(self.engine)
        self._lock = threading.RLock()

    def _once(self, name: str, build):
        # cached_property is not thread-safe; the API's thread pool may race on first use.
        with self._lock:
            if name not in self.__dict__:
                self.__dict__[name] = build()
            return self.__dict__[name]

    @property
    def index(self) -> VectorIndex:
        from services.index import open_index

        return self._once("_index", lambda: open_index(self.settings))

    @property
    def analyzer(self) -> KoreanAnalyzer:
        from services.ingest.analyzer import get_analyzer

        return self._once("_analyzer", get_analyzer)

    @property
    def tokenizer(self):
        from services.embedding.loading import load_tokenizer

        return self._once("_tokenizer", lambda: load_tokenizer(self.settings.model_name_or_path))

    @property
    def chunk_tokens(self) -> int:
        """The chunk budget: the profile's (or SAEKIN_CHUNK_TOKENS), but never more than the model
        reads: a model of another family than the profile (say a 128-token one under bge-m3-ko's
        510) would otherwise silently drop the end of every long chunk."""
        return self._once("_chunk_tokens", self._chunk_tokens)

    def _chunk_tokens(self) -> int:
        budget = self.settings.effective_chunk_tokens
        readable = self.tokenizer.model_max_length - self.tokenizer.num_special_tokens_to_add()
        if readable < budget:
            log.warning(
                "the model reads at most %d tokens, fewer than the chunk budget of %d (profile %s): "
                "chunks are cut at %d; check SAEKIN_EMBEDDING_PROFILE against the model",
                readable,
                budget,
                self.settings.embedding_profile,
                readable,
            )
            return readable
        return budget

    @property
    def encoder(self) -> Encoder:
        from services.embedding.encoder import Encoder

        s = self.settings
        return self._once(
            "_encoder",
            lambda: Encoder(
                s.model_name_or_path,
                s.profile,
                device=s.embedding_device,
                precision=s.embedding_precision,
                max_batch_tokens=s.embed_max_batch_tokens,
            ),
        )

    @property
    def query_encoder(self) -> QueryEncoder:
        from services.embedding.query_encoder import QueryEncoder

        return self._once(
            "_query_encoder", lambda: QueryEncoder(self.encoder, max_wait_ms=self.settings.query_batch_wait_ms)
        )

    @property
    def reranker(self) -> Reranker | None:
        """The cross-encoder reranker, or None when reranking is not configured (SAEKIN_RERANK_*)."""
        return self._once("_reranker", self._load_reranker)

    def _load_reranker(self) -> Reranker | None:
        from services.embedding.reranker import Reranker

        s = self.settings
        profile, model = s.reranker_profile, s.reranker_name_or_path
        if profile is None or model is None:
            return None
        return Reranker(
            model,
            profile,
            device=s.rerank_device,
            precision=s.rerank_precision,
            max_tokens=s.rerank_max_tokens,
            max_batch_tokens=s.rerank_max_batch_tokens,
        )

    def loaded(self, name: str) -> bool:
        return f"_{name}" in self.__dict__

    def close(self) -> None:
        if self.loaded("query_encoder"):
            self.__dict__["_query_encoder"].close()
        if self.loaded("index"):
            self.__dict__["_index"].close()
        self.engine.dispose()
