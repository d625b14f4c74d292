"""The embedding models one process serves: its own (SAEKIN_EMBEDDING_*) and, loaded on first
use, the model each collection records.

A reindex to another model (`saekin reindex --profile/--model`) switches the collection in the
database; every process then embeds and searches that collection with the model it now records,
without a restart: that is what makes a model change free of downtime. At most
SAEKIN_MAX_MODELS models are held (the process's own always; others least recently used first
out), and a recorded model is used only when its weights hash is still the recorded one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from services.collections.model import RecordedModel, canonical_model
from services.errors import Conflict, ModelUnavailable

if TYPE_CHECKING:
    from services.collections.model import ModelRef
    from services.embedding.encoder import Encoder
    from services.embedding.query_encoder import QueryEncoder

log = logging.getLogger(__name__)

# A model that failed to load is not tried again for this long (each try can mean hub time-outs).
RETRY_FAILED_AFTER_S = 60.0
# An unloaded model's query encoder stops this long after: searches that took it just before finish.
CLOSE_EVICTED_AFTER_S = 30.0


class CollectionEncoders(Protocol):
    """What the embed stage asks: the encoder for a collection's recorded model."""

    def encoder(self, recorded: RecordedModel) -> Encoder: ...


class OneModel:
    """One encoder serving only the collections it embedded (benchmarks, tests and tools that
    load one model); another model's collection is refused (Conflict)."""

    def __init__(self, encoder: Encoder, profile: str, sha256: str | None = None) -> None:
        self._encoder, self.profile, self.sha256 = encoder, profile, sha256

    def encoder(self, recorded: RecordedModel) -> Encoder:
        from services.documents.service import model_mismatch, profile_mismatch

        if recorded.profile != self.profile:
            raise profile_mismatch(recorded.collection, recorded.profile, self.profile)
        if recorded.sha256 and self.sha256 and recorded.sha256 != self.sha256:
            raise model_mismatch(recorded.collection, recorded.sha256, self.sha256)
        return self._encoder


@dataclass
class _Loaded:
    ref: ModelRef
    encoder: Encoder
    query_encoder: QueryEncoder | None = None


