"""Greedy decoding that drops finished prompts, on the real embedded model: the same tokens
as ``model.generate`` (alone, unpadded), fewer rows computed, and the generation config's
requests honoured."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from rankwise.backends.greedy import (
    greedy_decode,
    new_cache,
    padded_prefill,
    plain_greedy,
    stop_token_ids,
    unpacked_prefill,
)
from rankwise.backends.kv_cache import returned_cache
from rankwise.backends.packed_attention import PackedRow
from rankwise.prompts import Message

QUESTIONS = [
    "Name a colour.",
    "Write a long story about a flea that lives on a cat.",
    "Say yes.",
    "List ten animals, one per line.",
    "Explain how a bicycle works.",
]
LIMITS = [3, 40, 12, 25, 1]


def _alone(backend, ids: list[int], limit: int) -> list[int]:
    """What ``model.generate`` writes for one unpadded prompt, up to its end-of-text."""
    stops = stop_token_ids(backend.model.generation_config, backend.tokenizer.eos_token_id)
    with torch.inference_mode():
        output = backend.model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=limit,
            do_sample=False,
            pad_token_id=backend._pad_id,
        )
    tokens = output[0, len(ids) :].tolist()
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position]
    return tokens


@contextmanager
def _rows_per_step(model) -> Iterator[list[int]]:
    """The batch size of every forward pass of ``model`` while inside."""
    sizes: list[int] = []

    def record(module, args, kwargs) -> None:
        sizes.append(int(kwargs["input_ids"].shape[0]))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


@contextmanager
def _generation_config(backend, **changes: object) -> Iterator[None]:
    config = backend.model.generation_config
    before = {name: getattr(config, name) for name in changes}
    for name, value in changes.items():
        setattr(config, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(config, name, value)


async def _batch(backend, limits: list[int]) -> list:
    return await asyncio.gather(
        *(
            backend.generate([Message("user", question)], max_tokens=limit)
            for question, limit in zip(QUESTIONS, limits, strict=True)
        )
    )


def _prompt_ids(backend) -> list[list[int]]:
    return [
        backend.encode_prompt(backend.chat_prompt([Message("user", question)]))
        for question in QUESTIONS
    ]


def _each_alone(backend, limits: list[int]) -> list[list[int]]:
    ids = _prompt_ids(backend)
    return [_alone(backend, prompt, limit) for prompt, limit in zip(ids, limits, strict=True)]


async def test_a_batch_writes_what_each_prompt_writes_alone_and_drops_finished_rows(
    local_backend,
) -> None:
    """``model.generate`` computed every row until the longest answer ended; a finished
    prompt now leaves the batch, with the same tokens."""
    assert plain_greedy(local_backend.model.generation_config)
    with _rows_per_step(local_backend.model) as sizes:
        answers = await _batch(local_backend, LIMITS)
    expected = _each_alone(local_backend, LIMITS)
    for answer, tokens, limit in zip(answers, expected, LIMITS, strict=True):
        assert answer.completion_tokens == len(tokens) <= limit
        assert answer.text == local_backend.tokenizer.decode(tokens, skip_special_tokens=True)
    assert max(a.completion_tokens for a in answers) == 40  # the story runs to its limit
    # one prefill for the whole batch: a packed row on a CPU, else a padded batch
    assert sizes[0] == (1 if local_backend.pack_prompts else len(QUESTIONS))
    decoding = sizes[1:]
    assert len(decoding) == 39  # the longest answer's steps after the first token
    assert decoding == sorted(decoding, reverse=True) and decoding[-1] == 1
    assert sum(decoding) < len(QUESTIONS) * len(decoding)  # rows were dropped


async def test_min_new_tokens_of_the_generation_config_is_honoured(local_backend) -> None:
    """The first-vs-generate benchmark's full-permutation arm sets ``min_new_tokens``."""
    limits = [20] * len(QUESTIONS)
    with _generation_config(local_backend, min_new_tokens=12):
        answers = await _batch(local_backend, limits)
        expected = _each_alone(local_backend, limits)
    assert [a.completion_tokens for a in answers] == [len(tokens) for tokens in expected]
    assert all(a.completion_tokens >= 12 for a in answers)


