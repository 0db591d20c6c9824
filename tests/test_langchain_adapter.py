"""The LangChain adapter with real LangChain objects: an InMemoryVectorStore over real MiniLM
embeddings, ContextualCompressionRetriever, callbacks and tools, reranked by the real model."""

from __future__ import annotations

import asyncio
import math

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_rankwise import RankwiseRerank, RankwiseRetriever, rankwise_tool

from rankwise import (
    BackendUnavailableError,
    InputError,
    OpenAIBackend,
    Reranker,
    UnknownMethodError,
)
from rankwise.abstain import Abstention
from tests.conftest import fitted_calibrator
from tests.oracle import oracle, relevance_docs
from tests.stub_server import Reply, completion, user_text


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings over a loaded SentenceTransformer."""

    def __init__(self, model) -> None:
        self.model = model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.model.encode([text], normalize_embeddings=True)[0].tolist()


@pytest.fixture(scope="module")
def store(minilm, dl19):
    record = dl19[0]
    documents = [
        Document(
            page_content=c["text"],
            metadata={"docid": str(c["docid"]), "bm25": c["score"]},
            id=str(c["docid"]),
        )
        for c in record.candidates[:20]
    ]
    vector_store = InMemoryVectorStore(MiniLMEmbeddings(minilm))
    vector_store.add_documents(documents)
    return vector_store, record.query


async def test_compressor_reorders_as_the_reranker_says(store, local_backend) -> None:
    vector_store, query = store
    base = vector_store.as_retriever(search_kwargs={"k": 8})
    compressor = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    got = await retriever.ainvoke(query)

    retrieved = await base.ainvoke(query)
    expected = await Reranker("pointwise-qlm", local_backend).arerank(
        query, [{"id": d.id, "text": d.page_content} for d in retrieved]
    )
    assert [d.id for d in got] == expected.ids[:3]
    assert [d.metadata["rank"] for d in got] == [1, 2, 3]
    scores = {i.id: i.score for i in expected.items}
    for document in got:
        assert document.metadata["relevance_score"] == pytest.approx(scores[document.id], abs=1e-4)
        assert document.metadata["docid"] == document.id and "bm25" in document.metadata
    assert len(compressor.last_result.items) == 8  # nothing lost: the cut stays reachable


async def test_a_document_given_twice_is_ranked_twice_and_kept(store, local_backend) -> None:
    vector_store, query = store
    documents = await vector_store.as_retriever(search_kwargs={"k": 3}).ainvoke(query)
    documents = [*documents, documents[0]]
    compressor = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=None)
    got = await compressor.acompress_documents(documents, query)
    assert sorted(d.id for d in got) == sorted(d.id for d in documents)
    assert sorted(compressor.last_result.ids) == sorted(
        [*(d.id for d in documents[:3]), f"{documents[0].id}#2"]
    )
    assert [d.metadata["rank"] for d in got] == [1, 2, 3, 4]
    copies = [d.metadata["relevance_score"] for d in got if d.id == documents[0].id]
    assert len(copies) == 2 and copies[0] == pytest.approx(copies[1], abs=1e-4)


async def test_threshold_and_top_n(store, local_backend) -> None:
    vector_store, query = store
    documents = await vector_store.as_retriever(search_kwargs={"k": 6}).ainvoke(query)
    loose = RankwiseRerank(method="pointwise", backend=local_backend, top_n=4, score_threshold=0.0)
    kept = await loose.acompress_documents(documents, query)
    assert len(kept) == 4
    strict = RankwiseRerank(method="pointwise", backend=local_backend, top_n=4, score_threshold=0.5)
    kept = await strict.acompress_documents(documents, query)
    assert all(d.metadata["relevance_score"] >= 0.5 for d in kept)
    expected = [i.id for i in strict.last_result.items if i.score >= 0.5][:4]
    assert [d.id for d in kept] == expected
    impossible = RankwiseRerank(method="pointwise", backend=local_backend, score_threshold=1.0)
    assert await impossible.acompress_documents(documents, query) == []
    assert len(impossible.last_result.items) == 6
    with pytest.raises(InputError, match=r"probabilities in \[0, 1\]"):
        RankwiseRerank(method="pointwise", backend=local_backend, score_threshold=1.01)


async def test_a_field_changed_after_use_takes_effect_and_keeps_the_model(store) -> None:
    vector_store, query = store
    documents = await vector_store.as_retriever(search_kwargs={"k": 5}).ainvoke(query)
    compressor = RankwiseRerank(method="pointwise-qlm", top_n=1)  # the embedded model
    assert len(await compressor.acompress_documents(documents, query)) == 1
    model = compressor.reranker.loaded_backend
    assert model is not None

    compressor.top_n = 4
    kept = await compressor.acompress_documents(documents, query)
    assert [d.id for d in kept] == [i.id for i in compressor.last_result.items][:4]
    assert compressor.reranker.loaded_backend is model  # not loaded a second time

    compressor.method_options["max_passage_tokens"] = 8  # changed in place
    assert compressor.reranker.method.max_passage_tokens == 8
    compressor.method = "pointwise"
    compressor.score_threshold = 1.0
    assert await compressor.acompress_documents(documents, query) == []
    assert compressor.last_result.method == "pointwise"
    assert compressor.reranker.loaded_backend is model


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"method": "pointwise-qml"}, UnknownMethodError, "unknown method 'pointwise-qml'"),
        ({"top_n": -1}, InputError, "top_n must be >= 0"),
        ({"method": "listwise", "method_options": {"windw": 5}}, UnknownMethodError, "windw"),
        ({"method": "pointwise-qlm", "score_threshold": 0.5}, InputError, "meaningless"),
    ],
)
def test_bad_fields_are_refused_when_the_compressor_is_built(fields, error, message) -> None:
    with pytest.raises(error, match=message):
        RankwiseRerank(**fields)


def test_sync_compress_works_inside_a_running_loop(store, local_backend) -> None:
    vector_store, query = store
    documents = vector_store.similarity_search(query, k=4)
    compressor = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=2)

    async def cell():
        return compressor.compress_documents(documents, query)

    assert len(asyncio.run(cell())) == 2


class _TextEvents(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def on_text(self, text: str, **kwargs) -> None:
        self.texts.append(text)


async def test_retriever_pipeline_and_abstention(store, local_backend) -> None:
    vector_store, query = store
    base = vector_store.as_retriever(search_kwargs={"k": 5})
    reranker = RankwiseRerank(method="pointwise", backend=local_backend, top_n=2)
    retriever = RankwiseRetriever(base_retriever=base, reranker=reranker)
    # A prompt computed after its prefix's stored key/value states scores within float
    # rounding of one computed whole, so both calls start with no states stored: the test
    # failed when run alone, as the first call then computed whole and the second reused.
    local_backend.clear_prefix_cache()
    got = await retriever.ainvoke(query)
    assert len(got) == 2 and [d.metadata["rank"] for d in got] == [1, 2]
    local_backend.clear_prefix_cache()
    assert retriever.invoke(query) == got  # the sync twin gives the same documents

    never = RankwiseRerank(
        method="pointwise", backend=local_backend, abstain=Abstention("max", threshold=1.01)
    )
    events = _TextEvents()
    abstaining = RankwiseRetriever(base_retriever=base, reranker=never)
    assert await abstaining.ainvoke(query, config={"callbacks": [events]}) == []
    confidence = never.last_result.confidence
    assert f"rankwise abstained: confidence {confidence:.4g} below 1.01" in events.texts
    assert never.last_result.abstained and len(never.last_result.items) == 5


async def test_the_retriever_says_why_it_abstained(minilm, local_backend) -> None:
    """The callback text is the reason the Reranker gave. A list with no text to judge once
    read as a rerank that stopped early, as it has no confidence either."""
    blank = InMemoryVectorStore(MiniLMEmbeddings(minilm))
    blank.add_documents([Document(page_content=" ", id="a"), Document(page_content="", id="b")])
    judged = RankwiseRerank(
        method="pointwise", backend=local_backend, abstain=Abstention("max", threshold=0.5)
    )
    events = _TextEvents()
    retriever = RankwiseRetriever(base_retriever=blank.as_retriever(), reranker=judged)
    assert await retriever.ainvoke("fleas", config={"callbacks": [events]}) == []
    assert judged.last_result.abstain_reason == "no document had text to judge"
    assert events.texts == ["rankwise abstained: no document had text to judge"]

    texts = InMemoryVectorStore(MiniLMEmbeddings(minilm))
    texts.add_documents([Document(page_content=f"fleas live {n} days", id=str(n)) for n in (9, 30)])
    stopped = RankwiseRerank(
        method="pointwise",
        backend=local_backend,
        abstain=Abstention("max", threshold=0.5),
        method_options={"max_calls": 1},
    )
    events = _TextEvents()
    retriever = RankwiseRetriever(base_retriever=texts.as_retriever(), reranker=stopped)
    assert await retriever.ainvoke("fleas", config={"callbacks": [events]}) == []
    assert stopped.last_result.confidence is None
    reason = "the rerank stopped before its scores were complete"
    assert stopped.last_result.abstain_reason == reason
    assert events.texts == [f"rankwise abstained: {reason}"]


async def test_retriever_takes_the_chat_history_for_a_conversational_rewrite(
    store, local_backend, stub
) -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    from rankwise.rewrite import QueryRewriter

    stub.handler = lambda request: Reply(body=completion("How long does a cat flea live?"))
    vector_store, _ = store
    rewriter = QueryRewriter(OpenAIBackend("stub", base_url=stub.base_url), ["conversational"])
    reranker = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=None)
    base = vector_store.as_retriever(search_kwargs={"k": 3})
    retriever = RankwiseRetriever(base_retriever=base, reranker=reranker, rewrite=rewriter)
    history = [HumanMessage("how long do fleas live?"), AIMessage("Up to a year.")]
    got = await retriever.ainvoke("and on cats?", chat_history=history)
    asked = user_text(stub.requests[0])
    assert "Human: how long do fleas live?\nAI: Up to a year." in asked
    assert reranker.last_result.trace.events[-1].data["queries"] == [
        "and on cats?",
        "How long does a cat flea live?",
    ]
    pool = {
        d.id
        for q in ("and on cats?", "How long does a cat flea live?")
        for d in await base.ainvoke(q)
    }
    assert sorted(d.id for d in got) == sorted(pool)
    assert [d.id for d in retriever.invoke("and on cats?", chat_history="Human: fleas?")]
    pairs = [("human", "how long do fleas live?"), {"role": "assistant", "content": "A year."}]
    await retriever.ainvoke("and on cats?", chat_history=pairs)
    assert "Human: how long do fleas live?\nAI: A year." in user_text(stub.requests[-1])


async def test_retriever_fuses_rewrites(store, local_backend) -> None:
    vector_store, query = store
    base = vector_store.as_retriever(search_kwargs={"k": 3})

    async def rewrite(text: str) -> list[str]:
        return ["flea lifespan", "how long do fleas live"]

    reranker = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=None)
    got = await RankwiseRetriever(base_retriever=base, reranker=reranker, rewrite=rewrite).ainvoke(
        query
    )
    pool = set()
    for text in [query, *await rewrite(query)]:
        pool |= {d.id for d in await base.ainvoke(text)}
    assert sorted(d.id for d in got) == sorted(pool)  # fused, deduplicated, nothing lost


class _ChunksById(BaseRetriever):
    """A retriever whose documents have no ``id``; every chunk of one manual carries the
    manual's ``metadata["id"]``, as chunks split from one source often do."""

    chunks: dict[str, list[str]]

    def _get_relevant_documents(self, query: str, *, run_manager) -> list[Document]:
        return [
            Document(page_content=text, metadata={"id": "manual"}) for text in self.chunks[query]
        ]


