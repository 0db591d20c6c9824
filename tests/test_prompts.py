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


def test_an_override_with_wrong_fields_is_refused_before_any_call(tmp_path, monkeypatch) -> None:
    """A template with {document} for {text} sent the literal braces and no passage, so
    every passage scored alike; and a rewrite template without {question} never saw it."""
    from rankwise import InputError, OpenAIBackend, Reranker
    from rankwise.rewrite import QueryRewriter

    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    typo = "Document: {document}\nQuery: {query}\nRelevant? Yes or No"
    with pytest.raises(InputError, match=r"uses \{document\}, which nothing fills and never"):
        Reranker("pointwise", backend, prompts={"pointwise_yes_no": typo})
    with pytest.raises(InputError, match=r"'mine' never uses \{query\}, so the model would"):
        Reranker("prp-allpair", backend, prompts={"mine": "{doc1} or {doc2}?"}, prompt="mine")
    with pytest.raises(InputError, match=r"uses \{i\}, which nothing fills"):
        Reranker("first", backend, prompt="listwise_full")  # a template for another method
    (tmp_path / "setwise.txt").write_text("{query}\n{passages}\n=== each passage ===\n{text}")
    monkeypatch.setenv("RANKWISE_PROMPTS_DIR", str(tmp_path))
    with pytest.raises(InputError, match=r"'setwise' uses \{text\}.*never uses \{passage\}"):
        Reranker("setwise", backend)
    with pytest.raises(InputError, match=r"'rewrite_keywords' never uses \{question\}"):
        QueryRewriter(backend, "keywords", prompts={"rewrite_keywords": "Keywords please."})
    shared = {"pointwise_yes_no": "Passage: {text}\nQuery: {query}\nRelevant?"}
    assert QueryRewriter(backend, "keywords", prompts=shared)  # a reranker's, not the rewriter's
    fine = "Passage: {text}\nQuestion: {query}\nRelevant? Answer Yes or No."
    assert Reranker("pointwise", backend, prompts={"pointwise_yes_no": fine})
    assert Reranker("pointwise-qlm", "default", prompts={"pointwise_qlm": "Text: {text}"})
    # fields the method fills though its packaged template does not use them are fine
    listed = "=== user ===\n{query}\n{passages}\nLike {example_ordering}\n=== each passage ===\n({label}) {passage}"
    assert Reranker(
        "prp-allpair", backend, prompts={"prp": listed.replace("{example_ordering}", "A")}
    )
    assert Reranker("first", backend, prompts={"first": listed})


def test_unknown_prompt_lists_the_available_ones() -> None:
    with pytest.raises(PromptNotFoundError, match="pointwise_yes_no"):
        PromptLibrary().get("nope")
    assert "pointwise_qlm" in available_prompts()


def test_a_misspelt_override_or_prompts_folder_is_refused(tmp_path, monkeypatch) -> None:
    """prompts={"pointwise_yesno": ...} and a RANKWISE_PROMPTS_DIR that is not a folder were
    ignored without a word: the packaged prompt ran in their place."""
    from rankwise import OpenAIBackend, Reranker
    from rankwise.rewrite import QueryRewriter

    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    mine = "Passage: {text}\nQuery: {query}\nRelevant?"
    with pytest.raises(PromptNotFoundError, match="did you mean 'pointwise_yes_no'"):
        Reranker("pointwise", backend, prompts={"pointwise_yesno": mine})
    with pytest.raises(PromptNotFoundError, match="did you mean 'rewrite_keywords'"):
        QueryRewriter(backend, "keywords", prompts={"rewrite_keyword": "{question}"})
    # a name the method is told to read, and a template of another method, are fine
    assert Reranker("pointwise", backend, prompt="mine", prompts={"mine": mine})
    assert QueryRewriter(backend, "keywords", prompts={"mine": mine, "prp": "{doc1}"})
    monkeypatch.setenv("RANKWISE_PROMPTS_DIR", str(tmp_path / "absent"))
    with pytest.raises(PromptNotFoundError, match=r"RANKWISE_PROMPTS_DIR is .*not a folder"):
        Reranker("pointwise", backend)


def test_a_prompt_file_saved_with_a_byte_order_mark_does_not_send_it(tmp_path, monkeypatch) -> None:
    from rankwise.prompts import PromptLibrary

    (tmp_path / "mine.txt").write_text("\ufeffQuery: {query}\nPassage: {text}", encoding="utf-8")
    monkeypatch.setenv("RANKWISE_PROMPTS_DIR", str(tmp_path))
    [message] = PromptLibrary().get("mine").render(query="fleas", text="t")
    assert message.content == "Query: fleas\nPassage: t"


def test_a_template_fills_the_fields_it_is_given_once_and_leaves_the_rest() -> None:
    """A brace pair that names no given field stays as written (a template may show JSON),
    and a value that spells a field is not filled again."""
    from rankwise.prompts import fill

    assert fill("{query} {example}", {"query": "fleas"}) == "fleas {example}"
    assert fill("{query} {text}", {"query": "{text}", "text": "t"}) == "{text} t"


def test_a_template_file_that_is_not_utf8_is_refused_by_name(tmp_path, monkeypatch) -> None:
    """A template saved in a Windows code page (a curly quote as byte 0x93) ended in a
    UnicodeDecodeError traceback that did not name the file."""
    from rankwise import InputError, OpenAIBackend, Reranker

    template = "Passage: {text}\nQuery: \u201c{query}\u201d\nRelevant? Yes or No"
    path = tmp_path / "pointwise_yes_no.txt"
    path.write_bytes(template.encode("cp1252"))
    monkeypatch.setenv("RANKWISE_PROMPTS_DIR", str(tmp_path))
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match=rf"the template file '{path}' is not UTF-8 text"):
        Reranker("pointwise", backend)
    path.write_text(template, encoding="utf-8")
    assert "\u201c" in Reranker("pointwise", backend).prompts.get("pointwise_yes_no").parts[0].text
