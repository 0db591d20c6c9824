"""Packed label scoring: prompts laid end to end in one row give the numbers that padded
batches give, on the real embedded model, with no padding computed."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from rankwise import Reranker
from rankwise.backends.packed_attention import PACKED_ATTENTION, PackedRow, can_pack


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