async def test_chunks_sharing_an_id_across_rewrites_are_all_kept(local_backend) -> None:
    """Repeated ids are numbered per list ("manual", "manual#2"), so the same key named
    different chunks in two lists, and fusion merged them: a chunk only the rewrite found
    was dropped from the pool without a word."""
    chunks = {
        "how long do fleas live": ["Fleas live up to a year.", "Flea eggs hatch in days."],
        "flea lifespan": ["An adult flea lives two to three months.", "Fleas live up to a year."],
    }

    async def rewrite(text: str) -> list[str]:
        return ["flea lifespan"]

    reranker = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=None)
    retriever = RankwiseRetriever(
        base_retriever=_ChunksById(chunks=chunks), reranker=reranker, rewrite=rewrite
    )
    got = await retriever.ainvoke("how long do fleas live")
    texts = sorted(d.page_content for d in got)
    assert texts == sorted(set(chunks["how long do fleas live"]) | set(chunks["flea lifespan"]))
    # keyed by metadata["id"], numbered where chunks differ
    assert sorted(reranker.last_result.ids) == ["manual", "manual#2", "manual#3"]
    for document in got:  # each rank's score is its own chunk's score
        item = reranker.last_result.items[document.metadata["rank"] - 1]
        assert item.text == document.page_content
        assert item.score == document.metadata["relevance_score"]


