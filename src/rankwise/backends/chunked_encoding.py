"""Exact tokenising of prompts that repeat text, with the ids of text chunks remembered.

Ranking prompts repeat the same text many times: all-pairs PRP puts each passage in
``2(n - 1)`` prompts, sliding windows put it in several, and every prompt repeats the
instruction and the query. Tokenising is a large part of a prompt's host work (about 0.8 ms
for a 1,100-character prompt with the embedded model's tokenizer), and on a GPU that work
is time the device waits.

With a byte-level BPE tokenizer of the GPT-2 kind (``ByteLevel`` pre-tokenizer with its
regular expression, no normaliser), a text is first cut into pre-tokens, and BPE encodes
each pre-token on its own. A space between two ASCII letters always starts a new pre-token
(no pattern of that expression matches a letter followed by a space), so cutting the text
just before some of these spaces and tokenising the pieces separately gives exactly the ids of the
whole text. The cuts depend only on the text around them, so a passage gives the same
pieces wherever it appears, and each piece is tokenised once.

Other tokenizers (SentencePiece, other pre-tokenizers, normalisers, added tokens that hold
spaces or strip them) are encoded whole, as before: :func:`supports_chunking` says which.
"""

from __future__ import annotations

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


def supports_chunking(tokenizer: Any) -> bool:
    """Whether pieces of a text cut by :data:`_CUT` encode to exactly the ids of the whole.

    True only for a fast tokenizer that matches its special tokens in the text, with no
    normaliser, a plain ``ByteLevel`` pre-tokenizer
    (its GPT-2 expression, no added prefix space), a deterministic BPE model, and added
    tokens that hold no whitespace and strip nothing around them.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "split_special_tokens", False):
        return False
    from tokenizers import models, pre_tokenizers

    pre = backend.pre_tokenizer
    if backend.normalizer is not None or type(pre) is not pre_tokenizers.ByteLevel:
        return False
    if pre.add_prefix_space or not pre.use_regex:
        return False
    if not isinstance(backend.model, models.BPE) or backend.model.dropout:
        return False
    for token in backend.get_added_tokens_decoder().values():
        if token.lstrip or token.rstrip or token.single_word:
            return False
        if any(character.isspace() for character in token.content):
            return False
    return True


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
        self.hits = 0
        self.misses = 0

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
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
