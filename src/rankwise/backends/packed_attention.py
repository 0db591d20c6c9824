"""Several prompts in one row of a forward pass, with no padding.

A padded batch computes every row up to its longest prompt: with DL19 passages cut to 128
tokens, a fifth of the positions of a pointwise or PRP batch were padding. On a CPU every
position costs compute, so :class:`PackedRow` lays the prompts end to end in one row
instead, each numbered from its own first position, and :func:`packed_attention` lets each
prompt attend only to itself (and to a shared prefix already in the key/value cache).
The linear layers, most of the work, then see only real tokens. Label scoring keeps the
logits of each prompt's last token; query likelihood those of the positions that predict
each prompt's query tokens (``bench/packing.py``: 1.29x as fast as padded on DL19).

Attention runs prompt by prompt with ``scaled_dot_product_attention``: causal within the
prompt, plus every position of the shared prefix. A long prompt after a prefix runs on the
fused causal kernel too, with the prefix's positions given placeholder queries whose output
is dropped: on a CPU an explicit mask takes a path about twice as slow per position (a
2,000-token prompt after a 40-token prefix: 68 ms per layer masked, 39 ms causal), and the
result is the same. It is registered with ``transformers``
as the attention function ``"rankwise_packed"`` and switched on for a packed pass only
(:func:`packed_attention_on`), so every other call runs as the model was loaded.

A long prompt (:data:`ALONE_TOKENS` or more) runs in a row of its own (:func:`packed_rows`):
on a CPU a pass over several thousand positions runs slower per position than one over two
thousand, as its activations no longer stay in the caches. Three 2,000-token FIRST prompts
took 12.0 s in one row and 10.9 s one by one. Short prompts keep sharing one row; splitting
them was slower in every measured case (20 pointwise prompts at depth 20: 3.40 s per query
in one row, 3.66 s in rows of 1,024 tokens). With both changes, FIRST over four DL19
queries at once takes 14.6 s against 18.7 s (``bench/packing.py``).

On a GPU a small model's pass is bound by kernel launches, and one attention call per
prompt per layer adds launches, so the local backend packs on CPUs only (see
``rankwise.backends.transformers.device_defaults``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface

PACKED_ATTENTION = "rankwise_packed"
"""The name :func:`packed_attention` is registered under in ``transformers``."""

SEGMENTS_KEYWORD = "rankwise_segments"
"""The forward keyword that carries each prompt's ``(start, length)`` in the packed row."""

_MAX_MASKS = 4096

ALONE_TOKENS = 1024
"""A prompt this long or longer runs in a packed row of its own."""

CAUSAL_MIN_LENGTH = 256
"""Shortest prompt after a prefix that runs on the causal kernel with placeholder queries;
below it the masked path costs no more."""

CAUSAL_MAX_PREFIX_SHARE = 2.0
"""Longest prefix, as a multiple of the prompt's length, worth that many placeholders."""


@dataclass(frozen=True)
class PackedRow:
    """Prompts laid end to end after a shared prefix of ``offset`` tokens (in the cache)."""

    input_ids: list[int]
    position_ids: list[int]
    segments: list[tuple[int, int]]
    """``(start, length)`` of each prompt's own tokens in the row."""

    @classmethod
    def of(cls, suffixes: Sequence[Sequence[int]], offset: int = 0) -> PackedRow:
        """Pack ``suffixes`` (each non-empty), numbering each from ``offset``."""
        input_ids: list[int] = []
        position_ids: list[int] = []
        segments: list[tuple[int, int]] = []
        for suffix in suffixes:
            if not suffix:
                raise ValueError("a packed prompt needs at least one token of its own")
            segments.append((len(input_ids), len(suffix)))
            input_ids.extend(suffix)
            position_ids.extend(range(offset, offset + len(suffix)))
        return cls(input_ids, position_ids, segments)

    @property
    def last_positions(self) -> list[int]:
        """Index in the row of each prompt's last token."""
        return [start + length - 1 for start, length in self.segments]