async def test_tools_have_typed_schemas_and_work(store, local_backend) -> None:
    vector_store, query = store
    reranker = RankwiseRerank(method="pointwise-qlm", backend=local_backend)
    tool = rankwise_tool(reranker)
    assert set(tool.args) == {"query", "passages", "top_n"}
    passages = [d.page_content for d in vector_store.similarity_search(query, k=4)]
    out = await tool.ainvoke({"query": query, "passages": passages, "top_n": 2})
    assert [r["rank"] for r in out["results"]] == [1, 2]
    assert all(r["text"] in passages for r in out["results"])
    search = rankwise_tool(reranker, retriever=vector_store.as_retriever(search_kwargs={"k": 4}))
    assert set(search.args) == {"query", "top_n"}
    found = search.invoke({"query": query, "top_n": 3})
    assert len(found["results"]) == 3 and found["abstained"] is False


async def test_an_agents_empty_or_overlong_query_comes_back_to_it_as_the_tool_answer(
    store, local_backend
) -> None:
    """An empty query raised InputError out of the tool, ending the agent's run, and so does
    one past the model's context; a failing backend still raises."""
    vector_store, _ = store
    reranker = RankwiseRerank(method="pointwise-qlm", backend=local_backend)
    tools = [
        (rankwise_tool(reranker), {"passages": ["fleas", "cats"]}),
        (rankwise_tool(reranker, retriever=vector_store.as_retriever()), {}),
    ]
    for tool, arguments in tools:
        answer = await tool.ainvoke({"query": " ", **arguments})
        assert answer.startswith("the query is empty; call the tool again")
        call = {
            "name": tool.name,
            "args": {"query": "", **arguments},
            "id": "1",
            "type": "tool_call",
        }
        message = tool.invoke(call)
        assert message.status == "error" and "the query is empty" in message.content
        too_long = await tool.ainvoke({"query": "how long do fleas live " * 2000, **arguments})
        assert too_long.startswith("the prompt has") and "shorten the query" in too_long

    broken = RankwiseRerank(
        method="pointwise",
        backend=OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", max_retries=0),
    )
    with pytest.raises(BackendUnavailableError, match="could not reach"):
        await rankwise_tool(broken).ainvoke({"query": "q", "passages": ["a"]})


