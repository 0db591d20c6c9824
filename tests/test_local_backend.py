"""The real embedded SmolLM2 model through TransformersBackend and the Reranker."""

from __future__ import annotations

import asyncio
import math

import pytest

from rankwise import ContextOverflowError, Reranker
from rankwise.backends.model_files import converted_model_dir, default_gguf_path, is_complete
from rankwise.prompts import Message


def _docs(record, depth):
    return record.documents(depth)


def test_default_model_is_cached_as_safetensors(local_backend) -> None:
    folder = converted_model_dir(default_gguf_path())
    assert is_complete(folder)
    assert (folder / "model.safetensors").is_file()
    assert local_backend.model_name == "SmolLM2-135M-Instruct"


async def test_yes_no_are_single_tokens_at_the_assistant_turn(local_backend) -> None:
    prompt = local_backend.chat_prompt([Message("user", "Is water wet?")])
    assert local_backend.label_token_id("Yes", prompt) == 10539
    assert local_backend.label_token_id("No", prompt) == 5230


async def test_batched_logprobs_equal_one_at_a_time(local_backend, dl19) -> None:
    """Padding and batching must not change the numbers."""
    record = dl19[0]
    prompts = [
        [
            Message(
                "user", f"Passage: {doc['text'][:400]}\nQuery: {record.query}\nAnswer 'Yes' or 'No'"
            )
        ]
        for doc in _docs(record, 6)
    ]
    alone = [await local_backend.label_logprobs(p, ["Yes", "No"]) for p in prompts]
    together = await asyncio.gather(
        *(local_backend.label_logprobs(p, ["Yes", "No"]) for p in prompts)
    )
    for a, b in zip(alone, together, strict=True):
        assert a.prompt_tokens == b.prompt_tokens
        for label in ("Yes", "No"):
            assert math.isclose(a.logprobs[label], b.logprobs[label], abs_tol=2e-3)


async def test_batches_with_different_label_sets_keep_each_prompts_labels(
    local_backend, dl19
) -> None:
    """One batch whose prompts ask for different labels: every prompt gets exactly its own
    labels, with the numbers it gets when it runs alone."""
    record = dl19[0]
    label_sets = [["Yes", "No"], ["A", "B", "C"], ["1"], ["Yes", "No", "Maybe", "1"]]
    prompts = [
        [Message("user", f"Passage: {doc['text'][:300]}\nQuery: {record.query}\nAnswer:")]
        for doc in _docs(record, len(label_sets))
    ]
    alone = [
        await local_backend.label_logprobs(p, labels)
        for p, labels in zip(prompts, label_sets, strict=True)
    ]
    together = await asyncio.gather(
        *(
            local_backend.label_logprobs(p, labels)
            for p, labels in zip(prompts, label_sets, strict=True)
        )
    )
    for labels, a, b in zip(label_sets, alone, together, strict=True):
        assert list(b.logprobs) == labels
        assert len(set(b.logprobs.values())) == len(labels)  # not one value copied around
        for label in labels:
            assert math.isclose(a.logprobs[label], b.logprobs[label], abs_tol=2e-3)


async def test_early_dispatch_gives_the_same_ranking_and_scores(local_backend, dl19) -> None:
    """Batches started in arrival order (the accelerator default) give the numbers that
    planned, length-sorted batches give."""
    from rankwise.backends.transformers import TransformersBackend

    early = TransformersBackend(
        "default", dispatch_early=True, min_shared_prefix=0, max_batch=16
    )  # as on an accelerator
    record = dl19[2]
    docs = _docs(record, 20)
    planned = await Reranker("pointwise", local_backend).arerank(record.query, docs)
    started = await Reranker("pointwise", early).arerank(record.query, docs)
    assert sorted(started.ids) == sorted(d["id"] for d in docs)
    assert planned.ids == started.ids
    for a, b in zip(planned.items, started.items, strict=True):
        assert math.isclose(a.score, b.score, abs_tol=2e-3)
    assert early.stats.batches >= 2