class ModelRegistry:
    """Which encoder embeds and searches a collection: the process's own model when the collection
    records it, else the recorded one, loaded once and kept while it is among the last used."""

    def __init__(
        self,
        *,
        profile: str,
        own_ref: Callable[[], ModelRef],
        own_encoder: Callable[[], Encoder],
        own_query_encoder: Callable[[], QueryEncoder],
        load: Callable[[str, str], Encoder],  # (model, profile) -> a new Encoder
        make_query_encoder: Callable[[Encoder], QueryEncoder],
        max_models: int = 2,
    ) -> None:
        self.profile = profile
        self._own_ref = own_ref
        self._own_encoder = own_encoder
        self._own_query_encoder = own_query_encoder
        self._load = load
        self._make_query_encoder = make_query_encoder
        self.max_models = max_models
        self.close_evicted_after_s = CLOSE_EVICTED_AFTER_S
        self._loaded: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        self._failed: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()  # guards the two dicts
        self._loading = threading.Lock()  # one model loads at a time (memory, and hub time-outs)

    def is_own(self, recorded: RecordedModel) -> bool:
        """Whether the process's own model embedded `recorded`'s collection (a collection from
        before weights were recorded counts as the process's when the profile is the same)."""
        if recorded.profile != self.profile:
            return False
        own = self._own_ref()
        if recorded.sha256 and own.sha256:
            return recorded.sha256 == own.sha256
        return recorded.model is None or canonical_model(recorded.model) == own.name

    def encoder(self, recorded: RecordedModel) -> Encoder:
        """The encoder that embeds the collection's documents."""
        if self.is_own(recorded):
            return self._own_encoder()
        return self._other(recorded).encoder

    def query_encoder(self, recorded: RecordedModel) -> QueryEncoder:
        """The (micro-batching) query encoder that searches the collection."""
        if self.is_own(recorded):
            return self._own_query_encoder()
        loaded = self._other(recorded)
        with self._lock:
            if loaded.query_encoder is None:
                loaded.query_encoder = self._make_query_encoder(loaded.encoder)
            return loaded.query_encoder

    def identity(self, recorded: RecordedModel) -> tuple[str, str | None]:
        """(profile, weights hash) of the model serving the collection: collections searched
        together must share it (one question vector)."""
        if self.is_own(recorded):
            return self.profile, self._own_ref().sha256
        return recorded.profile, recorded.sha256

    def loaded_models(self) -> list[str]:
        """The other models held now, most recently used last (for /readyz and tests)."""
        with self._lock:
            return [model for _, model in self._loaded]

    def _other(self, recorded: RecordedModel) -> _Loaded:
        from services.documents.service import model_mismatch, profile_mismatch

        model = canonical_model(recorded.model) if recorded.model is not None else None
        if model is None or model == self._own_ref().name or self.max_models < 2:
            # Nothing to load (an old collection; other weights at this process's own path), or
            # this process serves its own model only.
            if recorded.profile != self.profile:
                raise profile_mismatch(recorded.collection, recorded.profile, self.profile)
            raise model_mismatch(recorded.collection, recorded.sha256 or "", self._own_ref().sha256 or "")
        key = (recorded.profile, model)
        loaded = self._get(key)
        if loaded is None:
            with self._loading:
                loaded = self._get(key) or self._load_other(key)
        if recorded.sha256 and loaded.ref.sha256 and loaded.ref.sha256 != recorded.sha256:
            # The files at the recorded path were replaced since the collection was embedded.
            raise Conflict(
                f"collection {recorded.collection!r} was embedded by {recorded.model} with weights sha256 "
                f"{recorded.sha256[:12]}…, but the weights there now hash to {loaded.ref.sha256[:12]}…: "
                "reindex the collection with the model you want",
                code="model_mismatch",
            )
        return loaded

    def _get(self, key: tuple[str, str]) -> _Loaded | None:
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is not None:
                self._loaded.move_to_end(key)
                return loaded
            failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < RETRY_FAILED_AFTER_S:
            raise ModelUnavailable(failed[1])
        return None

    def _load_other(self, key: tuple[str, str]) -> _Loaded:
        from services.collections.model import model_ref

        profile, model = key
        started = time.monotonic()
        try:
            encoder = self._load(model, profile)
            ref = model_ref(model)
        except Exception as exc:
            reason = f"the model {model} ({profile}) that a collection records could not be loaded: {exc}"[:400]
            with self._lock:
                self._failed[key] = (time.monotonic(), reason)
            log.warning("%s", reason)
            raise ModelUnavailable(reason) from exc
        loaded = _Loaded(ref, encoder)
        with self._lock:
            self._failed.pop(key, None)
            self._loaded[key] = loaded
            evicted = []
            while len(self._loaded) > self.max_models - 1:  # the process's own model takes one place
                evicted.append(self._loaded.popitem(last=False))
        log.info(
            "loaded model %s (%s) for a collection that records it, in %.1f s",
            model,
            profile,
            time.monotonic() - started,
        )
        for (_, old_model), old in evicted:
            log.info("unloading model %s (least recently used; SAEKIN_MAX_MODELS=%d)", old_model, self.max_models)
            if old.query_encoder is not None:
                # Searches that took it just before finish first; then its thread (and model) goes.
                closer = threading.Timer(self.close_evicted_after_s, old.query_encoder.close)
                closer.daemon = True
                closer.start()
        return loaded

    def close(self) -> None:
        with self._lock:
            loaded, self._loaded = list(self._loaded.values()), OrderedDict()
        for entry in loaded:
            if entry.query_encoder is not None:
                entry.query_encoder.close()
