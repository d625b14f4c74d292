"""ModelRegistry: which encoder serves a collection, how many are held, what is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.collections.model import ModelRef, RecordedModel
from services.embedding.registry import ModelRegistry, OneModel
from services.errors import Conflict, ModelUnavailable


class FakeEncoder:
    dim = 4

    def __init__(self, model: str) -> None:
        self.model = model


class FakeQueryEncoder:
    def __init__(self, encoder: FakeEncoder) -> None:
        self.encoder = encoder
        self.closed = False

    def close(self) -> None:
        self.closed = True


OWN = ModelRef("/models/own", "a" * 64)


def registry(monkeypatch, max_models: int = 2, fail: frozenset[str] = frozenset()) -> tuple[ModelRegistry, list[str]]:
    loads: list[str] = []
    own = FakeEncoder(OWN.name)

    def load(model: str, profile: str) -> FakeEncoder:
        loads.append(model)
        if model in fail:
            raise OSError(f"{model}: no such model")
        return FakeEncoder(model)

    # Each other model's weights hash: "b…" for /models/b, and so on.
    monkeypatch.setattr(
        "services.collections.model.model_ref", lambda model: ModelRef(model, model.rsplit("/", 1)[-1][0] * 64)
    )
    own_query = FakeQueryEncoder(own)
    models = ModelRegistry(
        profile="bge-m3-ko",
        own_ref=lambda: OWN,
        own_encoder=lambda: own,  # type: ignore[arg-type,return-value]
        own_query_encoder=lambda: own_query,  # type: ignore[arg-type,return-value]
        load=load,  # type: ignore[arg-type]
        make_query_encoder=FakeQueryEncoder,  # type: ignore[arg-type]
        max_models=max_models,
    )
    return models, loads


def recorded(model: str | None, sha: str | None = None, profile: str = "bge-m3-ko") -> RecordedModel:
    return RecordedModel("c", profile, model, sha)


def test_the_processs_own_model_serves_its_collections_and_those_from_before_models_were_recorded(monkeypatch):
    models, loads = registry(monkeypatch)
    for r in (recorded(OWN.name, OWN.sha256), recorded(None), recorded("/elsewhere/copy", OWN.sha256)):
        assert models.encoder(r).model == OWN.name
    assert loads == [] and models.loaded_models() == []


def test_another_recorded_model_is_loaded_once_and_serves_queries_and_documents(monkeypatch):
    models, loads = registry(monkeypatch)
    b = recorded("/models/b", "b" * 64, profile="ko-sroberta-multitask")
    encoder = models.encoder(b)
    assert encoder.model == "/models/b"
    assert models.query_encoder(b).encoder is encoder
    assert models.encoder(b) is encoder and loads == ["/models/b"]
    assert models.identity(b) == ("ko-sroberta-multitask", "b" * 64) != models.identity(recorded(None))


def test_the_least_recently_used_other_model_is_unloaded_past_the_limit(monkeypatch):
    models, loads = registry(monkeypatch, max_models=3)
    models.close_evicted_after_s = 0.0
    b, c, d = (recorded(f"/models/{x}", x * 64) for x in "bcd")
    query_b = models.query_encoder(b)
    models.encoder(c)
    models.encoder(b)  # b used last: c goes first
    models.encoder(d)
    assert models.loaded_models() == ["/models/b", "/models/d"]
    assert not query_b.closed
    models.encoder(c)
    assert models.loaded_models() == ["/models/d", "/models/c"]
    deadline = time.monotonic() + 10  # the unloaded model's query encoder closes on a timer
    while not query_b.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert query_b.closed
    assert loads == ["/models/b", "/models/c", "/models/d", "/models/c"]


def test_weights_that_changed_since_the_collection_was_embedded_are_refused(monkeypatch):
    models, _ = registry(monkeypatch)
    with pytest.raises(Conflict) as refused:
        models.encoder(recorded("/models/b", "0" * 64))
    assert refused.value.code == "model_mismatch" and "weights there now hash" in refused.value.message
    # Other weights at the process's own path: nothing to load, the same refusal.
    with pytest.raises(Conflict) as own_path:
        models.encoder(recorded(OWN.name, "0" * 64))
    assert own_path.value.code == "model_mismatch"


def test_a_process_limited_to_one_model_refuses_the_others_without_loading(monkeypatch):
    models, loads = registry(monkeypatch, max_models=1)
    with pytest.raises(Conflict) as other_weights:
        models.query_encoder(recorded("/models/b", "b" * 64))
    assert other_weights.value.code == "model_mismatch"
    with pytest.raises(Conflict) as other_profile:
        models.encoder(recorded("/models/b", "b" * 64, profile="ko-sroberta-multitask"))
    assert other_profile.value.code == "profile_mismatch" and loads == []


def test_a_model_that_fails_to_load_is_a_503_with_the_reason_and_is_not_retried_at_once(monkeypatch):
    models, loads = registry(monkeypatch, fail={"/models/b"})
    for _ in range(2):
        with pytest.raises(ModelUnavailable, match="could not be loaded: /models/b: no such model"):
            models.encoder(recorded("/models/b", "b" * 64))
    assert loads == ["/models/b"]


def test_a_local_directory_is_one_model_however_its_path_is_spelled(monkeypatch, tmp_path: Path):
    models, loads = registry(monkeypatch)
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    first = models.encoder(recorded("m"))
    assert models.encoder(recorded(str(tmp_path / "m"))) is first and loads == [str(tmp_path / "m")]


def test_one_model_refuses_collections_of_another():
    one = OneModel(FakeEncoder("x"), "bge-m3-ko", "a" * 64)
    assert one.encoder(recorded("/any", None)).model == "x"
    with pytest.raises(Conflict, match="profile"):
        one.encoder(recorded("/any", None, profile="ko-sroberta-multitask"))
    with pytest.raises(Conflict) as other:
        one.encoder(recorded("/any", "b" * 64))
    assert other.value.code == "model_mismatch"
