"""Process-wide resources: each is created on first use, once, and shared by threads.

The API process, each Celery worker process and the CLI hold one `Runtime`. Heavy pieces
(Kiwi ~0.5 GB, the model) load lazily so a process only pays for what it uses: the embed
worker never loads Kiwi, the ingest worker never loads the model.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from config.settings import Settings
from services.db import make_engine, make_session_factory

if TYPE_CHECKING:
    from services.embedding.encoder import Encoder, QueryEncoder
    from services.index.base import VectorIndex
    from services.ingest.analyzer import KoreanAnalyzer


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
    def index(self) -> "VectorIndex":
        from services.index import open_index

        return self._once("_index", lambda: open_index(self.settings))

    @property
    def analyzer(self) -> "KoreanAnalyzer":
        from services.ingest.analyzer import get_analyzer

        return self._once("_analyzer", get_analyzer)

    @property
    def tokenizer(self):
        from services.embedding.encoder import load_tokenizer

        return self._once("_tokenizer", lambda: load_tokenizer(self.settings.model_name_or_path))

    @property
    def encoder(self) -> "Encoder":
        from services.embedding.encoder import Encoder

        s = self.settings
        return self._once("_encoder", lambda: Encoder(
            s.model_name_or_path, s.profile, device=s.embedding_device, precision=s.embedding_precision,
            max_batch_tokens=s.embed_max_batch_tokens))

    @property
    def query_encoder(self) -> "QueryEncoder":
        from services.embedding.encoder import QueryEncoder

        return self._once("_query_encoder", lambda: QueryEncoder(
            self.encoder, max_wait_ms=self.settings.query_batch_wait_ms))

    def loaded(self, name: str) -> bool:
        return f"_{name}" in self.__dict__

    def close(self) -> None:
        if self.loaded("query_encoder"):
            self.__dict__["_query_encoder"].close()
        if self.loaded("index"):
            self.__dict__["_index"].close()
        self.engine.dispose()


