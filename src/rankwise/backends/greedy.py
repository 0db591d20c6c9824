"""Greedy decoding of a left-padded batch that drops each prompt as soon as it is done.

``model.generate`` keeps every row of a batch in each decoding step until the last one
stops, so prompts that end early (an end-of-text token, or a smaller ``max_tokens``) are
still computed, as padding, for as long as the longest answer. Here a finished row leaves
the batch and the key/value cache, so each step costs what the prompts still writing need;
so does a prompt nobody waits for any more (its rerank's deadline passed).
On a CPU, where a step's cost grows with the rows it holds, a batch of the query rewriter's
seven prompts (one 256-token pseudo-answer among 64-token rewrites) decodes about 1.6 to
1.8 times as fast; the tokens are the same as ``model.generate``'s.

The prompts' own pass (the prefill) comes first, as a left-padded batch
(:func:`padded_prefill`) or, on a CPU, as packed rows of the prompts laid end to end (see
``rankwise.backends.packed_attention``), whose key/value states :func:`unpacked_prefill`
then lays out as a left-padded batch for decoding. Packing matters for long prompts of
unequal length: padding there makes the model attend with an explicit mask, which on a CPU
cannot use the fused causal kernel. The pass over three listwise windows of 1,900 to 2,550
tokens took 21.8 s padded and 12.4 s packed; with each long prompt in a row of its own,
listwise over four DL19 queries at once runs 1.42 times as fast as after a padded pass
(``bench/generation.py``).

It covers plain greedy decoding (with ``min_new_tokens``). A model whose generation config
asks for more (a repetition penalty, banned words, forced tokens, ...) is decoded with
``model.generate``, which applies them: see :func:`plain_greedy`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, StoppingCriteria

from rankwise.backends.kv_cache import cache_keyword

# Generation-config fields greedy decoding may ignore or honours here; any other field that
# differs from its default changes the tokens and sends the batch to ``model.generate``.
_PLAIN_FIELDS = frozenset(
    {
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
        "use_cache",
        "output_attentions",
        "output_hidden_states",
        "output_scores",
        "output_logits",
        "return_dict_in_generate",
        "transformers_version",
        "max_length",
        "max_new_tokens",
        "min_new_tokens",
        "do_sample",  # sampling fields are unused: rankwise decodes greedily
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "typical_p",
        "num_beams",
        "num_return_sequences",
        "cache_implementation",
        "_from_model_config",
    }
)


def plain_greedy(generation_config: Any) -> bool:
    """Whether greedy decoding of this model needs nothing but ``min_new_tokens`` and its
    end-of-text tokens (true of the embedded model), so :func:`greedy_decode` gives the
    tokens ``model.generate`` would."""
    if (getattr(generation_config, "num_beams", 1) or 1) > 1:
        return False
    changed = generation_config.to_diff_dict()
    return all(name in _PLAIN_FIELDS for name in changed)


def stop_token_ids(generation_config: Any, tokenizer_eos: int | None) -> set[int]:
    """The tokens that end an answer: the generation config's end-of-text ids (one or a
    list) and the tokenizer's."""
    configured = generation_config.eos_token_id
    ids: Iterable[int | None]
    if configured is None or isinstance(configured, int):
        ids = (configured, tokenizer_eos)
    else:
        ids = (*configured, tokenizer_eos)
    return {int(i) for i in ids if i is not None}


@dataclass
class Prefilled:
    """A batch after its prompts' pass, ready to decode: left-padded rows."""

    logits: torch.Tensor
    """``(rows, vocab)``: the logits of each prompt's first answer token."""
    cache: DynamicCache
    """The prompts' key/value states, each row left-padded to the longest prompt."""
    mask: torch.Tensor
    """``(rows, width)``: 1 at each row's real positions, 0 at its padding."""
    following: torch.Tensor
    """``(rows,)``: the position of each row's next token (its prompt's length)."""


def new_cache(model: Any, data: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
    """An empty key/value cache for ``model`` (or one holding ``data``, a key and value
    tensor per layer), with the model's layer kinds where this ``transformers`` takes them."""
    extra: dict[str, Any] = {} if data is None else {"ddp_cache_data": data}
    try:
        return DynamicCache(config=model.config, **extra)
    except TypeError:
        return DynamicCache(**extra)


def padded_prefill(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
) -> Prefilled:
    """One pass over a left-padded batch of prompts. Call under ``torch.inference_mode()``."""
    cache = new_cache(model)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        **{cache_keyword(model): cache},
        use_cache=True,
        logits_to_keep=1,
    )
    return Prefilled(output.logits[:, -1], cache, attention_mask, positions[:, -1] + 1)


