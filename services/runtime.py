"""Process-wide resources, each created on first use, once, and shared by threads.

The API process, each Celery worker process and the CLI hold one `Runtime`: it is where they
are assembled, and the only code that sees all of it. Domain code (the pipeline stages, search,
evaluation) takes the collaborators it uses as keyword arguments. Heavy pieces (Kiwi ~0.5 GB,
the model) load lazily, so a process pays only for what it uses: the embed worker never loads
Kiwi, the ingest worker never loads the model.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from config.settings import Settings
from services.db import make_engine, make_session_factory

if TYPE_CHECKING:
    from services.collections.model import ModelRef, RecordedModel
    from services.context.tokens import HFCounter, Resolved, TokenizerName
    from services.documents.lifecycle import Lease, WorkItem
    from services.embedding.encoder import Encoder
    from services.embedding.query_encoder import QueryEncoder
    from services.embedding.registry import ModelRegistry
    from services.embedding.reranker import Reranker
    from services.index.base import VectorIndex
    from services.ingest.analyzer import KoreanAnalyzer
    from services.ingest.extract import ExtractLimits
    from services.ingest.policy import ChunkPolicy

T = TypeVar("T")
log = logging.getLogger(__name__)

# What loading the embedding model builds: a failure of one is remembered (model_failure), so that
# later callers get the reason at once instead of waiting for the same hub time-outs again.
_MODEL_PARTS = ("_tokenizer", "_encoder", "_query_encoder", "_model_ref")
# Runtime attributes that hold a model, by the name the saekin_model_loaded gauge gives them.
_MODELS = {"_encoder": "embedding", "_reranker": "reranker", "_analyzer": "analyzer"}


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.sqlalchemy_url)
        self.session_factory = make_session_factory(self.engine)
        self._lock = threading.RLock()
        self._model_failure: str | None = None

    def _once(self, name: str, build: Callable[[], T]) -> T:
        # cached_property is not thread-safe; the API's thread pool may race on first use.
        with self._lock:
            if name not in self.__dict__:
                if name in _MODEL_PARTS:
                    self.__dict__[name] = self._build_model_part(build)
                else:
                    self.__dict__[name] = build()
                if name in _MODELS and self.__dict__[name] is not None:
                    from services.observability.metrics import MODEL_LOADED

                    MODEL_LOADED.labels(_MODELS[name]).set(1)
            return self.__dict__[name]

    def _build_model_part(self, build: Callable[[], T]) -> T:
        from services.embedding.loading import model_load_error
        from services.errors import ModelUnavailable

        if self._model_failure is not None:
            raise ModelUnavailable(self._model_failure, code="model_unavailable")
        try:
            return build()
        except ModelUnavailable as exc:
            self._model_failure = exc.message
            raise
        except Exception as exc:
            self._model_failure = model_load_error(self.settings, exc)
            raise ModelUnavailable(self._model_failure, code="model_unavailable") from exc

    def note_warm_up_failure(self) -> None:
        """The API's warm-up failed on its way to the model (the index, Kiwi): /readyz says so."""
        import sys

        exc = sys.exc_info()[1]
        self._model_failure = f"warm-up failed before the model was ready: {type(exc).__name__}: {exc}"[:400]

    @property
    def model_failure(self) -> str | None:
        """Why the embedding model could not be loaded in this process, or None (loaded, or not tried)."""
        return self._model_failure

    @property
    def profile(self) -> str:
        """The embedding profile this process's model belongs to."""
        return self.settings.embedding_profile

    @property
    def index(self) -> VectorIndex:
        from services.index import open_index

        return self._once("_index", lambda: open_index(self.settings))

    @property
    def analyzer(self) -> KoreanAnalyzer:
        from services.ingest.analyzer import get_analyzer

        return self._once("_analyzer", get_analyzer)

    @property
    def tokenizer(self) -> Any:
        from services.embedding.loading import load_tokenizer

        return self._once("_tokenizer", lambda: load_tokenizer(self.settings.model_name_or_path))

    @property
    def chunking(self) -> ChunkPolicy:
        from services.ingest.policy import ChunkPolicy

        return self._once("_chunking", lambda: ChunkPolicy.from_settings(self.settings, self.tokenizer))

    def chunking_for(self, recorded: RecordedModel) -> ChunkPolicy:
        """How the collection's documents are chunked: by the tokenizer and budget of the model it
        records (this process's own policy for its own model, and for collections that record none)."""
        from services.collections.model import canonical_model

        s = self.settings
        if recorded.model is None:
            return self.chunking
        model = canonical_model(recorded.model)
        if recorded.profile == s.embedding_profile and model == canonical_model(s.model_name_or_path):
            return self.chunking
        return self._once(f"_chunking:{recorded.profile}:{model}", lambda: self.chunk_policy(recorded.profile, model))

    def chunk_policy(self, profile: str, model: str) -> ChunkPolicy:
        """The chunk policy of `model` (of `profile`), as this process's settings make one for their own."""
        from services.embedding.loading import load_tokenizer
        from services.ingest.policy import ChunkPolicy

        target = self.settings.model_copy(update={"embedding_profile": profile, "embedding_model": model})
        return ChunkPolicy.from_settings(target, load_tokenizer(model))

    @property
    def extract_limits(self) -> ExtractLimits:
        from services.ingest.extract import ExtractLimits

        return ExtractLimits(time_limit_s=self.settings.extract_time_limit_s)

    @property
    def encoder(self) -> Encoder:
        s = self.settings
        return self._once("_encoder", lambda: self._new_encoder(s.model_name_or_path, s.embedding_profile))

    def _new_encoder(self, model_name_or_path: str, profile: str) -> Encoder:
        from config.profiles import get_profile
        from services.embedding.encoder import Encoder

        s = self.settings
        return Encoder(
            model_name_or_path,
            get_profile(profile),
            device=s.embedding_device,
            precision=s.embedding_precision,
            max_batch_tokens=s.embed_max_batch_tokens,
            backend=s.embedding_backend,
            export_dir=s.encoder_export_dir,
            onnx_optimization=s.embedding_onnx_optimization,
        )

    @property
    def models(self) -> ModelRegistry:
        """The encoder of each collection: this process's model, or the one the collection records."""
        from services.embedding.query_encoder import QueryEncoder
        from services.embedding.registry import ModelRegistry

        def query_encoder(encoder: Encoder) -> QueryEncoder:
            return QueryEncoder(encoder, max_wait_ms=self.settings.query_batch_wait_ms)

        return self._once(
            "_models",
            lambda: ModelRegistry(
                profile=self.profile,
                own_ref=lambda: self.model_ref,
                own_encoder=lambda: self.encoder,
                own_query_encoder=lambda: self.query_encoder,
                load=self._new_encoder,
                make_query_encoder=query_encoder,
                max_models=self.settings.max_models,
            ),
        )

    def encoder_for(self, model_name_or_path: str, profile: str) -> Encoder:
        """The encoder of `model_name_or_path` (of `profile`): this process's own, or another one
        (a reindex to a new model), which then serves the collection after the switch."""
        from services.collections.model import RecordedModel

        s = self.settings
        if model_name_or_path == s.model_name_or_path and profile == s.embedding_profile:
            return self.encoder
        return self.models.encoder(RecordedModel("(reindex target)", profile, model_name_or_path, None))

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

    @property
    def model_ref(self) -> ModelRef:
        """The embedding model's name and weights hash, which collections record."""
        from services.collections.model import model_ref

        return self._once("_model_ref", lambda: model_ref(self.settings.model_name_or_path))

    @property
    def embedding_counter(self) -> HFCounter:
        """Counts tokens with the embedding model's tokenizer (context budgets)."""
        from services.context.tokens import HFCounter

        return self._once("_embedding_counter", lambda: HFCounter(self.tokenizer, self.settings.model_name_or_path))

    def counter_for(self, name: TokenizerName) -> Resolved:
        """The token counter for a context budget; the embedding model's, with a note, when an
        OpenAI encoding's file is not on this machine."""
        from services.context.tokens import resolve_counter

        return resolve_counter(name, directory=self.settings.tiktoken_dir, embedding=self.embedding_counter)

    def lease(self, owner: str) -> Lease:
        """The lease `owner` (a task id, a thread of this process) holds on the stages it claims."""
        from services.documents.lifecycle import Lease

        return Lease(owner[:64], self.settings.stage_lease_s, self.settings.stage_max_attempts)

    @property
    def embed_batch_chunks(self) -> int:
        """SAEKIN_EMBED_TASK_MAX_CHUNKS, else by device: seconds of work on a GPU, minutes on CPU."""
        return self.settings.embed_task_max_chunks or (2048 if self.encoder.is_cuda else 128)

    def process_now(self, items: Sequence[WorkItem]) -> None:
        """Both ingestion stages for `items` in this process (the CLI, evaluation)."""
        from services.ingest.pipeline import process_now

        process_now(
            items,
            engine=self.engine,
            analyzer=self.analyzer,
            chunking=self.chunking_for,
            extract_limits=self.extract_limits,
            models=self.models,
            index=self.index,
            lease=self.lease(f"inline-{os.getpid()}-{threading.get_ident()}"),
        )

    def prepare(self, item: WorkItem, *, owner: str) -> bool:
        """The prepare stage of `item` in this process (the embedded service's threads); whether
        chunks were written. Failures are recorded on the document."""
        from services.ingest.pipeline import prepare_or_fail

        return prepare_or_fail(
            item,
            engine=self.engine,
            analyzer=self.analyzer,
            chunking=self.chunking_for,
            extract_limits=self.extract_limits,
            lease=self.lease(owner),
        )

    def embed_waiting(self, *, owner: str) -> bool:
        """Claim the documents waiting for the embed stage (a batch) and embed them in this process
        (the embedded service's embed thread); whether more wait. Failures are recorded."""
        from services.documents import lifecycle
        from services.ingest.pipeline import embed_claimed

        lease = self.lease(owner)
        batch = lifecycle.claim_embed_batch(self.engine, lease=lease, max_chunks=self.embed_batch_chunks)
        if not batch.items:
            return False
        try:
            embed_claimed(batch, engine=self.engine, models=self.models, index=self.index, lease=lease)
        except Exception as exc:  # the whole batch failed (model, index): each document keeps the reason
            log.exception("embedding failed for %s", batch.items)
            lifecycle.fail_claim(self.engine, lease.owner, f"internal error while embedding: {exc!r}")
        return batch.more_waiting

    def loaded(self, name: str) -> bool:
        return f"_{name}" in self.__dict__

    def close(self) -> None:
        if any(name in self.__dict__ for name in _MODELS):
            from services.observability.metrics import MODEL_LOADED

            for name, label in _MODELS.items():
                if self.__dict__.get(name) is not None:
                    MODEL_LOADED.labels(label).set(0)
        if self.loaded("query_encoder"):
            self.__dict__["_query_encoder"].close()
        if self.loaded("models"):
            self.__dict__["_models"].close()
        if self.loaded("index"):
            self.__dict__["_index"].close()
        self.engine.dispose()
