"""Prompt templates, loaded by name from the ``prompts/`` folder shipped with the package.

A template file is plain text with ``{placeholder}`` fields. A file may hold several chat
messages, each introduced by a line such as ``=== system ===``, ``=== user ===`` or
``=== assistant ===``; a file with no such line is one user message. Only the placeholders
that are passed are replaced, in a single pass, so braces inside passage text are safe.

Override any template by passing ``prompts={"name": "template text"}`` to :class:`Reranker`,
or by pointing ``RANKWISE_PROMPTS_DIR`` at a folder of files with the same names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from rankwise.errors import PromptNotFoundError

Role = Literal["system", "user", "assistant"]
_ROLE_LINE = re.compile(r"^=== (system|user|assistant) ===$", re.MULTILINE)
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed template: a list of (role, text) parts with placeholders."""

    name: str
    parts: tuple[tuple[Role, str], ...]

    @classmethod
    def parse(cls, name: str, source: str) -> PromptTemplate:
        """Split a template file into messages."""
        if source.endswith("\n"):
            source = source[:-1]
        markers = list(_ROLE_LINE.finditer(source))
        if not markers:
            return cls(name, (("user", source),))
        parts: list[tuple[Role, str]] = []
        for index, marker in enumerate(markers):
            end = markers[index + 1].start() - 1 if index + 1 < len(markers) else len(source)
            body = source[marker.end() + 1 : end]
            parts.append((marker.group(1), body))  # type: ignore[arg-type]
        return cls(name, tuple(parts))

    @property
    def fields(self) -> set[str]:
        """The placeholder names this template uses."""
        return {match.group(1) for _, text in self.parts for match in _FIELD.finditer(text)}

    def render(self, **values: object) -> list[Message]:
        """Fill the placeholders and return chat messages."""
        return [Message(role, fill(text, values)) for role, text in self.parts]

    def render_text(self, **values: object) -> str:
        """Fill the placeholders of a single-message template and return its text."""
        return "\n\n".join(message.content for message in self.render(**values))


def fill(text: str, values: Mapping[str, object]) -> str:
    """Replace ``{name}`` for the given names only, in one pass."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        return str(values[key]) if key in values else match.group(0)

    return _FIELD.sub(substitute, text)


class PromptLibrary:
    """Finds templates: explicit overrides, then ``RANKWISE_PROMPTS_DIR``, then the package."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self._overrides = dict(overrides or {})

    def get(self, name: str) -> PromptTemplate:
        """Return the template called ``name``."""
        if name in self._overrides:
            return PromptTemplate.parse(name, self._overrides[name])
        directory = os.environ.get("RANKWISE_PROMPTS_DIR")
        if directory:
            candidate = Path(directory) / f"{name}.txt"
            if candidate.is_file():
                return PromptTemplate.parse(name, candidate.read_text(encoding="utf-8"))
        return _packaged(name)


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
