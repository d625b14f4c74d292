"""Token-budget batching (pure planning, batch building, prefetching); no model needed."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.embedding import batching
from services.embedding.batching import (
    batch_token_budget,
    packed_batch,
    padded_batch,
    plan_batches,
    plan_packed_and_padded,
    prefetch,
)

# --- plan_batches ---------------------------------------------------------------------------------


def _check_plan(lengths, budget, max_batch_size=None):
    batches = plan_batches(lengths, budget, max_batch_size=max_batch_size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every text exactly once
    for b in batches:
        assert b
        padded = len(b) * max(max(lengths[i] for i in b), 1)
        assert padded <= budget or len(b) == 1  # over budget only for a single long text
        if max_batch_size is not None:
            assert len(b) <= max_batch_size
    # longest first: batch maxima never increase
    maxima = [max(lengths[i] for i in b) for b in batches]
    assert maxima == sorted(maxima, reverse=True)
    return batches


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=9000), max_size=300),
    budget=st.integers(min_value=1, max_value=20000),
    max_batch_size=st.one_of(st.none(), st.integers(min_value=1, max_value=64)),
)
def test_plan_batches_invariants(lengths, budget, max_batch_size):
    _check_plan(lengths, budget, max_batch_size)


def test_plan_batches_examples():
    assert plan_batches([], 100) == []
    assert plan_batches([10, 50, 20], 100) == [[1, 2], [0]]  # 2 x 50 = 100 fits; 3 x 50 does not
    assert plan_batches([10, 50, 20], 99) == [[1], [2, 0]]
    assert plan_batches([512] * 8, 2048) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert plan_batches([5000, 3], 1000) == [[0], [1]]
    # min_fill: a text joins only if it is at least that fraction of the batch's longest
    assert plan_batches([100, 80, 70, 40], 1000, min_fill=0.75) == [[0, 1], [2], [3]]
    assert plan_batches([100, 80, 70, 40], 1000) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError):
        plan_batches([1], 0)
    with pytest.raises(ValueError):
        plan_batches([1], 10, min_fill=1.5)


# --- packed and padded ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=600), max_size=80),
    budget=st.integers(min_value=64, max_value=4096),
    can_pack=st.booleans(),
)
def test_plan_with_packing_places_every_text_once(lengths, budget, can_pack):
    plan = plan_packed_and_padded(lengths, budget, can_pack=can_pack, min_fill=batching.CPU_MIN_FILL)
    assert sorted(i for _, batch in plan for i in batch) == list(range(len(lengths)))
    for packed, batch in plan:
        if packed:
            assert can_pack
            assert all(lengths[i] <= batching.PACK_MAX_TOKENS for i in batch)
            assert sum(lengths[i] for i in batch) <= min(batching.PACK_GROUP_TOKENS, budget) or len(batch) == 1
        else:
            assert not can_pack or all(lengths[i] > batching.PACK_MAX_TOKENS for i in batch)
            assert len(batch) * max(lengths[i] for i in batch) <= budget or len(batch) == 1


def test_padded_and_packed_batches():
    ids = [[5, 6, 7], [8], [9, 10]]
    batch = padded_batch(ids, [0, 2, 1], pad_token_id=1, offset=10, type_ids=[[0, 0, 1], [0], [0, 1]])
    assert batch.indices.tolist() == [10, 12, 11] and batch.padded and len(batch) == 3
    assert batch.input_ids.tolist() == [[5, 6, 7], [9, 10, 1], [8, 1, 1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert batch.token_type_ids is not None and batch.token_type_ids.tolist() == [[0, 0, 1], [0, 1, 0], [0, 0, 0]]

    first, second = batch.halves()
    assert first.indices.tolist() == [10] and first.input_ids.tolist() == [[5, 6, 7]] and not first.padded
    assert second.input_ids.tolist() == [[9, 10], [8, 1]]  # trimmed to its own longest row
    assert second.padded and second.token_type_ids is not None and second.token_type_ids.shape == (2, 2)

    packed = packed_batch(ids, [0, 1], position_offset=2)
    assert packed.input_ids.tolist() == [[5, 6, 7, 8]] and packed.lengths == [3, 1]
    assert packed.position_ids is not None and packed.position_ids.tolist() == [[2, 3, 4, 2]]
    mask = packed.attention_mask[0, 0].numpy()
    assert mask[:3, :3].all() and not mask[3, :3].any() and mask[3, 3]
    with pytest.raises(ValueError):
        packed.halves()


def test_batch_budget_is_capped_on_cpu_for_real_sized_models_only():
    assert batch_token_budget(16384, is_cuda=False, hidden_size=64) == 16384
    assert batch_token_budget(16384, is_cuda=False, hidden_size=1024) == batching.CPU_MAX_BATCH_TOKENS
    assert batch_token_budget(16384, is_cuda=True, hidden_size=1024) == 16384
    assert batch_token_budget(1024, is_cuda=False, hidden_size=1024) == 1024
    assert batch_token_budget(16384, is_cuda=False, hidden_size=1024, cpu_cap=None) == 16384
    with pytest.raises(ValueError):
        batch_token_budget(0, is_cuda=True, hidden_size=64)


# --- prefetch -------------------------------------------------------------------------------------


def _batches(n: int):
    for i in range(n):
        yield padded_batch([[i + 3]], [0], pad_token_id=1, offset=i)


def test_prefetch_yields_in_order_and_reraises():
    items, stop = prefetch(_batches(20), depth=2)
    assert [int(b.indices[0]) for b in items] == list(range(20))
    stop.set()

    def failing():
        yield from _batches(3)
        raise RuntimeError("tokenizer broke")

    items, stop = prefetch(failing())
    got = []
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        for b in items:
            got.append(int(b.indices[0]))
    assert got == [0, 1, 2]


def test_prefetch_stops_when_the_consumer_does():
    produced: list[int] = []

    def source():
        for b in _batches(1000):
            produced.append(int(b.indices[0]))
            yield b

    items, stop = prefetch(source(), depth=2)
    next(items)
    stop.set()
    for thread in threading.enumerate():
        if thread.name == "saekin-tokenize":
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert len(produced) < 10  # the producer stayed a few batches ahead, then stopped
