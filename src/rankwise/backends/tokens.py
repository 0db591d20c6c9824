"""Token counting for API backends without any network access, the count that fits a
prompt into a model's context (:func:`prompt_counter`), and the cut at a token count that
keeps whole characters, for every backend (:func:`whole_characters`).

tiktoken downloads its encodings on first use. rankwise never lets it: an encoding is loaded
only when its file is already on disk (tiktoken's own cache, ``TIKTOKEN_CACHE_DIR``, or the
copy that ``llama-index-core`` ships). Otherwise counts fall back to an estimate of one token
per four characters, and truncation cuts at the matching character count.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from rankwise.prompts import Message

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat API adds per message (role and separators) when no chat template is known."""
_ENV_LOCK = threading.Lock()


def _candidate_dirs() -> list[Path]:
    folders = [os.environ.get("TIKTOKEN_CACHE_DIR"), os.environ.get("DATA_GYM_CACHE_DIR")]
    found = [Path(folder) for folder in folders if folder]
    found.append(Path(tempfile.gettempdir()) / "data-gym-cache")
    spec = importlib.util.find_spec("llama_index")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            found.append(Path(location) / "core" / "_static" / "tiktoken_cache")
    return found


@cache
def local_encoding(name: str = "o200k_base") -> Any | None:
    """The tiktoken encoding ``name`` if its file is on disk, else ``None`` (never downloads)."""
    file_name = hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()
    folder = next((d for d in _candidate_dirs() if (d / file_name).is_file()), None)
    if folder is None:
        return None
    try:
        import tiktoken
    except ImportError:
        return None
    with _ENV_LOCK:  # tiktoken reads its cache folder from the environment at call time
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        try:
            return tiktoken.get_encoding(name)
        except Exception:  # a corrupt file must never break a rerank
            return None
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


@dataclass
class TokenCounter:
    """Counts and truncates with a local tiktoken encoding, or with the 4-chars estimate."""

    encoding_name: str = "o200k_base"

    @property
    def exact(self) -> bool:
        """True when a real tokenizer is in use."""
        return local_encoding(self.encoding_name) is not None

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        encoding = local_encoding(self.encoding_name)
        if encoding is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN)
        return len(encoding.encode(text, disallowed_special=()))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` of at most ``max_tokens`` tokens."""
        encoding = local_encoding(self.encoding_name)
        if encoding is None:
            return text[: max_tokens * CHARS_PER_TOKEN]
        ids = encoding.encode(text, disallowed_special=())
        return (
            text if len(ids) <= max_tokens else whole_characters(encoding.decode, ids[:max_tokens])
        )


_STRAY_BYTES = "\ufffd"
"""What a byte-level tokenizer decodes a part of a character to."""
UTF8_MAX_BYTES = 4


def whole_characters(decode: Callable[[Sequence[int]], str], ids: Sequence[int]) -> str:
    """``decode(ids)`` without a character cut in two at its end. An emoji or a rare CJK
    character spans several byte-level tokens; a cut between them decodes the stray bytes to
    U+FFFD, which is not in the text and costs tokens of its own. The last whole character
    ends at most three tokens back (a character is at most four bytes)."""
    end = len(ids)
    text = decode(ids[:end])
    while text.endswith(_STRAY_BYTES) and end > 0 and len(ids) - end < UTF8_MAX_BYTES - 1:
        end -= 1
        text = decode(ids[:end])
    return text


def estimate_chat_prompt_tokens(count: Callable[[str], int], contents: Sequence[str]) -> int:
    """Prompt tokens of chat messages with these ``contents`` when no chat template is known:
    each message's tokens under ``count`` plus :data:`MESSAGE_OVERHEAD_TOKENS`, and half that
    again for the reply's header."""
    body = sum(count(content) + MESSAGE_OVERHEAD_TOKENS for content in contents)
    return body + MESSAGE_OVERHEAD_TOKENS // 2


def prompt_counter(backend: Any) -> Callable[[Sequence[Message]], int]:
    """Counts a chat prompt's tokens under ``backend`` so as to err long, for fitting prompts
    into its context: each message's text plus 8 for its role and separators, plus, where the
    backend knows its chat template (``chat_affixes``), the template's own text around a
    lone user message (such as a default system prompt)."""
    affixes = getattr(backend, "chat_affixes", None)
    template = backend.count_tokens("".join(affixes())) if affixes is not None else 0
    return lambda messages: template + sum(backend.count_tokens(m.content) + 8 for m in messages)
