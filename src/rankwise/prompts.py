"""Prompt templates, loaded by name from the ``prompts/`` folder shipped with the package.

A template file is plain text with ``{placeholder}`` fields, split into sections by marker lines:

- ``=== system ===``, ``=== user ===``, ``=== assistant ===``: one chat message each. A file
  with no marker is one user message.
- ``=== user, each passage ===`` / ``=== assistant, each passage ===``: messages repeated once
  per passage (RankGPT's multi-turn format), filled from that passage's fields.
- ``=== each passage ===``: the format of one passage inside the ``{passages}`` field; the
  passages are joined by a newline, or by what the marker names (``=== each passage,
  separated by a blank line ===``).

Only the placeholders that are passed are replaced, in a single pass, so braces inside
passage text are safe. Override any template by passing ``prompts={"name": "template text"}``
to :class:`Reranker`, or by pointing ``RANKWISE_PROMPTS_DIR`` at a folder of files with the
same names.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from rankwise.errors import InputError, PromptNotFoundError

Role = Literal["system", "user", "assistant"]
_MARKER = re.compile(
    r"^=== (system|user|assistant|each passage)(, each passage)?"
    r"(?:, separated by (a newline|a blank line|nothing))? ===$",
    re.MULTILINE,
)
_SEPARATORS = {None: "\n", "a newline": "\n", "a blank line": "\n\n", "nothing": ""}
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class _Part:
    role: Role
    text: str
    per_passage: bool = False


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed template: chat-message parts and an optional per-passage format."""

    name: str
    parts: tuple[_Part, ...]
    passage_format: str | None = None
    passage_separator: str = "\n"

    @classmethod
    def parse(cls, name: str, source: str) -> PromptTemplate:
        """Split a template file into its sections."""
        if source.endswith("\n"):
            source = source[:-1]
        markers = list(_MARKER.finditer(source))
        if not markers:
            return cls(name, (_Part("user", source),))
        parts: list[_Part] = []
        leading = source[: markers[0].start()]
        if leading.strip():  # text before the first marker is a user message
            parts.append(_Part("user", leading[:-1] if leading.endswith("\n") else leading))
        passage_format: str | None = None
        separator = "\n"
        for index, marker in enumerate(markers):
            end = markers[index + 1].start() - 1 if index + 1 < len(markers) else len(source)
            body = source[marker.end() + 1 : end]
            kind, repeated, joiner = marker.groups()
            if kind == "each passage":
                passage_format, separator = body, _SEPARATORS[joiner]
            else:
                parts.append(_Part(kind, body, per_passage=repeated is not None))  # type: ignore[arg-type]
        return cls(name, tuple(parts), passage_format, separator)

    @property
    def fields(self) -> set[str]:
        """The placeholder names this template uses."""
        texts = [part.text for part in self.parts] + [self.passage_format or ""]
        return {match.group(1) for text in texts for match in _FIELD.finditer(text)}

    def render(
        self, passages: Sequence[Mapping[str, object]] = (), **values: object
    ) -> list[Message]:
        """Fill the placeholders and return chat messages.

        ``passages`` fill the per-passage messages and the ``{passages}`` field.
        """
        if self.passage_format is not None:
            values["passages"] = self.passage_separator.join(
                fill(self.passage_format, {**values, **item}) for item in passages
            )
        messages: list[Message] = []
        index = 0
        while index < len(self.parts):
            part = self.parts[index]
            if not part.per_passage:
                messages.append(Message(part.role, fill(part.text, values)))
                index += 1
                continue
            block = []
            while index < len(self.parts) and self.parts[index].per_passage:
                block.append(self.parts[index])
                index += 1
            for item in passages:
                merged = {**values, **item}
                messages.extend(Message(p.role, fill(p.text, merged)) for p in block)
        return messages

    def render_text(self, passages: Sequence[Mapping[str, object]] = (), **values: object) -> str:
        """Fill the placeholders and return the messages' text joined by blank lines."""
        return "\n\n".join(message.content for message in self.render(passages, **values))


