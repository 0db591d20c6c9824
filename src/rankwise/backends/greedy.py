"""Greedy decoding of a left-padded batch that drops each prompt as soon as it is done.

``model.generate`` keeps every row of a batch in each decoding step until the last one
stops, so prompts that end early (an end-of-text token, or a smaller ``max_tokens``) are
still computed, as padding, for as long as the longest answer. Here a finished row leaves
the batch and the key/value cache, so each step costs what the prompts still writing need;
so does a prompt nobody waits for any more (its rerank's deadline passed).
On a CPU, where a step's cost grows with the rows it holds, a batch of the query rewriter's
seven prompts (one 256-token pseudo-answer among 64-token rewrites) decodes about 1.6 to
1.8 times as fast; the tokens are the same as ``model.generate``'s.

It covers plain greedy decoding (with ``min_new_tokens``). A model whose generation config
asks for more (a repetition penalty, banned words, forced tokens, ...) is decoded with
``model.generate``, which applies them: see :func:`plain_greedy`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
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


def greedy_decode(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    max_tokens: Sequence[int],
    stop_ids: set[int],
    *,
    min_new_tokens: int = 0,
    abandoned: Sequence[Callable[[], bool]] | None = None,
) -> list[list[int]]:
    """The greedy answer of each left-padded row, without its end-of-text token.

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
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=input_ids.device)
    try:  # the model's own layer kinds (sliding windows), where this version takes them
        cache = DynamicCache(config=model.config)
    except TypeError:
        cache = DynamicCache()
    keyword = cache_keyword(model)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        **{keyword: cache},
        use_cache=True,
        logits_to_keep=1,
    )
    logits = output.logits[:, -1]
    following = positions[:, -1] + 1
    mask = attention_mask
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