async def test_a_generation_config_asking_for_more_goes_to_model_generate(local_backend) -> None:
    """A repetition penalty changes the tokens: such a model keeps ``model.generate``."""
    limits = [3, 16, 12, 10, 1]
    with _generation_config(local_backend, repetition_penalty=1.3):
        assert not plain_greedy(local_backend.model.generation_config)
        answers = await _batch(local_backend, limits)
        expected = _each_alone(local_backend, limits)
    assert [a.completion_tokens for a in answers] == [len(tokens) for tokens in expected]
    assert [a.text for a in answers] == [
        local_backend.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in expected
    ]
    assert plain_greedy(local_backend.model.generation_config)
    plain = await _batch(local_backend, limits)
    assert [a.text for a in plain] != [a.text for a in answers]  # the penalty was applied


def test_a_row_that_asks_for_no_tokens_gets_none(local_backend) -> None:
    ids = _prompt_ids(local_backend)[:2]
    stops = stop_token_ids(
        local_backend.model.generation_config, local_backend.tokenizer.eos_token_id
    )
    with torch.inference_mode():
        start = padded_prefill(local_backend.model, *local_backend._padded(ids))
        answers = greedy_decode(local_backend.model, start, [0, 4], stops)
    assert answers[0] == [] and answers[1] == _alone(local_backend, ids[1], 4)


def _packed_prefill(backend, ids: list[list[int]]):
    row = PackedRow.of(ids)
    with torch.inference_mode():
        output = backend._packed_forward(row, new_cache(backend.model))
        layers = returned_cache(output).layers
        states = [(layer.keys, layer.values) for layer in layers]
        return unpacked_prefill(backend.model, output.logits[0], [(states, row.segments)])


def test_a_packed_prefill_lays_out_the_states_a_padded_one_computes(local_backend) -> None:
    """Prompts of unequal length run as one packed row; their key/value states, moved to
    left-padded rows, match a padded pass's at every real position, and decoding from
    them writes what each prompt writes alone."""
    ids = _prompt_ids(local_backend)
    assert len({len(prompt) for prompt in ids}) > 1  # padding would be needed
    packed = _packed_prefill(local_backend, ids)
    with torch.inference_mode():
        padded = padded_prefill(local_backend.model, *local_backend._padded(ids))
    assert torch.equal(packed.mask, padded.mask)
    assert torch.equal(packed.following, padded.following)
    assert packed.following.tolist() == [len(prompt) for prompt in ids]
    real = padded.mask.bool()
    for packed_layer, padded_layer in zip(packed.cache.layers, padded.cache.layers, strict=True):
        for mine, theirs in (
            (packed_layer.keys, padded_layer.keys),
            (packed_layer.values, padded_layer.values),
        ):
            assert mine.shape == theirs.shape
            # (rows, heads, width, dim): compare the real positions of every row
            assert torch.allclose(
                mine.transpose(1, 2)[real], theirs.transpose(1, 2)[real], atol=1e-3
            )
            assert not mine.transpose(1, 2)[~real].any()  # padding holds nothing
    assert torch.allclose(packed.logits, padded.logits, atol=1e-2)
    stops = stop_token_ids(
        local_backend.model.generation_config, local_backend.tokenizer.eos_token_id
    )
    with torch.inference_mode():
        answers = greedy_decode(local_backend.model, packed, LIMITS, stops)
    assert answers == _each_alone(local_backend, LIMITS)


