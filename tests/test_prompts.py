from __future__ import annotations

import pytest

from rankwise.errors import PromptNotFoundError
from rankwise.prompts import PromptLibrary, PromptTemplate, available_prompts


def test_packaged_yes_no_prompt_is_the_published_one() -> None:
    template = PromptLibrary().get("pointwise_yes_no")
    text = template.render_text(query="q?", text="p.")
    assert text == "Passage: p.\nQuery: q?\nDoes the passage answer the query? Answer 'Yes' or 'No'"


def test_multi_message_templates_split_on_role_lines() -> None:
    template = PromptTemplate.parse(
        "t", "=== system ===\nYou rank.\n=== user ===\nQ: {query}\nmore\n=== assistant ===\nOk."
    )
    messages = template.render(query="x")
    assert [(m.role, m.content) for m in messages] == [
        ("system", "You rank."),
        ("user", "Q: x\nmore"),
        ("assistant", "Ok."),
    ]


def test_braces_in_values_are_not_reinterpreted() -> None:
    template = PromptTemplate.parse("t", "{text} / {query}")
    assert template.render_text(text="{query} {x}", query="q") == "{query} {x} / q"


def test_overrides_win_over_packaged_and_env(tmp_path, monkeypatch) -> None:
    (tmp_path / "pointwise_yes_no.txt").write_text("from env {query}")
    monkeypatch.setenv("RANKWISE_PROMPTS_DIR", str(tmp_path))
    assert PromptLibrary().get("pointwise_yes_no").render_text(query="q") == "from env q"
    library = PromptLibrary({"pointwise_yes_no": "mine {query}"})
    assert library.get("pointwise_yes_no").render_text(query="q") == "mine q"


def test_unknown_prompt_lists_the_available_ones() -> None:
    with pytest.raises(PromptNotFoundError, match="pointwise_yes_no"):
        PromptLibrary().get("nope")
    assert "pointwise_qlm" in available_prompts()