def test_prefix_reuse_is_on_for_cpu_and_off_for_accelerators(local_backend) -> None:
    from rankwise.backends.transformers import device_defaults

    assert device_defaults("cpu") == (16, 256.0, False, True, False, 32)
    assert device_defaults("cuda") == (0, 0.0, True, False, True, 16)
    assert device_defaults("cuda:1") == (0, 0.0, True, False, True, 16)
    assert device_defaults("mps") == (0, 0.0, True, False, False, 16)
    assert local_backend._labels.max_batch == 32
    assert local_backend.pack_prompts is True
    assert local_backend.min_shared_prefix == 16
    assert local_backend.prefix_store.max_bytes == 256 * 2**20
    assert local_backend._labels.dispatch_early is False


def test_truncation_is_remembered_and_exact(local_backend) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 40
    ids = local_backend.tokenizer.encode(text, add_special_tokens=False)
    expected = local_backend.tokenizer.decode(ids[:16])
    hits = local_backend._truncate_cached.cache_info().hits
    assert local_backend.truncate(text, 16) == expected
    assert local_backend.truncate(text, 16) == expected
    assert local_backend._truncate_cached.cache_info().hits == hits + 1
    assert local_backend.truncate(text, 10_000) == text  # short enough: untouched
    huge = "flea " * 5000  # longer than the cache takes: cut afresh, still exact
    misses = local_backend._truncate_cached.cache_info().misses
    huge_ids = local_backend.tokenizer.encode(huge, add_special_tokens=False)
    assert local_backend.truncate(huge, 16) == local_backend.tokenizer.decode(huge_ids[:16])
    assert local_backend._truncate_cached.cache_info().misses == misses


