"""Exact tokenising of prompts that repeat text, with the ids of text chunks remembered.

Ranking prompts repeat the same text many times: all-pairs PRP puts each passage in
``2(n - 1)`` prompts, sliding windows put it in several, and every prompt repeats the
instruction and the query. Tokenising is a large part of a prompt's host work (0.3-0.8 ms
for a 1,100-character prompt with the embedded model's tokenizer, depending on the CPU),
and on a GPU that work is time the device waits.

With a byte-level BPE tokenizer (GPT-2, SmolLM, Llama 3, Qwen 2 and 3), a text is first cut
into pre-tokens by a regular expression, and BPE encodes each pre-token on its own. In the
expressions of these families no pattern matches a letter followed by a space, so a space
between two ASCII letters always starts a new pre-token. Cutting the text just before some
of these spaces and tokenising the pieces separately therefore gives exactly the ids of the
whole text (an NFC normaliser changes nothing there either: neither an ASCII letter nor a
space composes with the character on the other side). The cuts depend only on the text
around them, so a passage gives the same pieces wherever it appears, and each piece is
tokenised once.

Other tokenizers (SentencePiece, other pre-tokenizers or expressions, other normalisers,
added tokens that hold spaces or strip them) are encoded whole, as before:
:func:`supports_chunking` says which.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_CHUNKS = 65_536
"""Pieces remembered; the memory is forgotten at once when it is full."""

MAX_CHUNK_CHARS = 256
"""Longer pieces (text with few cut points) are encoded each time, not remembered, so the
memory stays within a few tens of MB."""

_CUT = re.compile(r"(?<=[A-Za-z])(?= [tTaA][a-z])")
"""Just before a space that follows an ASCII letter and starts a word beginning with t or a
(the, to, and, a, at, that...): a cut about every 20 characters of English text. Cutting at
every such space between letters would be as exact, but gives word-sized pieces, and
looking up that many pieces costs more than it saves (measured on DL19 prompts)."""


GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}", 1)
SPLIT_PATTERNS = frozenset({GPT2_PATTERN, LLAMA3_PATTERN, QWEN2_PATTERN})
"""Pre-tokenizer expressions (``Split``, then ``ByteLevel`` without its own expression) in
which a letter is never followed by a space within one pre-token."""


def supports_chunking(tokenizer: Any) -> bool:
    """Whether pieces of a text cut by :data:`_CUT` encode to exactly the ids of the whole.

    True only for a fast tokenizer that matches its special tokens in the text, with no
    normaliser or NFC, a byte-level pre-tokenizer with the GPT-2 expression or a
    ``Split`` by one of :data:`SPLIT_PATTERNS` (no added prefix space), a deterministic BPE
    model, and added tokens that hold no whitespace and strip nothing around them.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "split_special_tokens", False):
        return False
    from tokenizers import models

    if not _exact_normaliser(backend.normalizer) or not _splits_before_spaces(
        backend.pre_tokenizer
    ):
        return False
    if not isinstance(backend.model, models.BPE) or backend.model.dropout:
        return False
    for token in backend.get_added_tokens_decoder().values():
        if token.lstrip or token.rstrip or token.single_word:
            return False
        if any(character.isspace() for character in token.content):
            return False
    return True


def _state(component: Any) -> dict[str, Any]:
    return dict(json.loads(component.__getstate__()))


def _exact_normaliser(normaliser: Any) -> bool:
    return normaliser is None or _state(normaliser) == {"type": "NFC"}


def _splits_before_spaces(pre_tokenizer: Any) -> bool:
    if pre_tokenizer is None:
        return False
    state = _state(pre_tokenizer)
    if state.get("type") == "ByteLevel":
        return state.get("use_regex") is True and state.get("add_prefix_space") is False
    if state.get("type") != "Sequence" or len(state.get("pretokenizers", [])) != 2:
        return False
    split, byte_level = state["pretokenizers"]
    return (
        split.get("type") == "Split"
        and split.get("pattern") in [{"Regex": pattern} for pattern in SPLIT_PATTERNS]
        and split.get("behavior") == "Isolated"
        and split.get("invert") is False
        and byte_level.get("type") == "ByteLevel"
        and byte_level.get("use_regex") is False
        and byte_level.get("add_prefix_space") is False
    )


class ChunkedEncoder:
    """Encodes text like ``tokenizer.encode(text, add_special_tokens=False)``, remembering
    the ids of each piece (see the module docstring); falls back to whole-text encoding
    where the tokenizer does not allow it."""

    def __init__(self, tokenizer: Any, *, max_chunks: int = MAX_CHUNKS) -> None:
        self._tokenizer = tokenizer
        self.enabled = supports_chunking(tokenizer)
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._chunks: dict[str, list[int]] = {}
        self._max_chunks = max_chunks
        self._vocabulary_size = self._size()
        self.hits = 0
        self.misses = 0

    def _size(self) -> int:
        return int(self._backend.get_vocab_size(True)) if self._backend is not None else 0

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
        if self.enabled and self._size() != self._vocabulary_size:  # tokens were added
            self._vocabulary_size = self._size()
            self.clear()
            self.enabled = supports_chunking(self._tokenizer)
        if not self.enabled:
            return list(self._tokenizer.encode(text, add_special_tokens=False))
        pieces = _CUT.split(text)
        # A local copy of every piece's ids: another thread may empty the memory meanwhile.
        found = {piece: self._chunks.get(piece) for piece in pieces}
        missing = [piece for piece, ids in found.items() if ids is None]
        if missing:
            if len(self._chunks) + len(missing) > self._max_chunks:
                self._chunks.clear()
            for piece, encoding in zip(missing, self._encode_many(missing), strict=True):
                found[piece] = encoding.ids
                if len(piece) <= MAX_CHUNK_CHARS:
                    self._chunks[piece] = encoding.ids
            self.misses += len(missing)
        self.hits += len(pieces) - len(missing)
        ids: list[int] = []
        for piece in pieces:
            ids += found[piece]  # type: ignore[operator]
        return ids

    def clear(self) -> None:
        """Forget every remembered piece."""
        self._chunks.clear()

    def _encode_many(self, texts: list[str]) -> list[Any]:
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        return list(encode(texts, add_special_tokens=False))