async def test_two_queries_rerank_concurrently(stub) -> None:
    def slow(request):
        reply = oracle(request)
        reply.delay = 0.4
        return reply

    stub.handler = slow
    backend = OpenAIBackend("oracle", base_url=stub.base_url, concurrency=16)
    compressor = RankwiseRerank(method="pointwise", backend=backend, top_n=2)
    documents = [
        Document(page_content=d["text"], id=d["id"]) for d in relevance_docs([0.2, 0.8, 0.5])
    ]
    await compressor.acompress_documents(documents, "q")
    assert stub.max_in_flight == 3  # one query: its three documents at once
    stub.max_in_flight = 0
    both = await asyncio.gather(
        compressor.acompress_documents(documents, "q"),
        compressor.acompress_documents(documents, "r"),
    )
    assert [d.id for d in both[0]] == ["d1", "d2"]
    assert [d.id for d in both[1]] == ["d1", "d2"]
    # both queries' requests were in flight together, not one query after the other
    assert stub.max_in_flight > 3, stub.max_in_flight


async def test_a_chat_model_passed_as_the_backend_is_wrapped(stub) -> None:
    """Reranker(method, ChatOpenAI(...)) and QueryRewriter(ChatOpenAI(...)) raised
    AttributeError ('ChatOpenAI' object has no attribute 'capabilities') at the first use."""
    from langchain_openai import ChatOpenAI

    from rankwise.rewrite import QueryRewriter

    stub.handler = oracle
    chat = ChatOpenAI(model="oracle", base_url=stub.base_url, api_key="k", max_retries=0)
    reranker = Reranker("listwise", chat)
    assert reranker.backend.kind == "langchain"
    documents = relevance_docs([0.1, 0.9, 0.5, 0.3])
    ranked = await reranker.arerank("q", documents)
    assert ranked.ids == ["d1", "d2", "d3", "d0"] and ranked.model == "oracle"
    assert Reranker(backend=chat).method.name == "listwise"  # wrapped without log-probs
    rewriter = QueryRewriter(chat, "keywords")
    assert rewriter.backend.kind == "langchain"
    assert (await rewriter.arewrite("how long do fleas live")).queries[
        0
    ] == "how long do fleas live"
    assert stub.requests  # the model was asked over HTTP


