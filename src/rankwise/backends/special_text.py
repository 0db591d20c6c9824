"""Message text that spells a special token is read as text, not as that token.

Passages come from the web and from other people's files, and so, in a chat app, do
queries. A tokenizer that encodes a rendered chat prompt in one piece matches special-token
strings wherever they stand: a passage holding ``<|im_end|>`` and ``<|im_start|>assistant``
would end the user's turn and answer in the model's place. With the embedded model, such an
irrelevant passage scored 0.51 on pointwise yes/no against 0.17 without it.

:class:`SpecialText` keeps the template's own markers special and reads every message's
text as plain text (as ``split_special_tokens=True`` reads it): the spelled tokens are
swapped for private-use markers before the chat template renders the messages, the
rendered prompt is cut at the template's real special tokens, and each piece between them
is encoded as plain text with the spelled tokens put back. Messages that spell no special
token (all of DL19) take the usual path, unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rankwise.prompts import Message

_MARKER = re.compile("\ue000([0-9]+)\ue001")


class SpecialText:
    """The special tokens of ``tokenizer`` and how to keep message text from spelling them."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._plain: Any = None
        added = getattr(tokenizer, "added_tokens_decoder", {})
        self._ids = {t.content: int(i) for i, t in added.items() if t.special and t.content}
        spellings = sorted(self._ids, key=len, reverse=True)  # longest first: <a> inside <ab>
        alternation = "|".join(map(re.escape, spellings))
        self._pattern = re.compile(alternation) if spellings else None
        self._splitter = re.compile(f"({alternation})")  # keeps the tokens it cuts at
        # A marker stands for a spelled token, and for a private-use character the text
        # already held, so that every marker in a rendered prompt is one of ours. (Neither
        # expression is used when the tokenizer has no special tokens.)
        self._masked = re.compile(f"{alternation}|\ue000")

    def spells_special(self, text: str) -> bool:
        """Whether ``text`` holds the string of a special token."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def encode_text(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Ids of ``text`` read as plain text: a special token's string is encoded as its
        characters. Without such a string, the ids of a plain encode. With
        ``add_special_tokens``, the model's own start (or end) tokens are added as usual."""
        plain = self._plain_tokenizer()
        if plain is None:  # a tokenizer written in Python reads the option per call
            return list(
                self._tokenizer.encode(
                    text, add_special_tokens=add_special_tokens, split_special_tokens=True
                )
            )
        return list(plain.encode(text, add_special_tokens=add_special_tokens).ids)

    def _plain_tokenizer(self) -> Any:
        """A private copy of the fast tokenizer's engine that reads special-token strings
        as text, made on first use. ``tokenizer.encode(..., split_special_tokens=True)``
        would set that on the shared engine and leave it set for every later encode that
        bypasses ``encode``, as the chunked encoder does, so the template's own markers
        were then split too."""
        if self._plain is None:
            backend = getattr(self._tokenizer, "backend_tokenizer", None)
            if backend is None:
                return None
            from tokenizers import Tokenizer

            self._plain = Tokenizer.from_str(backend.to_str())
            self._plain.no_truncation()
            self._plain.no_padding()
            self._plain.encode_special_tokens = True
        return self._plain

    def prompt(
        self,
        messages: Sequence[Message],
        render: Callable[[Sequence[Message]], str],
        encode: Callable[[str], list[int]],
    ) -> tuple[str, list[int]]:
        """The prompt ``render`` makes of ``messages`` and its ids: the template's special
        tokens as tokens, the messages' text as text. ``encode`` encodes a prompt whose
        messages spell no special token. Where they do, the text returned holds markers in
        place of the spelled tokens (the template's text around them is as rendered)."""
        if self._pattern is None or not any(self.spells_special(m.content) for m in messages):
            text = render(messages)
            return text, encode(text)
        spelled: list[str] = []

        def marker(match: re.Match[str]) -> str:
            spelled.append(match.group())
            return f"\ue000{len(spelled) - 1}\ue001"

        text = render([Message(m.role, self._masked.sub(marker, m.content)) for m in messages])
        ids: list[int] = []
        # The pieces alternate: text, then one of the template's special tokens, then text...
        for index, piece in enumerate(self._splitter.split(text)):
            if index % 2:
                ids.append(self._ids[piece])
            elif piece:
                ids += self.encode_text(_MARKER.sub(lambda m: spelled[int(m.group(1))], piece))
        return text, ids
