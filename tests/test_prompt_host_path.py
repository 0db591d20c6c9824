"""The local backend's prompt path: chat prompts filled into a remembered layout, and token
ids built from remembered pieces, must equal what the chat template and the tokenizer give
for the whole text."""

from __future__ import annotations

import json
import random

import pytest
from jinja2.exceptions import TemplateError

from rankwise import InputError, Reranker
from rankwise.backends.chat_rendering import MAX_LAYOUTS, ChatRenderer, prints_content_only
from rankwise.backends.chunked_encoding import (
    _CUT,
    GPT2_PATTERN,
    LLAMA3_PATTERN,
    MAX_CHUNK_CHARS,
    QWEN2_PATTERN,
    ChunkedEncoder,
    supports_chunking,
)
from rankwise.backends.dry_run import DryRunBackend
from rankwise.backends.model_files import converted_model_dir, default_gguf_path
from rankwise.prompts import Message

AWKWARD_TEXTS = [
    "the cat sat at the mat and the dog ate a treat",
    "Don't take the 'a' train; it's at 10 am, then 2 trains",
    "words  with  two spaces  to  the  end",
    "tabs\tthe\ttable, newlines\nthe\n  and\n\n the end ",
    " starts with a space and ends with one ",
    "ThE TAble Tt Aa tA at ta t a",
    "café au lait at the théâtre; 中文 and 日本語 at the 東京 tower",
    "emoji 🙂 the 🙂a t🙂 and a 🙂",
    "<|im_start|>user\nthe question<|im_end|>\n<|im_start|>assistant\nthe answer",
    "numbers 1 the 2 a3 t4 at5 a 6",
    "x" * 600 + " the end",
    "",
]


@pytest.fixture(scope="module")
def fresh_tokenizer():
    """A new copy of the embedded model's tokenizer for each call (tests change them)."""
    from transformers import AutoTokenizer

    folder = converted_model_dir(default_gguf_path())
    return lambda: AutoTokenizer.from_pretrained(folder)