def packed_rows(
    suffixes: Sequence[Sequence[int]], offset: int = 0, alone_tokens: int | None = None
) -> list[PackedRow]:
    """``suffixes`` in order, as packed rows: each of at least ``alone_tokens`` (default
    :data:`ALONE_TOKENS`) tokens in a row of its own, the shorter ones between them
    together; each numbered from ``offset``."""
    alone_tokens = ALONE_TOKENS if alone_tokens is None else alone_tokens
    rows: list[PackedRow] = []
    group: list[Sequence[int]] = []
    for suffix in suffixes:
        if len(suffix) < alone_tokens:
            group.append(suffix)
            continue
        if group:
            rows.append(PackedRow.of(group, offset))
            group = []
        rows.append(PackedRow.of([suffix], offset))
    if group:
        rows.append(PackedRow.of(group, offset))
    return rows


_masks: dict[tuple[int, int, str], torch.Tensor] = {}


def _prefix_causal_mask(length: int, prefix: int, device: torch.device) -> torch.Tensor:
    """``length`` queries that see all ``prefix`` keys and, causally, their own ``length``."""
    key = (length, prefix, str(device))
    mask = _masks.get(key)
    if mask is None:
        if len(_masks) >= _MAX_MASKS:
            _masks.clear()
        mask = torch.ones(length, prefix + length, dtype=torch.bool, device=device)
        mask = mask.tril(diagonal=prefix)
        _masks[key] = mask
    return mask


def _after_prefix(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    prefix: int,
    scaling: float | None,
    grouped: bool,
) -> torch.Tensor:
    """Attention of a prompt's ``queries`` to all ``prefix`` leading keys and, causally, to
    its own. A long prompt runs causal attention over the whole sequence with a zero query
    at each prefix position (each real query then sees exactly the prefix and its own
    earlier positions) and drops those rows; a short one uses an explicit mask."""
    length = queries.shape[2]
    if length >= CAUSAL_MIN_LENGTH and prefix <= CAUSAL_MAX_PREFIX_SHARE * length:
        shape = (*queries.shape[:2], prefix, queries.shape[3])
        placed = torch.cat([queries.new_zeros(shape), queries], dim=2)
        output = torch.nn.functional.scaled_dot_product_attention(
            placed, keys, values, is_causal=True, scale=scaling, enable_gqa=grouped
        )
        return output[:, :, prefix:]
    mask = _prefix_causal_mask(length, prefix, queries.device)
    return torch.nn.functional.scaled_dot_product_attention(
        queries, keys, values, attn_mask=mask, scale=scaling, enable_gqa=grouped
    )


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for a :class:`PackedRow`: ``query`` is ``(1, heads, row, dim)``; ``key`` and
    ``value`` hold the shared prefix first, then the row. Returns ``(1, row, heads, dim)``."""
    segments: list[tuple[int, int]] = kwargs[SEGMENTS_KEYWORD]
    prefix = key.shape[2] - query.shape[2]
    grouped = getattr(module, "num_key_value_groups", 1) > 1
    outputs = []
    for start, length in segments:
        own = slice(prefix + start, prefix + start + length)
        queries = query[:, :, start : start + length]
        if prefix:
            keys = torch.cat([key[:, :, :prefix], key[:, :, own]], dim=2)
            values = torch.cat([value[:, :, :prefix], value[:, :, own]], dim=2)
            output = _after_prefix(queries, keys, values, prefix, scaling, grouped)
        else:
            output = torch.nn.functional.scaled_dot_product_attention(
                queries,
                key[:, :, own],
                value[:, :, own],
                is_causal=True,
                scale=scaling,
                enable_gqa=grouped,
            )
        outputs.append(output)
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention)


@contextmanager
def packed_attention_on(model: Any) -> Iterator[None]:
    """Run ``model``'s attention through :func:`packed_attention` inside the block.

    Call it only from the one thread that runs the model: it changes the model's config.
    """
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = PACKED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous


def can_pack(model: Any) -> bool:
    """Whether the model's attention is plain causal attention that packing reproduces:
    no sliding window and no logit soft-capping (the output is also checked on first use)."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        return False
    if getattr(config, "attn_logit_softcapping", None):
        return False
    return getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