async def test_a_chat_model_with_a_max_tokens_field_is_asked_for_few_tokens(stub) -> None:
    """ChatOpenAI declares max_tokens, so each call carries the method's limit (ChatOpenAI
    sends it as max_completion_tokens): 1 token for a yes/no judgement, the method's budget for
    a ranking. Without it the model wrote up to its own default, dozens of tokens per judgement."""
    from langchain_openai import ChatOpenAI

    from rankwise.backends.langchain import LangChainBackend

    stub.handler = oracle
    chat = ChatOpenAI(model="oracle", base_url=stub.base_url, api_key="k", max_retries=0)
    documents = relevance_docs([0.1, 0.9, 0.5, 0.3])
    judged = await Reranker("pointwise", LangChainBackend(chat, logprobs=True)).arerank(
        "q", documents
    )
    assert judged.ids == ["d1", "d2", "d3", "d0"]
    assert len(stub.requests) == 4
    assert [r.get("max_completion_tokens") for r in stub.requests] == [1, 1, 1, 1]

    # The listed alternatives count, not the chosen token alone: P(Yes) / (P(Yes) + P(No)).
    listed = {"Yes": math.log(0.6), "No": math.log(0.2), "Maybe": math.log(0.1)}
    stub.handler = lambda request: Reply(body=completion("Yes", top_logprobs=listed))
    shared = await Reranker("pointwise", LangChainBackend(chat, logprobs=True)).arerank("q", ["a"])
    assert shared.items[0].score == pytest.approx(0.75)
    assert (shared.usage.prompt_tokens, shared.usage.completion_tokens) == (10, 1)  # as sent
    stub.handler = oracle

    stub.requests.clear()
    ranked = await Reranker("listwise", chat).arerank("q", documents)
    assert ranked.ids == ["d1", "d2", "d3", "d0"]
    (request,) = stub.requests
    assert isinstance(request.get("max_completion_tokens"), int)
    assert 4 <= request["max_completion_tokens"] <= 256

    stub.requests.clear()
    kept = LangChainBackend(chat, logprobs=True, max_tokens_kwarg=None)
    await Reranker("pointwise", kept).arerank("q", documents)
    assert len(stub.requests) == 4
    assert not any("max_completion_tokens" in r or "max_tokens" in r for r in stub.requests)


