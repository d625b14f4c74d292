"""Runtime settings, read from SAEKIN_* environment variables.

No `.env` file is read here: docker compose reads it for the containers (env_file), so URLs placed
there for the compose stack do not turn `make run` on the same checkout into production mode.

Obtain them through `get_settings()`; nothing here is created at import time. Leaving the
database, broker and Qdrant URLs empty selects the embedded mode: SQLite, Qdrant Edge and
in-process ingestion under `data_dir`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.profiles import (
    DEFAULT_PROFILE,
    DEFAULT_RERANKER_PROFILE,
    PROFILES,
    RERANKER_PROFILES,
    ModelProfile,
    RerankerProfile,
    get_profile,
    get_reranker_profile,
)

Mode = Literal["embedded", "production"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAEKIN_", extra="ignore")

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path("./data"), description="Embedded mode: SQLite file, Qdrant Edge shards, uploads.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. Empty: SQLite in data_dir."
    )
    broker_url: str | None = Field(
        None, description="Celery broker (Redis), e.g. redis://localhost:6379/0. Empty: in-process ingestion."
    )
    qdrant_url: str | None = Field(
        None, description="Qdrant server URL, e.g. http://localhost:6333. Empty: Qdrant Edge in data_dir."
    )
    qdrant_api_key: str | None = Field(None, description="API key for the Qdrant server, if it requires one.")
    qdrant_path: Path | None = Field(
        None, description="Tests only: qdrant-client local mode at this path (brute force, one process)."
    )
    index_filter_index_limit: int = Field(
        16,
        ge=0,
        le=256,
        description="Metadata keys per collection with a payload index: those its settings declare "
        "(filter_indexes, at most this many), then those a search filter first uses.",
    )
    index_compact: bool = Field(
        True,
        description="New collections keep int8 copies of the dense vectors in RAM (searched, then rescored with "
        "the float originals) and the originals, HNSW graph, sparse index and payloads on disk (memory-mapped). "
        "Existing collections keep their storage.",
    )
    index_hnsw_ef: int = Field(
        512,
        ge=16,
        le=4096,
        description="Candidates a dense search explores in an HNSW graph: more gives better recall and costs time.",
    )
    index_optimize_after: int = Field(
        10_000,
        ge=0,
        description="Embedded (Qdrant Edge): optimise a collection in a child process, while it keeps serving, "
        "once this many points (and a quarter of its size) were written since the last time; 0: only "
        "`saekin optimize`.",
    )

    # --- HTTP ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `saekin serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `saekin serve` listens on.")
    # NoDecode: the environment gives "k1,k2", not JSON; _split_keys splits it.
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer tokens; when set every route but health, docs and the console page "
        "requires one (checked before the body is read).",
    )
    allow_no_auth: bool = Field(
        False,
        description="Let `saekin serve` listen on a non-loopback address without SAEKIN_API_KEYS (anyone who "
        "reaches the port can then read and delete every document).",
    )
    max_json_mb: float = Field(
        4.0,
        gt=0,
        description="Largest JSON body (search, context, rerank, PATCH...); bigger ones get 413 while streaming.",
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token that opens GET /metrics only (for Prometheus). With API keys set, /metrics "
        "otherwise needs an admin key; without keys it is open like the API.",
    )
    key_rate_limit_rps: float | None = Field(
        None,
        gt=0,
        description="Requests per second per API key (a token bucket of one second's requests), for keys "
        "without their own limit. Empty: unlimited.",
    )
    key_upload_mb_per_day: float | None = Field(
        None,
        gt=0,
        description="Upload megabytes per API key and UTC day, for keys without their own. Empty: unlimited.",
    )
    max_upload_mb: float = Field(
        50.0, gt=0, description="Largest accepted upload; bigger ones get 413 while streaming."
    )

    # --- embedding -------------------------------------------------------------------------
    embedding_profile: str = Field(DEFAULT_PROFILE, description=f"One of: {', '.join(PROFILES)}.")
    embedding_model: str | None = Field(None, description="Hub id or local directory overriding the profile's hub id.")
    embedding_device: str | None = Field(
        None, description="torch device (cuda, cuda:1, cpu). Empty: cuda when available."
    )
    embedding_precision: Literal["fp32", "fp16", "bf16", "int8"] | None = Field(
        None,
        description="Empty: bf16 on CUDA, fp32 on CPU. bf16/int8 on CPU trade accuracy for speed; check with `saekin eval`.",
    )
    embedding_backend: Literal["torch", "onnx", "openvino"] = Field(
        "torch",
        description="What runs the embedding transformer: torch (any device), or on CPU onnx (ONNX Runtime) or "
        "openvino, from files exported once per model into data_dir/encoders (`saekin export-encoder` does it "
        "ahead of time). With onnx/openvino, SAEKIN_EMBEDDING_PRECISION is fp32 (default) or int8.",
    )
    embedding_onnx_optimization: Literal["O1", "O2", "O3"] = Field(
        "O2",
        description="ONNX Runtime graph optimisation of the onnx backend: O1 basic, O2 + transformer fusions "
        "(exact), O3 + GELU approximation.",
    )
    embed_max_batch_tokens: int = Field(
        16384, ge=512, description="Padded tokens per model forward pass (embed worker)."
    )
    embed_task_max_chunks: int | None = Field(
        None,
        ge=1,
        description="Chunks one embed task takes, from as many waiting documents as fit; the rest go "
        "to the next task, which another GPU's worker can start meanwhile. Empty: 2048 on a GPU, 128 on CPU "
        "(so that a task on CPU stays well inside the task time limit).",
    )
    max_models: int = Field(
        2,
        ge=1,
        description="Embedding models one process holds: its own, and the models collections record "
        "(a collection reindexed to another model is served by that model at once, without a restart), "
        "least recently used unloaded first. 1: only its own; other collections answer 409 model_mismatch.",
    )
    query_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=100,
        description="How long an idle query encoder waits for more questions before encoding. "
        "Questions that arrive while the model works share the next pass anyway, so 0 adds no latency.",
    )

    # --- reranking (off unless SAEKIN_RERANK_PROFILE or SAEKIN_RERANK_MODEL is set) --------------
    rerank_profile: str | None = Field(
        None,
        description=f"Cross-encoder reranker profile, one of: {', '.join(RERANKER_PROFILES)}. Empty, and "
        f"SAEKIN_RERANK_MODEL empty too: no reranking; with only the model set: {DEFAULT_RERANKER_PROFILE}.",
    )
    rerank_model: str | None = Field(
        None, description="Hub id or local directory of the reranker, overriding the profile's hub id."
    )
    rerank_device: str | None = Field(None, description="torch device of the reranker. Empty: cuda when available.")
    rerank_precision: Literal["fp32", "fp16", "bf16", "int8"] | None = Field(
        None,
        description="Empty: bf16 on CUDA, fp32 on CPU. bf16 (CPUs with native bf16 only) and int8 on CPU trade "
        "accuracy for speed.",
    )
    rerank_max_tokens: int | None = Field(
        None,
        ge=32,
        le=8192,
        description="Tokens of one (question, passage) pair, special tokens included; a longer passage is scored "
        "on the window holding the question's highlights. Empty: the profile's (512).",
    )
    rerank_max_batch_tokens: int = Field(
        8192, ge=512, description="Padded tokens per reranker forward pass (capped at 2048 on CPU)."
    )

    # --- chunking --------------------------------------------------------------------------
    chunk_tokens: int | None = Field(
        None, ge=16, description="Chunk budget in model tokens; capped by the profile's max length."
    )
    chunk_overlap_tokens: int = Field(
        64, ge=0, description="Whole sentences of overlap between neighbouring chunks, in tokens."
    )

    # --- keyword (sparse) scoring ------------------------------------------------------
    bm25_k1: float = Field(1.2, ge=0, le=10, description="BM25 term-frequency saturation.")
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation.")
    bm25_avg_terms: float | None = Field(
        None,
        gt=0,
        description="Average terms per chunk for BM25; default 0.65 x the chunk token budget "
        "(Kiwi content morphemes plus bigrams per model token, measured on Korean text).",
    )

    # --- logs and worker metrics ----------------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per record; json: one JSON object per line (log shippers)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged.")
    worker_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="`saekin worker` serves Prometheus metrics of all its pool processes on this port "
        "(multiprocess mode). Empty: no worker metrics.",
    )

    # --- workers -----------------------------------------------------------------------------
    task_time_limit_s: int = Field(1800, ge=10, description="Hard limit for one ingest or embed task.")
    extract_time_limit_s: int = Field(120, ge=1, description="Extraction of one document is abandoned after this long.")
    worker_max_tasks_per_child: int = Field(
        200,
        ge=0,
        description="An ingest worker's pool process is replaced after this many tasks (0: never), so that a "
        "process left in a bad state cannot fail tasks for ever.",
    )

    # --- reliability: leases, the reaper, backpressure ----------------------------------------
    stage_lease_s: float = Field(
        30.0,
        ge=1,
        description="Lease of a claimed stage (prepare or embed); the worker renews it every third of it while it "
        "works. Once it has expired the document is taken over by another worker.",
    )
    stage_max_attempts: int = Field(
        3,
        ge=1,
        description="Claims of one stage of one document (its worker died, or the task was retried) before the "
        "document fails with a reason naming the stage and the attempts.",
    )
    reaper_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often the reaper (in every worker, and in the embedded service) looks for expired leases "
        "and documents whose task was lost.",
    )
    redispatch_after_s: float = Field(
        60.0,
        ge=1,
        description="A document queued (or waiting for the embed stage) this long without being taken is sent "
        "again: its message may have been lost with the broker. A second message for a taken document is a no-op.",
    )
    max_in_flight_documents: int = Field(
        1000,
        ge=0,
        description="Uploads answer 429 with Retry-After while this many documents are queued or processing "
        "(0: no limit).",
    )
    prepare_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="Embedded mode: documents prepared (extracted, analysed, chunked) at once; extraction of files "
        "runs in child processes, Kiwi in native threads.",
    )

    # --- RAG serving -------------------------------------------------------------------------
    tiktoken_dir: Path | None = Field(
        None,
        description="Directory holding tiktoken encoding files (o200k_base.tiktoken, cl100k_base.tiktoken) "
        "for context budgets; without them tokens are counted with the embedding model's tokenizer.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("embedding_profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        get_profile(value)
        return value

    @field_validator("rerank_profile")
    @classmethod
    def _known_reranker(cls, value: str | None) -> str | None:
        if value:
            get_reranker_profile(value)
        return value or None

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        """Relative paths are resolved once, against the directory the process started in: a
        worker or a later `cd` then uses the same files, and errors name the absolute path tried."""
        self.data_dir = Path(os.path.abspath(self.data_dir.expanduser()))
        if self.tiktoken_dir is not None:
            self.tiktoken_dir = Path(os.path.abspath(self.tiktoken_dir.expanduser()))
        for field in ("embedding_model", "rerank_model"):
            value = getattr(self, field)
            if value and (Path(value).expanduser().exists() or looks_like_path(value)):
                setattr(self, field, os.path.abspath(Path(value).expanduser()))
        return self

    @model_validator(mode="after")
    def _backend_fits_device_and_precision(self) -> Settings:
        if self.embedding_backend != "torch":
            if self.embedding_device not in (None, "cpu"):
                raise ValueError(
                    f"SAEKIN_EMBEDDING_BACKEND={self.embedding_backend} runs on the CPU only; "
                    f"SAEKIN_EMBEDDING_DEVICE={self.embedding_device} needs SAEKIN_EMBEDDING_BACKEND=torch"
                )
            allowed = ("fp32", "int8", "bf16") if self.embedding_backend == "openvino" else ("fp32", "int8")
            if self.embedding_precision not in (None, *allowed):
                raise ValueError(
                    f"SAEKIN_EMBEDDING_BACKEND={self.embedding_backend} takes SAEKIN_EMBEDDING_PRECISION "
                    f"{' or '.join(allowed)}, not {self.embedding_precision}"
                )
        return self

    @model_validator(mode="after")
    def _production_needs_all_three(self) -> Settings:
        if self.broker_url and not self.database_url:
            raise ValueError(
                "SAEKIN_BROKER_URL needs SAEKIN_DATABASE_URL: workers on other hosts cannot share a SQLite file"
            )
        if self.broker_url and not (self.qdrant_url or self.qdrant_path):
            raise ValueError(
                "SAEKIN_BROKER_URL needs SAEKIN_QDRANT_URL: Qdrant Edge cannot be shared between processes"
            )
        return self

    @property
    def mode(self) -> Mode:
        return "production" if self.broker_url else "embedded"

    @property
    def profile(self) -> ModelProfile:
        return get_profile(self.embedding_profile)

    @property
    def model_name_or_path(self) -> str:
        return self.embedding_model or self.profile.hub_id

    @property
    def reranker_profile(self) -> RerankerProfile | None:
        """The reranker's profile, or None when reranking is not configured."""
        if not (self.rerank_profile or self.rerank_model):
            return None
        return get_reranker_profile(self.rerank_profile or DEFAULT_RERANKER_PROFILE)

    @property
    def reranker_name_or_path(self) -> str | None:
        """The reranker to load (hub id or directory), or None when reranking is not configured."""
        profile = self.reranker_profile
        return None if profile is None else self.rerank_model or profile.hub_id

    @property
    def encoder_export_dir(self) -> Path:
        """Where the onnx/openvino encoder backends keep their exported models."""
        return self.data_dir / "encoders"

    @property
    def effective_chunk_tokens(self) -> int:
        budget = self.profile.chunk_tokens
        return min(self.chunk_tokens, budget) if self.chunk_tokens else budget

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'saekin.db').resolve()}"

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)

    @property
    def key_upload_bytes_per_day(self) -> int | None:
        return int(self.key_upload_mb_per_day * 1024 * 1024) if self.key_upload_mb_per_day else None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def looks_like_path(name: str) -> bool:
    """A model name meant as a directory, not a hub id (`org/model`)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
