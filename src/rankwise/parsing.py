"""Reading LLM answers: permutation repair, pairwise and setwise labels, passage cleaning."""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass, field

LETTERS = string.ascii_uppercase

_WELL_FORMED_NUMBERS = re.compile(r"^\s*\[\d+\](\s*>\s*\[\d+\])*\s*$")
_WELL_FORMED_LETTERS = re.compile(r"^\s*\[[A-Z]\](\s*>\s*\[[A-Z]\])*\s*$")
_BRACKETED_ID = re.compile(r"\[(\d+|[A-Za-z])\]")


@dataclass
class PermutationRepair:
    """A window permutation read from text, with what had to be repaired.

    ``order[j]`` is the window position that goes to place ``j``.
    """

    order: list[int]
    well_formed: bool
    missing: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    out_of_range: list[int] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        return not self.well_formed or bool(self.missing or self.duplicates or self.out_of_range)


def after_reasoning(text: str) -> str:
    """The answer a reasoning model (Qwen3, DeepSeek-R1) wrote after its thoughts: the text
    after the last ``</think>``. An answer that opens ``<think>`` and never closes it was cut
    short by the token limit inside its thoughts, and has no answer: ``""``."""
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    if text.lstrip().startswith("<think>"):
        return ""
    return text


def clean_answer(text: str) -> str:
    """Keep the answer after a reasoning model's thoughts (:func:`after_reasoning`) and map
    exotic digits to ASCII."""
    text = after_reasoning(text)
    out = []
    for char in text:
        if char.isascii():
            out.append(char)
            continue
        value = unicodedata.numeric(char, None)
        if value is not None and float(value).is_integer() and value >= 0:
            out.append(str(int(value)))
        else:
            folded = unicodedata.normalize("NFKC", char)
            out.append(folded if folded.isascii() else char)
    return "".join(out)


def parse_permutation(text: str, size: int, *, letters: bool = False) -> PermutationRepair:
    """Read a ranking such as ``[3] > [1] > [2]`` into a full permutation of ``range(size)``.

    Follows the published repair: read ids in order (letters A=1, B=2, ...), drop duplicates
    (keeping the first) and out-of-range ids, then append missing ids in window order.
    Never raises; unreadable text gives the identity.
    """
    try:
        cleaned = clean_answer(text)
        raw = _read_ids(cleaned, letters)
    except Exception:
        return PermutationRepair(list(range(size)), well_formed=False, missing=list(range(size)))
    pattern = _WELL_FORMED_LETTERS if letters else _WELL_FORMED_NUMBERS
    well_formed = bool(pattern.match(cleaned))
    order: list[int] = []
    seen: set[int] = set()
    duplicates: list[int] = []
    out_of_range: list[int] = []
    for value in raw:
        if value in seen:
            duplicates.append(value)
            continue
        seen.add(value)
        if 0 <= value < size:
            order.append(value)
        else:
            out_of_range.append(value)
    missing = [position for position in range(size) if position not in seen]
    order.extend(missing)
    return PermutationRepair(order, well_formed, missing, duplicates, out_of_range)


def _read_ids(text: str, letters: bool) -> list[int]:
    if letters:
        bracketed = [m.group(1) for m in _BRACKETED_ID.finditer(text) if m.group(1).isalpha()]
        tokens = bracketed or re.findall(r"\b([A-Z])\b", text)
        return [LETTERS.index(token.upper()) for token in tokens]
    return [int(token) - 1 for token in re.sub(r"\D", " ", text).split()]


def parse_choice(text: str, labels: str) -> int | None:
    """Which label a pairwise/setwise answer names: the first ``Passage X``, else a bare
    label as a word; ``None`` when neither is there (the caller decides the fallback)."""
    cleaned = clean_answer(text)
    match = re.search(r"passage\s*\[?([A-Za-z])\b", cleaned, flags=re.IGNORECASE)
    if match and match.group(1).upper() in labels:
        return labels.index(match.group(1).upper())
    for token in re.findall(r"\b([A-Z])\b", cleaned):
        if token in labels:
            return labels.index(token)
    return None


def fence_ids(text: str) -> str:
    """Rewrite bracketed ids in passage or query text (``[12]`` → ``(12)``, ``[B]`` → ``(B)``)
    so that passage content cannot pose as an identifier."""
    return _BRACKETED_ID.sub(lambda m: f"({m.group(1)})", text)


def first_words(text: str, count: int | None) -> str:
    """The first ``count`` whitespace-separated words (all of them for ``None``)."""
    if count is None:
        return text.strip()
    return " ".join(text.split()[:count])