async def test_a_chat_model_that_answers_in_content_parts_is_read_whole() -> None:
    """Some chat models (Anthropic's among them) answer with a list of content parts, not a
    string: the ranking is read from their text parts, joined; a thinking part is not the
    answer."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    parts = [
        {"type": "thinking", "thinking": "Maybe [1] > [3] > [2]?", "signature": "s"},
        {"type": "text", "text": "[2] > "},
        {"type": "text", "text": "[3] > [1]"},
    ]
    chat = GenericFakeChatModel(messages=iter([AIMessage(content=parts)]))
    ranked = await Reranker("listwise", chat).arerank("q", ["a", "b", "c"])
    assert ranked.ids == ["1", "2", "0"] and ranked.trace.fallbacks == []
    assert ranked.model == "GenericFakeChatModel"  # no model name: the class names it


async def test_the_cache_keeps_apart_chat_models_of_one_name_with_other_settings(
    stub, tmp_path
) -> None:
    """The key held the wrapped model's name only, so a ChatOpenAI of that name at another
    temperature, or at another server, read the first one's answers as its own."""
    from langchain_openai import ChatOpenAI

    from rankwise.backends.langchain import LangChainBackend

    stub.handler = oracle
    documents = relevance_docs([0.1, 0.9, 0.5])
    cache = tmp_path / "cache.sqlite"

    def chat(**settings) -> Reranker:
        model = ChatOpenAI(model="oracle", base_url=stub.base_url, api_key="k", **settings)
        return Reranker("listwise", model, cache=cache)

    first = await chat(temperature=0.0).arerank("q", documents)
    assert first.usage.calls == 1 and first.ids == ["d1", "d2", "d0"]
    warmer = await chat(temperature=0.9).arerank("q", documents)
    assert warmer.usage.calls == 1 and warmer.usage.cache_hits == 0
    assert stub.requests[-1]["temperature"] == 0.9
    again = await chat(temperature=0.0).arerank("q", documents)  # a new, equal model
    assert again.usage.calls == 0 and again.usage.cache_hits == 1
    assert again.ids == first.ids

    def identity(api_key: str) -> str:
        model = ChatOpenAI(model="oracle", base_url=stub.base_url, api_key=api_key)
        return LangChainBackend(model).cache_identity

    assert identity("k") == identity("rotated")  # a new API key keeps the answers
    assert "rotated" not in identity("rotated")


@pytest.mark.parametrize("min_quality", [-10.0, 10.0])
async def test_the_compressor_abstains_with_a_fitted_calibrator(
    store, local_backend, min_quality
) -> None:
    """``Reranker(abstain=...)`` takes a fitted Calibrator, which abstains on any method that
    scores (query likelihood here), but the compressor's field took only an Abstention rule:
    a Calibrator was refused with a pydantic ValidationError."""
    vector_store, query = store
    calibrator = fitted_calibrator(min_quality)
    compressor = RankwiseRerank(
        method="pointwise-qlm", backend=local_backend, top_n=3, abstain=calibrator
    )
    assert compressor.reranker.abstain is calibrator  # the fitted one, not a copy
    base = vector_store.as_retriever(search_kwargs={"k": 5})
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    got = await retriever.ainvoke(query)
    ranked = compressor.last_result
    assert ranked.confidence == pytest.approx(calibrator.predict(ranked.judged_scores))
    assert ranked.abstained is (min_quality > 0)
    assert [d.id for d in got] == ([] if ranked.abstained else ranked.ids[:3])


async def test_a_chat_model_that_returns_no_log_probs_is_warned_about(stub, caplog) -> None:
    """Wrapped with ``logprobs=True``, a model that answers without them (a provider that
    drops the request) left each yes/no judgement to the answer's text, and only the trace
    said so, passage by passage."""
    from langchain_openai import ChatOpenAI

    from rankwise.backends.langchain import LangChainBackend

    stub.handler = lambda request: Reply(body=completion("Yes"))
    chat = ChatOpenAI(model="plain", base_url=stub.base_url, api_key="k", max_retries=0)
    backend = LangChainBackend(chat, logprobs=True)
    with caplog.at_level("WARNING", logger="rankwise.backends.framework"):
        for _ in range(2):
            ranked = await Reranker("pointwise", backend).arerank("q", ["a", "b"])
            assert len(ranked.trace.fallbacks) == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "rankwise.backends.framework"]
    assert len(warnings) == 1
    assert warnings[0].startswith("plain answered without log-probs")
    assert "pass LangChainBackend(model, logprobs=False)" in warnings[0]