LayerStates = Sequence[tuple[torch.Tensor, torch.Tensor]]
"""A pass's key and value tensors, ``(1, heads, positions, dim)``, one pair per layer."""


def unpacked_prefill(
    model: Any,
    logits: torch.Tensor,
    passes: Sequence[tuple[LayerStates, Sequence[tuple[int, int]]]],
) -> Prefilled:
    """The left-padded batch of the prompts of one or more packed rows.

    ``logits`` holds each prompt's last-position logits, in order; ``passes`` each row's
    key/value states (batch of one) with each prompt's ``(start, length)`` in that row,
    every prompt numbered from position 0. Each prompt's states move to their own batch
    row, right-aligned, as a padded pass would have left them.
    """
    lengths = [length for _, segments in passes for _, length in segments]
    width = max(lengths)
    batch_data = []
    for layer in range(len(passes[0][0])):
        pair = []
        for kind in (0, 1):  # keys, values
            first = passes[0][0][layer][kind]
            heads, size = first.shape[1], first.shape[3]
            batch = first.new_zeros((len(lengths), heads, width, size))
            row = 0
            for states, segments in passes:
                packed = states[layer][kind]
                for start, length in segments:
                    batch[row, :, width - length :] = packed[0, :, start : start + length]
                    row += 1
            pair.append(batch)
        batch_data.append((pair[0], pair[1]))
    mask = torch.zeros((len(lengths), width), dtype=torch.long, device=logits.device)
    for row, length in enumerate(lengths):
        mask[row, width - length :] = 1
    following = torch.tensor(lengths, dtype=torch.long, device=logits.device)
    return Prefilled(logits, new_cache(model, batch_data), mask, following)


def greedy_decode(
    model: Any,
    start: Prefilled,
    max_tokens: Sequence[int],
    stop_ids: set[int],
    *,
    min_new_tokens: int = 0,
    abandoned: Sequence[Callable[[], bool]] | None = None,
) -> list[list[int]]:
    """The greedy answer of each row of a prefilled batch, without its end-of-text token.

    Row ``i`` writes at most ``max_tokens[i]`` tokens, and no end-of-text token before
    ``min_new_tokens``. A row whose ``abandoned[i]()`` turns true (nobody waits for its
    answer any more: a deadline passed) leaves the batch at the next step with what it has
    written, so the worker is soon free for the next request. Call under
    ``torch.inference_mode()``.
    """
    gone = abandoned or [lambda: False] * len(max_tokens)
    answers: list[list[int]] = [[] for _ in max_tokens]
    active = [row for row, limit in enumerate(max_tokens) if limit > 0]
    if not active:
        return answers
    cache, mask, following, logits = start.cache, start.mask, start.following, start.logits
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=logits.device)
    keyword = cache_keyword(model)
    if len(active) < len(max_tokens):  # rows asked for no tokens
        mask, following = _keep(cache, active, mask, following)
        logits = logits[torch.tensor(active, device=logits.device)]
    written = 0
    while True:
        if written < min_new_tokens and len(stops):
            logits = logits.index_fill(1, stops, float("-inf"))
        chosen = logits.argmax(dim=-1)
        written += 1
        still: list[int] = []
        for row, (answer_row, token) in enumerate(zip(active, chosen.tolist(), strict=True)):
            if token in stop_ids:
                continue
            answers[answer_row].append(token)
            if len(answers[answer_row]) < max_tokens[answer_row] and not gone[answer_row]():
                still.append(row)
        if not still:
            return answers
        if len(still) < len(active):
            mask, following = _keep(cache, still, mask, following)
            chosen = chosen[torch.tensor(still, device=chosen.device)]
            active = [active[row] for row in still]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        output = model(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=following[:, None],
            **{keyword: cache},
            use_cache=True,
        )
        logits = output.logits[:, -1]
        following = following + 1


def _keep(
    cache: DynamicCache, rows: list[int], mask: torch.Tensor, following: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only ``rows`` of the batch: in the key/value cache, the mask and the positions."""
    index = torch.tensor(rows, device=mask.device)
    cache.batch_select_indices(index)
    return mask[index], following[index]


class AllAbandoned(StoppingCriteria):
    """For ``model.generate``: a row stops once nobody waits for its answer any more (its
    event is set), so a batch whose callers all gave up ends at the next step."""

    def __init__(self, events: Sequence[threading.Event]) -> None:
        self.events = list(events)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        flags = [event.is_set() for event in self.events]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)
