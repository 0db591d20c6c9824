"""Chat prompts rendered through the model's chat template once per sequence of roles.

Rendering a Jinja chat template costs about 0.3 ms per prompt, a large share of a prompt's
host work when the forward pass runs on a GPU. A ranking method sends thousands of prompts
with the same roles in the same order (system, user), and most templates only wrap each
message's text in fixed markers. :class:`ChatRenderer` renders each sequence of roles once
with placeholder texts, keeps the text around them, and from then on fills the real
messages in.

It does so only where that gives exactly what the template gives:

* the template uses a message's text only to print it, on its own or joined to other text
  with ``+`` or ``~``, possibly through ``trim``: no test, assignment, or other filter reads
  it (checked on the template's syntax tree), so what is printed around it cannot depend
  on it;
* the template is rendered with two different sets of placeholders, and both must leave
  the same text around them, each placeholder exactly once and in order;
* the first real prompt of each sequence of roles is rendered through the template as well
  and must match;
* the template does not print today's date (``strftime_now``);
* a message whose text is empty or starts or ends with whitespace (which templates often
  trim) always goes through the template.

Everything else (templates that raise, reorder, or change the text) is rendered through the
template every time, as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rankwise.prompts import Message

_PLACEHOLDER_SETS = ("\u2063RANKWISE-{}\u2063", "\u2064rankwise{}\u2064")
MAX_LAYOUTS = 256
"""Sequences of roles remembered (RankGPT's multi-turn windows give one per window size)."""

Layout = tuple[str, ...]
"""The text before the first message, between each pair of messages, and after the last."""

_UNKNOWN: Any = object()


class ChatRenderer:
    """Renders chat messages with ``tokenizer``'s chat template (``add_generation_prompt``),
    passing ``template_kwargs`` (such as ``enable_thinking``) to it."""

    def __init__(self, tokenizer: Any, template_kwargs: Mapping[str, Any] | None = None) -> None:
        self._tokenizer = tokenizer
        self._template_kwargs = dict(template_kwargs or {})
        self._layouts: dict[tuple[str, ...], Layout | None] = {}
        self._template_seen: Any = None
        self.fills_in = False
        self._check_template()

    def _check_template(self) -> None:
        """Decide whether to fill in, again whenever the tokenizer's template is replaced."""
        template = getattr(self._tokenizer, "chat_template", None)
        if template is self._template_seen:
            return
        self._template_seen = template
        self._layouts = {}
        self.fills_in = (
            isinstance(template, str)
            and "strftime_now" not in template  # today's date: the layout would go stale
            and prints_content_only(template)
        )

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text for ``messages``, ready for the assistant's answer."""
        self._check_template()
        if not self.fills_in or not all(
            message.content and message.content == message.content.strip() for message in messages
        ):
            return self._template(messages)
        roles = tuple(message.role for message in messages)
        layout = self._layouts.get(roles, _UNKNOWN)
        if layout is _UNKNOWN:
            if len(self._layouts) >= MAX_LAYOUTS:
                self._layouts.clear()
            layout = self._layouts[roles] = self._learn(messages)
        if layout is None:
            return self._template(messages)
        return _fill(layout, [message.content for message in messages])

    def uses_layout(self, roles: Sequence[str]) -> bool:
        """Whether prompts with these roles are filled in rather than rendered each time."""
        return self._layouts.get(tuple(roles)) is not None

    def _template(self, messages: Sequence[Message]) -> str:
        rendered = self._tokenizer.apply_chat_template(
            [message.as_dict() for message in messages],
            tokenize=False,
            add_generation_prompt=True,
            **self._template_kwargs,
        )
        return str(rendered)

    def _learn(self, messages: Sequence[Message]) -> Layout | None:
        """The layout for these messages' roles, or ``None`` where filling in is not exact."""
        layouts = []
        for placeholder in _PLACEHOLDER_SETS:
            texts = [placeholder.format(index) for index in range(len(messages))]
            stand_ins = [Message(m.role, text) for m, text in zip(messages, texts, strict=True)]
            try:
                layout = _split(self._template(stand_ins), texts)
            except Exception:  # the template refuses these roles: render (and raise) as usual
                return None
            layouts.append(layout)
        first = layouts[0]
        if first is None or any(layout != first for layout in layouts):
            return None
        if _fill(first, [m.content for m in messages]) != self._template(messages):
            return None
        return first


_JOINS = (nodes.Add, nodes.Concat, nodes.Output)


def prints_content_only(template: str) -> bool:
    """Whether ``template`` uses message text (``m['content']``, ``m.content``,
    ``m.get('content')``, or a name ``content``) only to print it, unchanged or trimmed, so
    the text around it does not depend on it."""
    try:
        tree = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except TemplateSyntaxError:
        return False
    return all(_only_printed(path) for path in _content_reads(tree, ()))


def _content_reads(
    node: nodes.Node, parents: tuple[nodes.Node, ...]
) -> list[tuple[nodes.Node, ...]]:
    """The path from the root to every place the template reads message text."""
    found = []
    reads = (
        (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and node.arg.value == "content"
        )
        or (isinstance(node, nodes.Getattr) and node.attr == "content")
        or (isinstance(node, nodes.Name) and node.name == "content")
        or _gets_content(node)
    )
    if reads:
        found.append((*parents, node))
    for child in node.iter_child_nodes():
        found += _content_reads(child, (*parents, node))
    return found


def _gets_content(node: nodes.Node) -> bool:
    """Whether ``node`` is ``m.get('content')`` (with or without a default)."""
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Getattr)
        and node.node.attr == "get"
        and bool(node.args)
        and isinstance(node.args[0], nodes.Const)
        and node.args[0].value == "content"
    )


def _only_printed(path: tuple[nodes.Node, ...]) -> bool:
    """Whether the read at the end of ``path`` goes straight into printed output."""
    child = path[-1]
    for parent in reversed(path[:-1]):
        if isinstance(parent, nodes.Output):
            return True
        trimmed = isinstance(parent, nodes.Filter) and parent.name == "trim" and not parent.args
        if not (isinstance(parent, _JOINS) or (trimmed and parent.node is child)):
            return False
        child = parent
    return False


def _split(rendered: str, texts: list[str]) -> Layout | None:
    """The text around ``texts`` in ``rendered``, when each appears exactly once, in order."""
    pieces = []
    rest = rendered
    for text in texts:
        if rendered.count(text) != 1:
            return None
        before, found, rest = rest.partition(text)
        if not found:
            return None
        pieces.append(before)
    pieces.append(rest)
    return tuple(pieces)


def _fill(layout: Layout, contents: list[str]) -> str:
    parts = [layout[0]]
    for content, after in zip(contents, layout[1:], strict=True):
        parts += (content, after)
    return "".join(parts)
