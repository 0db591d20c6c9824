"""Packed label scoring: prompts laid end to end in one row give the numbers that padded
batches give, on the real embedded model, with no padding computed."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from rankwise import Reranker
from rankwise.backends import packed_attention
from rankwise.backends.packed_attention import PACKED_ATTENTION, PackedRow, can_pack, packed_rows


def test_a_packed_row_holds_every_prompt_once_numbered_from_the_offset() -> None:
    suffixes = [[5, 6, 7], [8], [9, 10]]
    row = PackedRow.of(suffixes, offset=4)
    assert row.input_ids == [5, 6, 7, 8, 9, 10]
    assert row.position_ids == [4, 5, 6, 4, 4, 5]
    assert row.segments == [(0, 3), (3, 1), (4, 2)]
    assert row.last_positions == [2, 3, 5]
    assert [row.input_ids[s : s + n] for s, n in row.segments] == suffixes
    with pytest.raises(ValueError, match="at least one token"):
        PackedRow.of([[1], []])


def test_long_prompts_get_rows_of_their_own_and_short_ones_share_in_order() -> None:
    suffixes = [[1] * 300, [2] * 500, [3] * 1024, [4] * 2000, [5] * 10, [6] * 1000]
    rows = packed_rows(suffixes, offset=7, alone_tokens=1024)
    assert [[length for _, length in row.segments] for row in rows] == [
        [300, 500],
        [1024],
        [2000],
        [10, 1000],
    ]
    assert [ids for row in rows for ids in row.input_ids] == [t for s in suffixes for t in s]
    assert all(row.position_ids[0] == 7 for row in rows)
    assert packed_rows([], alone_tokens=8) == []


@pytest.mark.parametrize(
    ("settings", "packs"),
    [
        ({}, True),
        ({"sliding_window": 4096}, False),
        ({"sliding_window": 4096, "use_sliding_window": False}, True),
        ({"attn_logit_softcapping": 50.0}, False),
        ({"implementation": "flash_attention_2"}, False),
    ],
)
def test_packing_is_refused_for_attention_it_does_not_reproduce(settings, packs) -> None:
    config = SimpleNamespace(_attn_implementation=settings.pop("implementation", "sdpa"))
    for name, value in settings.items():
        setattr(config, name, value)
    assert can_pack(SimpleNamespace(config=config)) is packs


@pytest.fixture(scope="module")
def padded_backend():
    from rankwise.backends.transformers import TransformersBackend

    return TransformersBackend("default", pack_prompts=False)


def _docs(record, n: int) -> list[dict]:
    return record.documents(n)


@pytest.mark.parametrize(
    ("method", "depth"), [("pointwise", 20), ("prp-allpair", 6), ("pointwise-qlm", 12)]
)
async def test_packed_batches_score_as_padded_batches(
    local_backend, padded_backend, dl19, method, depth
) -> None:
    assert local_backend.pack_prompts and not padded_backend.pack_prompts
    record = dl19[4]
    docs = _docs(record, depth)
    results, padding = [], []
    for backend in (local_backend, padded_backend):
        backend.clear_prefix_cache()
        real, padded = backend.stats.real_tokens, backend.stats.padded_tokens
        results.append(await Reranker(method, backend).arerank(record.query, docs))
        real, padded = backend.stats.real_tokens - real, backend.stats.padded_tokens - padded
        padding.append(padded - real)
    packed, plain = results
    assert sorted(packed.ids) == sorted(d["id"] for d in docs)
    assert packed.ids == plain.ids
    scores = {item.id: item.score for item in plain.items}
    for item in packed.items:
        assert math.isclose(item.score, scores[item.id], abs_tol=2e-3)
    assert padding[0] == 0 < padding[1]  # packing computed no padding; the padded batches did
    assert packed.usage.prompt_tokens == plain.usage.prompt_tokens


async def test_packed_label_logprobs_match_each_prompt_run_alone(
    local_backend, padded_backend, dl19
) -> None:
    """Prompts of very different lengths in one packed row: each gets the numbers of a
    plain forward pass over that prompt alone."""
    from rankwise.prompts import Message

    record = dl19[5]
    lengths = [40, 400, 120, 900, 10]
    prompts = [
        [Message("user", f"Passage: {doc['text'][:n]}\nQuery: {record.query}\nRelevant?")]
        for doc, n in zip(_docs(record, len(lengths)), lengths, strict=True)
    ]
    labels = ["Yes", "No"]
    batches = local_backend.stats.batches
    packed = await asyncio.gather(*(local_backend.label_logprobs(p, labels) for p in prompts))
    assert local_backend.stats.batches == batches + 1  # one packed pass
    for prompt, got in zip(prompts, packed, strict=True):
        alone = await padded_backend.label_logprobs(prompt, labels)
        assert alone.prompt_tokens == got.prompt_tokens
        for label in labels:
            assert math.isclose(alone.logprobs[label], got.logprobs[label], abs_tol=2e-3)


@pytest.mark.parametrize("method", ["pointwise", "pointwise-qlm", "prp-allpair"])
async def test_long_prompts_in_rows_of_their_own_score_as_one_row(
    local_backend, dl19, monkeypatch, method
) -> None:
    """Long prompts run in packed passes of their own (after the shared prefix, for label
    scoring), the short ones between them together; scores and rankings stay those of
    one row."""
    record = dl19[6]
    docs = _docs(record, 6)
    reranker = Reranker(method, local_backend)
    passes: list[list[int]] = []  # each pass's prompt lengths

    def counted(row, *args, **kwargs):
        passes.append([length for _, length in row.segments])
        return packed_forward(row, *args, **kwargs)

    packed_forward = local_backend._packed_forward
    monkeypatch.setattr(local_backend, "_packed_forward", counted)
    local_backend.clear_prefix_cache()
    whole = await reranker.arerank(record.query, docs)
    lengths = sorted(length for row in passes for length in row)
    alone = lengths[len(lengths) // 2]  # half the prompts count as long
    monkeypatch.setattr(packed_attention, "ALONE_TOKENS", alone)
    before, passes[:] = len(passes), []
    local_backend.clear_prefix_cache()
    split = await reranker.arerank(record.query, docs)
    assert len(passes) > before
    for row in passes:
        assert len(row) == 1 or all(length < alone for length in row)
    assert split.ids == whole.ids
    assert sorted(split.ids) == sorted(d["id"] for d in docs)
    for mine, theirs in zip(split.items, whole.items, strict=True):
        assert mine.id == theirs.id
        if theirs.score is not None:
            assert math.isclose(mine.score, theirs.score, abs_tol=2e-3)


def test_a_model_that_packing_would_score_wrongly_is_padded(monkeypatch) -> None:
    """If the packed pass does not reproduce the model (here: an attention that lets every
    prompt see the whole row), the check at load turns packing off."""
    import torch
    from transformers import AttentionInterface

    from rankwise.backends.packed_attention import packed_attention
    from rankwise.backends.transformers import TransformersBackend

    def whole_row(module, query, key, value, attention_mask, scaling=None, **kwargs):
        output = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=True
        )
        return output.transpose(1, 2).contiguous(), None

    AttentionInterface.register(PACKED_ATTENTION, whole_row)
    try:
        backend = TransformersBackend("default")
    finally:
        AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    assert backend.pack_prompts is False
    assert TransformersBackend("default").pack_prompts is True


@pytest.mark.parametrize(
    ("prefix", "lengths"),
    [(40, [300, 20, 600]), (700, [300]), (16, [255, 256]), (0, [300, 7])],
    ids=["long-after-short-prefix", "prefix-too-long", "threshold", "no-prefix"],
)
def test_prompts_after_a_prefix_attend_to_it_and_causally_to_themselves(
    monkeypatch, prefix, lengths
) -> None:
    """Whichever kernel runs (causal with placeholder queries for long prompts, an
    explicit mask for short ones), each prompt sees every prefix position and its own
    earlier positions, nothing of the other prompts."""
    import torch

    from rankwise.backends import packed_attention as packed

    torch.manual_seed(0)
    heads, kv_heads, dim = 6, 2, 16
    total = sum(lengths)
    query = torch.randn(1, heads, total, dim)
    key = torch.randn(1, kv_heads, prefix + total, dim)
    value = torch.randn(1, kv_heads, prefix + total, dim)
    segments = PackedRow.of([[1] * n for n in lengths]).segments
    calls: list[bool] = []
    attend = torch.nn.functional.scaled_dot_product_attention

    def recorded(*args, **kwargs):
        calls.append(bool(kwargs.get("is_causal")))
        return attend(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recorded)
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads)
    output, _ = packed.packed_attention(
        module, query, key, value, None, scaling=0.25, rankwise_segments=segments
    )
    assert output.shape == (1, total, heads, dim)
    keys = key.repeat_interleave(heads // kv_heads, dim=1)
    values = value.repeat_interleave(heads // kv_heads, dim=1)
    for (start, length), causal in zip(segments, calls, strict=True):
        expected_causal = not prefix or (
            length >= packed.CAUSAL_MIN_LENGTH and prefix <= packed.CAUSAL_MAX_PREFIX_SHARE * length
        )
        assert causal is expected_causal
        for position in (0, length // 2, length - 1):  # by hand, one query at a time
            seen = [*range(prefix), *range(prefix + start, prefix + start + position + 1)]
            row = query[0, :, start + position]  # (heads, dim)
            weights = torch.softmax((keys[0, :, seen] @ row[:, :, None]).squeeze(-1) * 0.25, -1)
            expected = (weights[:, :, None] * values[0, :, seen]).sum(dim=1)
            assert torch.allclose(output[0, start + position], expected, atol=1e-5)
