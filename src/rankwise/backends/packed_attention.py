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
prompt, plus every position of the shared prefix. It is registered with ``transformers``
as the attention function ``"rankwise_packed"`` and switched on for a packed pass only
(:func:`packed_attention_on`), so every other call runs as the model was loaded.

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
            mask = _prefix_causal_mask(length, prefix, query.device)
            output = torch.nn.functional.scaled_dot_product_attention(
                queries, keys, values, attn_mask=mask, scale=scaling, enable_gqa=grouped
            )
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