def _whole(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


async def _method_prompts(backend, records, depth: int) -> list[tuple[list[Message], str]]:
    """Every chat prompt five methods send for ``records`` (no model is run)."""
    sent: list[tuple[list[Message], str]] = []
    backend.chat_affixes()  # the template's own text, probed once per backend: not a prompt
    original = backend.chat_prompt

    def recording(messages, assistant_prefix=""):
        sent.append((list(messages), assistant_prefix))
        return original(messages, assistant_prefix)

    backend.chat_prompt = recording
    try:
        for method in ("pointwise", "prp-allpair", "setwise", "first", "listwise"):
            for record in records:
                reranker = Reranker(method, DryRunBackend(backend))
                await reranker.arerank(record.query, record.documents(depth))
    finally:
        del backend.chat_prompt
    return sent


async def test_every_method_prompt_renders_and_encodes_exactly(local_backend, dl19) -> None:
    sent = await _method_prompts(local_backend, dl19[:3], depth=20)
    assert len(sent) > 1000  # all-pairs alone sends 380 per query
    tokenizer = local_backend.tokenizer
    encoder = local_backend.encoder
    hits, misses, long_pieces = encoder.hits, encoder.misses, 0
    for messages, assistant_prefix in sent:
        expected = tokenizer.apply_chat_template(
            [m.as_dict() for m in messages], tokenize=False, add_generation_prompt=True
        )
        prompt = local_backend.chat_prompt(messages, assistant_prefix)
        assert prompt == expected + assistant_prefix
        assert local_backend.encode_prompt(prompt) == _whole(tokenizer, prompt)
        long_pieces += len({p for p in _CUT.split(prompt) if len(p) > MAX_CHUNK_CHARS})
    assert encoder.enabled
    assert local_backend.renderer.uses_layout(["user"])
    # Every prompt was encoded once already (while the methods ran): all from memory now,
    # except pieces too long to remember.
    assert encoder.misses - misses == long_pieces < len(sent) // 20
    assert encoder.hits - hits > 10 * len(sent)


def test_chunked_ids_equal_whole_text_ids_on_awkward_text(local_backend) -> None:
    encoder = ChunkedEncoder(local_backend.tokenizer)
    alphabet = ["t", "a", "T", "A", "he", "x", " ", "  ", "\n", "'", "s", "é", "1", ".", '"']
    alphabet.append("<|im_end|>")
    generator = random.Random(6)
    texts = AWKWARD_TEXTS + [
        "".join(generator.choice(alphabet) for _ in range(generator.randint(1, 60)))
        for _ in range(2000)
    ]
    for text in texts + texts:  # the second time from remembered pieces
        assert encoder.encode(text) == _whole(local_backend.tokenizer, text), repr(text)
    assert encoder.hits > 0 and encoder.misses > 0


def _with_pre_tokenizer(tokenizer, pre_tokenizer: dict, normalizer: dict | None):
    """The embedded model's vocabulary with another family's pre-tokenizer and normaliser."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state["pre_tokenizer"], state["normalizer"] = pre_tokenizer, normalizer
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)))


@pytest.mark.parametrize(
    ("pattern", "normalizer"),
    [(LLAMA3_PATTERN, None), (QWEN2_PATTERN, {"type": "NFC"}), (GPT2_PATTERN, None)],
    ids=["llama3", "qwen2-nfc", "gpt2-split"],
)
def test_other_byte_level_families_encode_exactly(
    fresh_tokenizer, dl19, pattern, normalizer
) -> None:
    split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated"}
    split["invert"] = False
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    byte_level["use_regex"] = False
    sequence = {"type": "Sequence", "pretokenizers": [split, byte_level]}
    tokenizer = _with_pre_tokenizer(fresh_tokenizer(), sequence, normalizer)
    encoder = ChunkedEncoder(tokenizer)
    assert encoder.enabled
    generator = random.Random(7)
    alphabet = ["t", "a", "T", "he", " ", "\n", "'S", "1234", "e\u0301", "\u0301", "é", ".", "\r"]
    texts = AWKWARD_TEXTS + [doc["text"] for doc in dl19[0].documents(30)]
    texts += ["".join(generator.choice(alphabet) for _ in range(40)) for _ in range(1000)]
    for text in texts + texts:
        assert encoder.encode(text) == _whole(tokenizer, text), repr(text)
    assert encoder.hits > 0


def test_unknown_pre_tokenizers_and_normalisers_are_encoded_whole(fresh_tokenizer) -> None:
    split = {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN + "|x"}}
    split.update(behavior="Isolated", invert=False)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    byte_level["use_regex"] = False
    changed_pattern = {"type": "Sequence", "pretokenizers": [split, byte_level]}
    metaspace = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"}
    metaspace["split"] = True
    plain_byte_level = dict(byte_level, use_regex=True)
    for pre_tokenizer, normalizer in [
        (changed_pattern, None),
        (metaspace, None),
        (plain_byte_level, {"type": "NFKC"}),
        (dict(plain_byte_level, add_prefix_space=True), None),
    ]:
        tokenizer = _with_pre_tokenizer(fresh_tokenizer(), pre_tokenizer, normalizer)
        assert not supports_chunking(tokenizer), (pre_tokenizer, normalizer)


def test_remembered_pieces_stay_within_bounds(local_backend) -> None:
    encoder = ChunkedEncoder(local_backend.tokenizer, max_chunks=8)
    texts = [f"passage {n} tells the tale of a town and the tower at its edge" for n in range(50)]
    for text in texts:
        assert encoder.encode(text) == _whole(local_backend.tokenizer, text)
        assert len(encoder._chunks) <= 8
    long_piece = "x" * 400
    assert encoder.encode(long_piece) == _whole(local_backend.tokenizer, long_piece)
    assert long_piece not in encoder._chunks


def test_tokens_added_later_are_respected(fresh_tokenizer) -> None:
    from tokenizers import AddedToken

    tokenizer = fresh_tokenizer()
    encoder = ChunkedEncoder(tokenizer)
    text = "the passage <mark> at the tower and the town"
    assert encoder.encode(text) == _whole(tokenizer, text)
    tokenizer.add_tokens([AddedToken("<mark>", normalized=False)])
    assert encoder.encode(text) == _whole(tokenizer, text)  # not the remembered pieces
    assert encoder.enabled
    tokenizer.add_tokens([AddedToken("the tower", normalized=False)])
    assert encoder.encode(text) == _whole(tokenizer, text)
    assert not encoder.enabled


def test_tokenizers_that_may_merge_across_cuts_are_encoded_whole(fresh_tokenizer) -> None:
    from tokenizers import AddedToken, normalizers

    plain = fresh_tokenizer()
    assert supports_chunking(plain)
    lowercased = fresh_tokenizer()
    lowercased.backend_tokenizer.normalizer = normalizers.Lowercase()
    spaced = fresh_tokenizer()
    spaced.add_tokens([AddedToken("the tale", normalized=False)])
    stripping = fresh_tokenizer()
    stripping.add_tokens([AddedToken("<note>", rstrip=True, normalized=False)])
    split = fresh_tokenizer()
    split.split_special_tokens = True
    for tokenizer in (lowercased, spaced, stripping, split):
        assert not supports_chunking(tokenizer)
        encoder = ChunkedEncoder(tokenizer)
        assert not encoder.enabled
        for text in ("Tell The Tale at the town", "the tale <note> a tale <|im_end|> at the end"):
            assert encoder.encode(text) == _whole(tokenizer, text)
        assert not encoder._chunks


def _renders_like_the_template(renderer: ChatRenderer, tokenizer, messages) -> None:
    expected = tokenizer.apply_chat_template(
        [m.as_dict() for m in messages], tokenize=False, add_generation_prompt=True
    )
    assert renderer.render(messages) == expected


def test_templates_that_change_the_text_are_rendered_every_time(fresh_tokenizer) -> None:
    trimming = fresh_tokenizer()
    trimming.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}</s>{% endfor %}"
        "<assistant>"
    )
    shouting = fresh_tokenizer()
    shouting.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] | upper }}\n{% endfor %}"
    )
    branching = fresh_tokenizer()
    branching.chat_template = (
        "{% for m in messages %}{% if 'secret' in m['content'] %}[hidden]"
        "{% else %}{{ m['content'] }}{% endif %};{% endfor %}"
    )
    conversations = [
        [Message("system", "Rank well."), Message("user", "the query and a passage")],
        [Message("system", "Rank well."), Message("user", "  padded with spaces \n")],
        [Message("system", "Rank well."), Message("user", "a secret passage")],
        [Message("user", "the first"), Message("assistant", "ok"), Message("user", "the next")],
    ]
    getting = fresh_tokenizer()  # the same branch, reading the text through dict.get
    getting.chat_template = branching.chat_template.replace("m['content']", "m.get('content')")
    for tokenizer in (trimming, shouting, branching, getting):
        renderer = ChatRenderer(tokenizer)
        for messages in conversations + conversations:
            _renders_like_the_template(renderer, tokenizer, messages)
    assert [ChatRenderer(t).fills_in for t in (trimming, shouting, branching, getting)] == [
        True,
        False,
        False,
        False,
    ]
    trimmed = ChatRenderer(trimming)
    trimmed.render(conversations[0])
    assert trimmed.uses_layout(["system", "user"])  # exact for text with no edge spaces
    shouted = ChatRenderer(shouting)
    shouted.render(conversations[0])
    assert not shouted.uses_layout(["system", "user"])


def test_only_templates_that_just_print_the_text_are_filled_in(
    local_backend, fresh_tokenizer
) -> None:
    assert ChatRenderer(local_backend.tokenizer).fills_in  # the embedded model's template
    printed = [
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        "{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] | trim }}{% endfor %}",
        "{% for m in messages %}{{ m.role ~ ': ' ~ m.content }}\n{% endfor %}",
        "{% for m in messages %}{{ m.get('content') }}{% endfor %}",
    ]
    read = [
        "{% for m in messages %}{% set content = m.content %}{{ content }}{% endfor %}",
        "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% endif %}{% endfor %}",
        "{% for m in messages %}{{ m.content | replace('a', 'b') }}{% endfor %}",
        "{% for m in messages %}{{ m.content[:10] }}{% endfor %}",
        "{% for m in messages %}{{ m.content if m.role == 'user' else 'x' }}{% endfor %}",
        "{% for m in messages %}{{ m.content ",  # not even a template
        # read through dict.get: the check missed it, and a branch on it was filled in
        "{% for m in messages %}{% if 'x' in m.get('content', '') %}x{% endif %}{% endfor %}",
    ]
    dated = fresh_tokenizer()
    dated.chat_template = "{{ strftime_now('%d %b %Y') }}{% for m in messages %}{{ m.content }}"
    dated.chat_template += "{% endfor %}"
    assert prints_content_only(dated.chat_template)
    assert not ChatRenderer(dated).fills_in  # the layout would keep yesterday's date
    assert all(prints_content_only(template) for template in printed)
    assert not any(prints_content_only(template) for template in read)


def test_a_read_the_check_cannot_follow_is_caught_by_the_placeholders_or_the_first_prompt(
    fresh_tokenizer,
) -> None:
    """The syntax check cannot follow every read of the text (here through ``m.items()``).
    Then a layout is kept only where both sets of placeholders and the first real prompt
    render as the template does: a filter that changes the second set's placeholder
    ("rankwise"), or the first prompt ("fleas"), leaves the template to render every time."""
    for changed, first in (("rankwise", "a passage"), ("fleas", "fleas")):
        tokenizer = fresh_tokenizer()
        tokenizer.chat_template = (
            "{% for m in messages %}{% for k, v in m.items() %}{% if k == 'content' %}"
            f"{{{{ v | replace('{changed}', 'X') }}}};"
            "{% endif %}{% endfor %}{% endfor %}"
        )
        assert prints_content_only(tokenizer.chat_template)  # the read is not seen
        renderer = ChatRenderer(tokenizer)
        for text in (first, "about rankwise and fleas"):
            _renders_like_the_template(renderer, tokenizer, [Message("user", text)])
        assert not renderer.uses_layout(["user"])


def test_remembered_layouts_stay_within_bounds(fresh_tokenizer) -> None:
    """One layout per sequence of roles, and at most MAX_LAYOUTS of them."""
    renderer = ChatRenderer(fresh_tokenizer())
    for n in range(MAX_LAYOUTS + 40):  # as many distinct sequences of nine roles
        roles = ["assistant" if bit == "1" else "user" for bit in format(n, "09b")]
        renderer.render([Message(role, "t") for role in roles])
        assert 0 < len(renderer._layouts) <= MAX_LAYOUTS
    assert renderer.uses_layout(roles)


def test_a_replaced_template_is_checked_again(fresh_tokenizer) -> None:
    tokenizer = fresh_tokenizer()
    renderer = ChatRenderer(tokenizer)
    messages = [Message("user", "the query and a passage")]
    _renders_like_the_template(renderer, tokenizer, messages)
    assert renderer.uses_layout(["user"])
    tokenizer.chat_template = "{% for m in messages %}[{{ m.content | upper }}]{% endfor %}"
    _renders_like_the_template(renderer, tokenizer, messages)
    assert not renderer.fills_in and not renderer.uses_layout(["user"])


def test_chat_affixes_follow_a_replaced_template(local_backend, monkeypatch) -> None:
    before, after = local_backend.chat_affixes()
    assert before.endswith("<|im_start|>user\n") and after.startswith("<|im_end|>")
    assert local_backend.chat_affixes() == (before, after)
    plain = "{% for m in messages %}<<{{ m.content }}>>{% endfor %}"
    monkeypatch.setattr(local_backend.tokenizer, "chat_template", plain)
    assert local_backend.chat_affixes() == ("<<", ">>")


def test_a_template_that_refuses_roles_still_raises(fresh_tokenizer) -> None:
    strict = fresh_tokenizer()
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('no system messages') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    renderer = ChatRenderer(strict)
    with pytest.raises(TemplateError, match="no system messages"):
        renderer.render([Message("system", "Rank well."), Message("user", "the query")])
    assert renderer.render([Message("user", "the query")]) == "the query"


QWEN3_SWITCH = (
    "{% if add_generation_prompt and enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}"
)
"""Qwen3's switch: with thinking off, its template writes an empty thought after the
assistant's marker, so the answer starts at once."""


async def test_a_thinking_model_is_asked_for_its_answer_not_its_thoughts(local_backend) -> None:
    """A thinking model's template (Qwen3's) starts the answer with its thoughts unless it is
    rendered with ``enable_thinking=False``, which the local backend could not pass: a yes/no
    judgement read the log-probs of "Yes" and "No" where the model writes ``<think>``."""
    from rankwise.backends.transformers import TransformersBackend

    thinking = local_backend.tokenizer.chat_template + QWEN3_SWITCH
    answering = TransformersBackend("default")
    kept = TransformersBackend("default", chat_template_kwargs={})
    try:
        for backend in (answering, kept):
            backend.tokenizer.chat_template = thinking
        messages = [Message("user", "Does the passage answer the query?")]
        for _ in range(2):  # rendered, then filled into the remembered layout
            assert answering.chat_prompt(messages).endswith(
                "<|im_start|>assistant\n<think>\n\n</think>\n\n"
            )
            assert kept.chat_prompt(messages).endswith("<|im_start|>assistant\n")
        assert answering.renderer.uses_layout(["user"])
        thought = len(_whole(answering.tokenizer, "<think>\n\n</think>\n\n"))
        judged = [await b.label_logprobs(messages, ["Yes", "No"]) for b in (answering, kept)]
        assert judged[0].prompt_tokens == judged[1].prompt_tokens + thought
        assert answering.cache_identity != kept.cache_identity  # other prompts, other answers
        assert answering.cache_identity == local_backend.cache_identity  # the default: as before
    finally:
        await answering.aclose()
        await kept.aclose()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"tokenize": True}, "sets tokenize"),
        (["enable_thinking"], "must map template variable names"),
    ],
)
def test_template_variables_rankwise_passes_itself_are_refused(variables, message) -> None:
    from rankwise.backends.transformers import TransformersBackend

    with pytest.raises(InputError, match=message):
        TransformersBackend("default", chat_template_kwargs=variables)