async def test_a_prefill_in_several_rows_writes_what_each_prompt_writes_alone(
    local_backend, monkeypatch
) -> None:
    """Long prompts are prefilled in packed rows of their own; the states of all rows make
    one padded batch, and the answers are each prompt's own."""
    from rankwise.backends import packed_attention

    lengths = sorted(len(ids) for ids in _prompt_ids(local_backend))
    monkeypatch.setattr(packed_attention, "ALONE_TOKENS", lengths[len(lengths) // 2])
    passes: list[int] = []
    packed_forward = local_backend._packed_forward

    def counted(row, *args, **kwargs):
        passes.append(len(row.segments))
        return packed_forward(row, *args, **kwargs)

    monkeypatch.setattr(local_backend, "_packed_forward", counted)
    with _rows_per_step(local_backend.model) as sizes:
        answers = await _batch(local_backend, LIMITS)
    assert len(passes) >= 2 and sum(passes) == len(QUESTIONS)
    assert sizes[len(passes)] == len(QUESTIONS) - 1  # decoding: one batch (less "Say yes.")
    expected = _each_alone(local_backend, LIMITS)
    assert [a.text for a in answers] == [
        local_backend.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in expected
    ]


async def test_generation_prefills_prompts_as_one_packed_row_on_a_cpu(local_backend) -> None:
    """The prefill of a generation batch is one row holding every prompt's tokens, with
    no padding (a padded pass over long unequal prompts attends through an explicit mask,
    which cost 1.75x on three listwise windows)."""
    assert local_backend.pack_prompts
    lengths: list[tuple[int, int]] = []

    def record(module, args, kwargs) -> None:
        lengths.append(tuple(kwargs["input_ids"].shape))

    handle = local_backend.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        await _batch(local_backend, [2] * len(QUESTIONS))
    finally:
        handle.remove()
    assert lengths[0] == (1, sum(len(prompt) for prompt in _prompt_ids(local_backend)))


@pytest.mark.parametrize(
    ("configured", "tokenizer_eos", "expected"),
    [(2, 2, {2}), ([7, 9], 2, {2, 7, 9}), (None, 5, {5}), (None, None, set())],
)
def test_stop_tokens_come_from_the_config_and_the_tokenizer(configured, tokenizer_eos, expected):
    from transformers import GenerationConfig

    assert stop_token_ids(GenerationConfig(eos_token_id=configured), tokenizer_eos) == expected


def test_only_plain_greedy_configs_skip_model_generate() -> None:
    from transformers import GenerationConfig

    assert plain_greedy(GenerationConfig(eos_token_id=2, temperature=0.7, top_p=0.9))
    assert not plain_greedy(GenerationConfig(repetition_penalty=1.05))
    assert not plain_greedy(GenerationConfig(no_repeat_ngram_size=3))
    assert not plain_greedy(GenerationConfig(num_beams=4))


@pytest.mark.parametrize("config", [{}, {"repetition_penalty": 1.3}], ids=["greedy", "generate"])
async def test_a_generation_nobody_waits_for_stops_decoding(local_backend, config) -> None:
    """After a deadline, the abandoned answer was decoded to its end on the worker thread,
    and the next request waited for it (3.4 s at a 150-token answer)."""
    prompt = [Message("user", "Write a long story about a flea that lives on a cat.")]
    with _rows_per_step(local_backend.model) as sizes:
        with _generation_config(local_backend, min_new_tokens=150, **config):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(local_backend.generate(prompt, max_tokens=150), 0.5)
        after = await local_backend.generate([Message("user", "Say yes.")], max_tokens=1)
    assert after.completion_tokens == 1
    assert len(sizes) < 100  # the abandoned answer's steps, then one pass for the next


async def test_a_model_the_loop_cannot_drive_falls_back_to_model_generate(
    local_backend, monkeypatch, caplog
) -> None:
    """A model whose forward pass or cache the greedy loop cannot use (a recurrent or hybrid
    cache, say) is decoded by ``model.generate``, with one warning."""
    import rankwise.backends.transformers as transformers_backend

    def cannot(*args: object, **kwargs: object) -> list[list[int]]:
        raise TypeError("forward() got an unexpected keyword argument 'logits_to_keep'")

    monkeypatch.setattr(transformers_backend, "greedy_decode", cannot)
    monkeypatch.setattr(local_backend, "_greedy_loop", True)
    # The bicycle answer ends after 24 tokens, and the flea story runs on: model.generate
    # pads the finished row, and the answer is cut at its end-of-text.
    limits = [3, 30, 12, 10, 30]
    with caplog.at_level("WARNING", logger=transformers_backend.__name__):
        first = await _batch(local_backend, limits)
        second = await _batch(local_backend, limits)
    warnings = [r for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(warnings) == 1 and "using model.generate from now on" in warnings[0].getMessage()
    expected = _each_alone(local_backend, limits)
    for answers in (first, second):
        assert [a.completion_tokens for a in answers] == [len(tokens) for tokens in expected]
