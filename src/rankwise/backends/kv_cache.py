"""Passing a key/value cache into a model's forward pass, and reading it back, across
``transformers`` versions; and the attention window its layers keep.

``transformers`` 5.24 renamed the forward keyword ``past_key_values`` to ``cache`` (and the
output field with it); the old name warns with a ``FutureWarning`` and is to be removed in
5.40. Versions before 5.24 know only the old name. :func:`cache_keyword` picks the name
the loaded model's ``forward`` takes, and :func:`returned_cache` reads whichever field the
output carries, so the local backend works, without warnings, on both.
"""

from __future__ import annotations

import inspect
from typing import Any

NEW_KEYWORD = "cache"
OLD_KEYWORD = "past_key_values"


def cache_keyword(model: Any) -> str:
    """The keyword ``model``'s forward pass takes its key/value cache under."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # a forward inspect cannot read: assume the old name
        return OLD_KEYWORD
    return NEW_KEYWORD if NEW_KEYWORD in parameters else OLD_KEYWORD


def returned_cache(output: Any) -> Any:
    """The key/value cache a forward pass with ``use_cache=True`` returned, or ``None``.

    Looks the field up by key, as the output's old-name property would warn."""
    keys = output.keys()
    for name in (NEW_KEYWORD, OLD_KEYWORD):
        if name in keys:
            return output[name]
    return None


def sliding_window(model: Any) -> int | None:
    """The shortest attention window among ``model``'s layers, or ``None`` when every layer
    attends to every earlier position. Read from the layers of the key/value cache that
    ``transformers`` builds for the model's config (Gemma 2 and 3, Mistral, Qwen 2 with its
    window on), so a config spelling it some other way is read the same."""
    from transformers import DynamicCache

    try:
        layers = DynamicCache(config=model.config).layers
    except (TypeError, AttributeError):  # a transformers without per-layer caches
        return None
    windows = [getattr(layer, "sliding_window", None) for layer in layers]
    return min((int(w) for w in windows if w), default=None)