@pytest.mark.parametrize("backend_kind", ["local", "api"])
def test_a_cut_inside_a_character_keeps_whole_characters(local_backend, backend_kind) -> None:
    """An emoji or a rare CJK character spans several byte-level tokens. Cutting between
    them decoded the stray bytes as U+FFFD: '🦄🦄🦄 龘' cut to 10 tokens gave '🦄🦄🦄 �', not
    a prefix of the passage, and 11 tokens long on the local model. A cut now ends at the
    last whole character."""
    from rankwise.backends.openai import OpenAIBackend

    backend = (
        local_backend
        if backend_kind == "local"
        else OpenAIBackend("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="unused")
    )
    text = "🦄🦄🦄 龘龘龘 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 fleas"
    total = backend.count_tokens(text)
    assert total > 2 * len(text.split())  # many tokens per character: cuts fall inside them
    previous = ""
    for tokens in range(1, total + 1):
        cut = backend.truncate(text, tokens)
        assert text.startswith(cut) and "\ufffd" not in cut, (tokens, cut)
        assert backend.count_tokens(cut) <= tokens
        assert len(cut) >= len(previous)  # a longer budget never cuts shorter
        previous = cut
    assert backend.truncate(text, total) == text
    assert backend.truncate(text, 1) == ""  # the first character needs three tokens


async def test_model_work_does_not_block_the_event_loop(local_backend, dl19) -> None:
    record = dl19[1]
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    reranker = Reranker("pointwise", local_backend)
    task = asyncio.create_task(ticker())
    await reranker.arerank(record.query, _docs(record, 16))
    done.set()
    await task
    assert ticks >= 5  # the loop kept running while the model worked


async def test_pointwise_ranking_is_a_permutation_with_aligned_scores(local_backend, dl19) -> None:
    record = dl19[2]
    docs = _docs(record, 10)
    ranked = await Reranker("pointwise", local_backend).arerank(record.query, docs)
    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    assert [i.rank for i in ranked.items] == list(range(1, 11))
    assert all(0.0 <= i.score <= 1.0 for i in ranked.items)
    assert [i.score for i in ranked.items] == sorted((i.score for i in ranked.items), reverse=True)
    assert ranked.usage.calls == 10 and ranked.usage.prompt_tokens > 0
    # Alignment: rescoring the top document alone reproduces its score.
    top = ranked.items[0]
    alone = await Reranker("pointwise", local_backend).arerank(
        record.query, [{"id": top.id, "text": top.text}]
    )
    assert alone.usage.calls == 1
    assert math.isclose(alone.items[0].score, top.score, abs_tol=1e-3)
    by_id = {d["id"]: d for d in docs}
    for item in ranked.items:
        assert item.text == by_id[item.id]["text"]
        assert item.input_score == by_id[item.id]["score"]


async def test_query_likelihood_ranks_with_log_likelihood_scores(local_backend, dl19) -> None:
    record = dl19[0]
    ranked = await Reranker("pointwise-qlm", local_backend).arerank(record.query, _docs(record, 8))
    assert ranked.score_kind == "log_likelihood"
    assert ranked.usage.calls == 8 and ranked.usage.completion_tokens == 0
    assert all(i.score < 0 for i in ranked.items)
    assert len(set(ranked.ids)) == 8


async def test_no_document_makes_no_call(local_backend) -> None:
    ranked = await Reranker("pointwise", local_backend).arerank("q", [])
    assert len(ranked) == 0 and ranked.usage.calls == 0


async def test_a_lone_document_gets_a_real_probability(local_backend) -> None:
    """One retrieved passage is still judged: its relevance score is what a threshold
    downstream reads, so it must not be a made-up 1.0."""
    query = "how long do fleas live"
    off_topic = "Concrete is a building material made of cement, sand and gravel."
    lone = await Reranker("pointwise", local_backend).arerank(query, [off_topic])
    assert lone.usage.calls == 1
    pair = await Reranker("pointwise", local_backend).arerank(
        query, [off_topic, "Fleas live a year."]
    )
    in_pair = next(item.score for item in pair.items if item.id == "0")
    assert math.isclose(lone.items[0].score, in_pair, abs_tol=1e-3)
    assert lone.items[0].score < 0.5


async def test_empty_text_ranks_last_without_a_call(local_backend) -> None:
    docs = ["", "Fleas live for up to a year.", "   ", "Concrete floors are cheap."]
    ranked = await Reranker("pointwise", local_backend).arerank("how long do fleas live", docs)
    assert ranked.ids[-2:] == ["0", "2"]
    assert ranked.usage.calls == 2
    assert ranked.trace.count("info") == 1


def test_sync_rerank_works_inside_a_running_loop(local_backend) -> None:
    reranker = Reranker("pointwise", local_backend, top_n=2)

    async def notebook_cell():
        return reranker.rerank("what is wifi", ["Wifi is wireless networking.", "Cats purr.", "x"])

    ranked = asyncio.run(notebook_cell())
    assert len(ranked.selected) == 2 and len(ranked.items) == 3
    again = reranker.rerank("what is wifi", ["a", "b"])  # and outside a loop, twice
    assert sorted(again.ids) == ["0", "1"]


async def test_truncation_keeps_long_documents_rankable(local_backend) -> None:
    long_text = "flea " * 20000
    ranked = await Reranker("pointwise", local_backend).arerank(
        "fleas", [long_text, "Fleas are insects."]
    )
    assert ranked.usage.prompt_tokens < 2 * 250


@pytest.mark.parametrize("method", ["pointwise", "pointwise-qlm", "prp-allpair", "setwise"])
async def test_a_query_longer_than_the_context_is_a_clear_error(local_backend, method) -> None:
    # Passages are cut; the query is not, and the model must not read past its context.
    query = "how long do fleas live " * 2000
    assert local_backend.count_tokens(query) > local_backend.capabilities.max_context
    with pytest.raises(ContextOverflowError, match="shorten the query"):
        await Reranker(method, local_backend).arerank(query, ["Fleas live a year.", "Dogs."])


async def test_generation_stops_where_the_context_ends(local_backend, local_context) -> None:
    messages = [Message("user", "Write a long story about a flea.")]
    prompt = len(local_backend.encode_prompt(local_backend.chat_prompt(messages)))
    local_context(prompt + 3)
    answer = await local_backend.generate(messages, max_tokens=40)
    assert 0 < answer.completion_tokens <= 3
    local_context(prompt)
    with pytest.raises(ContextOverflowError):
        await local_backend.generate(messages, max_tokens=40)
    local_context(prompt + 1)  # exactly full: the prompt and the one label token it reads
    judged = await local_backend.label_logprobs(messages, ["Yes", "No"])
    assert set(judged.logprobs) == {"Yes", "No"} and judged.prompt_tokens == prompt
    # its text is the token the model would write, whether or not it is a label
    first = await local_backend.generate(messages, max_tokens=1)
    assert judged.text == first.text != ""
    assert (first.prompt_tokens, first.completion_tokens) == (prompt, 1)


async def test_generation_is_greedy_and_deterministic(local_backend) -> None:
    messages = [Message("user", "Name a colour.")]
    first = await local_backend.generate(messages, max_tokens=8)
    second = await local_backend.generate(messages, max_tokens=8)
    assert first.text == second.text and first.text.strip()
    assert 0 < first.completion_tokens <= 8


async def test_shared_prefix_reuse_gives_the_same_logprobs(local_backend, dl19) -> None:
    """PRP-style prompts share the query and passage A: the prefix is computed once, and
    the numbers match a forward pass over each whole prompt."""
    record = dl19[0]
    docs = _docs(record, 4)
    prompts = [
        [
            Message(
                "user",
                f'Given a query "{record.query}", which passage is more relevant?\n\n'
                f'Passage A: "{a["text"][:300]}"\n\nPassage B: "{b["text"][:300]}"\n\nOutput:',
            )
        ]
        for a in docs
        for b in docs
        if a is not b
    ]
    before = local_backend.stats.reused_tokens
    together = await asyncio.gather(
        *(local_backend.label_logprobs(p, ["Passage A", "Passage B"]) for p in prompts)
    )
    assert local_backend.stats.reused_tokens > before  # the shared prefix was reused
    reuse, local_backend.min_shared_prefix = local_backend.min_shared_prefix, 0
    try:
        alone = [await local_backend.label_logprobs(p, ["Passage A", "Passage B"]) for p in prompts]
    finally:
        local_backend.min_shared_prefix = reuse
    for a, b in zip(alone, together, strict=True):
        assert a.prompt_tokens == b.prompt_tokens
        for label in ("Passage A", "Passage B"):
            assert math.isclose(a.logprobs[label], b.logprobs[label], abs_tol=2e-3)


async def test_concurrent_reranks_of_the_same_query_get_the_same_scores(local_backend, dl19):
    """Two users asking the same question at once send the same prompts into one batch, where
    each prompt is the whole common prefix: each must keep a token of its own to read its
    answer from."""
    record = dl19[0]
    docs = _docs(record, 3)
    reranker = Reranker("pointwise", local_backend)
    local_backend.clear_prefix_cache()
    alone = await reranker.arerank(record.query, docs)
    local_backend.clear_prefix_cache()
    first, second = await asyncio.gather(
        reranker.arerank(record.query, docs), reranker.arerank(record.query, docs)
    )
    for ranked in (first, second):
        assert ranked.ids == alone.ids
        assert [i.score for i in ranked.items] == pytest.approx(
            [i.score for i in alone.items], abs=2e-3
        )


async def test_prefixes_kept_across_calls_give_the_same_logprobs(local_backend, dl19) -> None:
    """Sequential calls (setwise, PRP heapsort/sliding) start from the longest prefix kept
    from an earlier call; the numbers match a forward pass over each whole prompt, and a
    pair (W, X) reuses passage W from an earlier pair even though the pair's own common
    prefix ends at the query."""
    record = dl19[1]
    docs = _docs(record, 4)

    def pair(a, b) -> list[Message]:
        return [
            Message(
                "user",
                f'Given a query "{record.query}", which passage is more relevant?\n\n'
                f'Passage A: "{a["text"][:300]}"\n\nPassage B: "{b["text"][:300]}"\n\nOutput:',
            )
        ]

    labels = ["Passage A", "Passage B"]
    local_backend.clear_prefix_cache()
    calls = [[pair(docs[0], docs[1]), pair(docs[1], docs[0])]]
    calls += [[pair(docs[0], docs[2]), pair(docs[2], docs[0])]]
    calls += [[pair(docs[2], docs[3]), pair(docs[3], docs[2])]]
    served, kept = [], []
    for prompts in calls:  # one call after another, both orders together, as heapsort does
        before = local_backend.stats.stored_prefix_tokens
        served.append(
            await asyncio.gather(*(local_backend.label_logprobs(p, labels) for p in prompts))
        )
        kept.append(local_backend.stats.stored_prefix_tokens - before)
    passage_a = local_backend.count_tokens(docs[0]["text"][:300])
    # the second call's pair (A, C) reused the query and all of passage A from pair (A, B)
    assert kept[0] == 0 and kept[1] > passage_a and kept[2] > 0
    reuse, local_backend.min_shared_prefix = local_backend.min_shared_prefix, 0
    try:
        for prompts, got in zip(calls, served, strict=True):
            for prompt, result in zip(prompts, got, strict=True):
                alone = await local_backend.label_logprobs(prompt, labels)
                assert alone.prompt_tokens == result.prompt_tokens
                for label in labels:
                    assert math.isclose(alone.logprobs[label], result.logprobs[label], abs_tol=2e-3)
    finally:
        local_backend.min_shared_prefix = reuse


async def test_a_repeated_window_is_served_from_kept_prefixes(local_backend, dl19) -> None:
    """FIRST over the same window twice: the second pass computes one position, and the
    ranking and scores are the same."""
    record = dl19[2]
    reranker = Reranker("first", local_backend)
    local_backend.clear_prefix_cache()
    first = await reranker.arerank(record.query, _docs(record, 5))
    computed = local_backend.stats.real_tokens
    second = await reranker.arerank(record.query, _docs(record, 5))
    assert local_backend.stats.real_tokens - computed == 1
    assert first.ids == second.ids
    assert [c.score for c in first.items] == [c.score for c in second.items]
    assert sorted(first.ids) == sorted(d["id"] for d in _docs(record, 5))


async def test_a_model_placed_by_device_map_stays_where_it_was_placed(
    local_backend, dl19, tmp_path
) -> None:
    """``model_kwargs={"device_map": ...}``, the Hugging Face way to spread a model too big
    for one device over GPUs, the CPU and the disk, failed at load: the backend then moved
    the whole model to ``device`` ("You can't move a model that has some modules offloaded
    to cpu or disk"); with the model on one GPU, it would have moved it to the CPU."""
    from rankwise import InputError
    from rankwise.backends.transformers import TransformersBackend

    placement = {"device_map": "auto", "max_memory": {"cpu": "150MB"}}
    offloaded = TransformersBackend(
        "default", model_kwargs=placement | {"offload_folder": str(tmp_path)}
    )
    assert "disk" in offloaded.model.hf_device_map.values()  # some layers live on the disk
    record = dl19[0]
    documents = record.documents(3)
    expected = await Reranker("pointwise-qlm", local_backend).arerank(record.query, documents)
    got = await Reranker("pointwise-qlm", offloaded).arerank(record.query, documents)
    assert got.ids == expected.ids
    assert [i.score for i in got.items] == pytest.approx([i.score for i in expected.items])
    with pytest.raises(InputError, match="device_map places the model itself"):
        TransformersBackend("/no/such/model", device="cpu", model_kwargs=placement)
    with pytest.raises(InputError, match="cuda_graphs cannot replay a model that device_map"):
        TransformersBackend("/no/such/model", cuda_graphs=True, model_kwargs=placement)


async def test_rerankers_naming_one_local_model_share_it_loaded_once_off_the_loop(
    monkeypatch,
) -> None:
    """Each Reranker or QueryRewriter given no backend (or a model's name) loaded a copy of
    the model of its own (540 MB of weights here, in float32), and loaded it on the event
    loop's thread inside its first call, stalling every other task for the seconds a load
    takes. Those that name one model now share it, loaded once on a worker thread; closing
    one leaves it working for the others."""
    import threading

    from rankwise.backends.transformers import TransformersBackend
    from rankwise.rewrite import QueryRewriter
    from tests.oracle import relevance_docs

    built_on: list[int] = []
    build = TransformersBackend.__init__

    def recording_build(self, *args, **kwargs) -> None:
        built_on.append(threading.get_ident())
        build(self, *args, **kwargs)

    monkeypatch.setattr(TransformersBackend, "__init__", recording_build)
    name = str(default_gguf_path())  # a name no other test loads the model by
    pointwise, listwise = Reranker("pointwise", name), Reranker("listwise", name)
    rewriter = QueryRewriter(name, ["keywords"], max_tokens=8)
    docs = relevance_docs([0.1, 0.9, 0.5])
    for reranker in (pointwise, listwise):
        assert sorted((await reranker.arerank("q", docs)).ids) == ["d0", "d1", "d2"]
    assert len((await rewriter.arewrite("fleas life cycle")).rewrites) >= 1
    assert pointwise.backend is listwise.backend is rewriter.backend
    assert len(built_on) == 1 and built_on[0] != threading.get_ident()
    await pointwise.aclose()
    assert sorted((await listwise.arerank("q", docs)).ids) == ["d0", "d1", "d2"]