async def test_a_chat_model_wrapped_by_bind_retry_or_fallbacks_is_a_backend(stub) -> None:
    """``chat.with_retry()``, ``chat.bind(...)`` and ``chat.with_fallbacks([...])`` are how
    LangChain apps configure a chat model for production; each was refused ("backend must be
    ... got RunnableRetry"), so the app had to hand over a second, unwrapped model."""
    from langchain_core.runnables import RunnableLambda
    from langchain_openai import ChatOpenAI

    def broken_model_fails(request):
        if request["model"] == "broken":
            return Reply(status=500, body={"error": {"message": "down"}})
        return oracle(request)

    stub.handler = broken_model_fails
    chat = ChatOpenAI(model="oracle", base_url=stub.base_url, api_key="k", max_retries=0)
    broken = ChatOpenAI(model="broken", base_url=stub.base_url, api_key="k", max_retries=0)
    documents = relevance_docs([0.1, 0.9, 0.5, 0.3])
    wrapped = {
        "retry": chat.with_retry(stop_after_attempt=2),
        "bind": chat.bind(seed=7),
        "fallbacks": broken.with_fallbacks([chat]),
        "nested": chat.bind(seed=7).with_retry(stop_after_attempt=2),
    }
    for name, model in wrapped.items():
        stub.requests.clear()
        ranked = await Reranker("listwise", model).arerank("q", documents)
        assert ranked.ids == ["d1", "d2", "d3", "d0"], name
        answered = [r for r in stub.requests if r["model"] == "oracle"]
        assert len(answered) == 1 and answered[0]["max_completion_tokens"] >= 4, name
        expected = "broken (falling back to oracle)" if name == "fallbacks" else "oracle"
        assert ranked.model == expected, name
        if name in ("bind", "nested"):
            assert answered[0]["seed"] == 7  # the bound arguments reach the request
    assert [r["model"] for r in stub.requests[:1]] == ["oracle"]
    stub.requests.clear()
    await Reranker("listwise", wrapped["fallbacks"]).arerank("q", documents)
    assert [r["model"] for r in stub.requests] == ["broken", "oracle"]
    # the cache tells apart what changes the answers: bound arguments and fallbacks
    from rankwise.backends.langchain import LangChainBackend

    keys = {LangChainBackend(m).cache_identity for m in [chat, *wrapped.values()]}
    assert len(keys) == 3  # the model alone, bound to seed 7, with a fallback: retry adds nothing
    assert (
        LangChainBackend(wrapped["retry"]).cache_identity == LangChainBackend(chat).cache_identity
    )
    nested = LangChainBackend(wrapped["nested"]).cache_identity
    assert nested == LangChainBackend(wrapped["bind"]).cache_identity
    with pytest.raises(InputError, match="not a LangChain chat model"):
        Reranker("listwise", chat.with_fallbacks([RunnableLambda(lambda messages: "no")]))


def test_the_tool_refuses_parts_of_the_wrong_kind_when_built(store, local_backend) -> None:
    """Both were taken; the agent's first call then failed with an AttributeError."""
    vector_store, _ = store
    compressor = RankwiseRerank(method="pointwise-qlm", backend=local_backend)
    with pytest.raises(InputError, match="reranker must be a RankwiseRerank compressor"):
        rankwise_tool("pointwise-qlm")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="retriever must be a LangChain retriever"):
        rankwise_tool(compressor, retriever=vector_store)  # type: ignore[arg-type]


def test_the_sync_api_works_with_a_chat_model_the_app_also_awaits(stub) -> None:
    """ChatOpenAI keeps one async HTTP client per model, bound to the event loop that first
    used it. After the app's own ``asyncio.run`` awaited the model, every synchronous
    ``rerank`` (which runs on rankwise's own loop) failed with "Event loop is closed". The
    sync API now calls the model through its synchronous interface."""
    from langchain_openai import ChatOpenAI

    stub.handler = oracle
    chat = ChatOpenAI(model="oracle", base_url=stub.base_url, api_key="k", max_retries=0)

    async def the_apps_own_calls() -> list:
        return await asyncio.gather(*(chat.ainvoke("hello") for _ in range(3)))

    asyncio.run(the_apps_own_calls())
    reranker = Reranker("listwise", chat)
    for _ in range(3):
        assert reranker.rerank("q", relevance_docs([0.1, 0.9, 0.5])).ids == ["d1", "d2", "d0"]
    compressor = RankwiseRerank(method="listwise", llm=chat, top_n=2)
    documents = [Document(page_content=d["text"]) for d in relevance_docs([0.1, 0.9, 0.5])]
    kept = compressor.compress_documents(documents, "q")
    assert [d.page_content for d in kept] == [
        "passage 1 relevance 0.900",
        "passage 2 relevance 0.500",
    ]