def fill(text: str, values: Mapping[str, object]) -> str:
    """Replace ``{name}`` for the given names only, in one pass."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        return str(values[key]) if key in values else match.group(0)

    return _FIELD.sub(substitute, text)


class PromptLibrary:
    """Finds templates: explicit overrides, then ``RANKWISE_PROMPTS_DIR``, then the package."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        if overrides is not None and not (
            isinstance(overrides, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in overrides.items())
        ):
            raise InputError(
                "prompts must map template names to template text, such as "
                f"{{'pointwise_yes_no': '...{{query}}...{{text}}...'}}; got {overrides!r:.100}"
            )
        self._overrides = dict(overrides or {})
        _prompts_dir()  # a folder that is not there fails now, not by being ignored

    def check_names(self, used: Sequence[str] = (), *, prefix: str = "") -> None:
        """Refuse an override whose name is neither a packaged template nor one of ``used``
        (the names its user reads): a misspelt name would be ignored without a word. With
        ``prefix``, only names that start with it are judged (the rest are another's)."""
        known = set(available_prompts()) | set(used)
        for name in self._overrides:
            if name.startswith(prefix) and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise PromptNotFoundError(
                    f"prompts= names a template {name!r} that nothing uses; {hint}the "
                    f"templates are {', '.join(sorted(known))}"
                )

    def get(self, name: str) -> PromptTemplate:
        """Return the template called ``name``."""
        if name in self._overrides:
            return PromptTemplate.parse(name, self._overrides[name])
        directory = _prompts_dir()
        if directory is not None:
            candidate = directory / f"{name}.txt"
            if candidate.is_file():
                try:
                    source = candidate.read_text(encoding="utf-8-sig")
                except UnicodeDecodeError as error:
                    raise InputError(
                        f"the template file {str(candidate)!r} is not UTF-8 text ({error}); "
                        "save it as UTF-8"
                    ) from None
                return PromptTemplate.parse(name, source)
        return _packaged(name)


def _prompts_dir() -> Path | None:
    """The folder ``RANKWISE_PROMPTS_DIR`` names, or None when it is unset."""
    value = os.environ.get("RANKWISE_PROMPTS_DIR")
    if not value:
        return None
    directory = Path(value).expanduser()
    if not directory.is_dir():
        raise PromptNotFoundError(
            f"RANKWISE_PROMPTS_DIR is {value!r}, which is not a folder; point it at a folder "
            "of <name>.txt templates, or unset it to use the packaged ones"
        )
    return directory


PASSAGE_FIELDS = frozenset({"text", "passage", "doc1", "doc2"})
"""Fields that carry a passage's text."""


def check_fields(template: PromptTemplate, fills: frozenset[str]) -> None:
    """Raise :class:`InputError` when ``template`` has a field that its user, which fills
    ``fills``, leaves empty (it would reach the model as written, in braces), or lacks the
    query, the question or every passage field that its user fills."""
    allowed = fills | ({"passages"} if template.passage_format is not None else set())
    unknown = sorted(template.fields - allowed)
    missing = [_braces([name]) for name in ("query", "question") if name in fills - template.fields]
    passage_fields = sorted(fills & PASSAGE_FIELDS)
    if passage_fields and not template.fields & set(passage_fields):
        missing.append(" or ".join(_braces([name]) for name in passage_fields))
    if not unknown and not missing:
        return
    problems = []
    if unknown:
        problems.append(f"uses {_braces(unknown)}, which nothing fills")
    if missing:
        problems.append(f"never uses {', '.join(missing)}, so the model would not see it")
    raise InputError(
        f"prompt template {template.name!r} {' and '.join(problems)}; its fields can be "
        f"{_braces(sorted(allowed))}"
    )


def _braces(names: Sequence[str]) -> str:
    return ", ".join(f"{{{name}}}" for name in names)


def available_prompts() -> list[str]:
    """Names of the templates shipped with rankwise."""
    folder = resources.files("rankwise") / "prompts"
    return sorted(
        entry.name[: -len(".txt")] for entry in folder.iterdir() if entry.name.endswith(".txt")
    )


@cache
def _packaged(name: str) -> PromptTemplate:
    resource = resources.files("rankwise") / "prompts" / f"{name}.txt"
    if not resource.is_file():
        raise PromptNotFoundError(
            f"no prompt template named {name!r}; available: {', '.join(available_prompts())}"
        )
    return PromptTemplate.parse(name, resource.read_text(encoding="utf-8"))
