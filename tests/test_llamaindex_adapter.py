"""The LlamaIndex adapter with real LlamaIndex objects: a VectorStoreIndex over real MiniLM
embeddings, a query engine with the postprocessor, instrumentation events, retriever, tool."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms.mock import MockLLM
from llama_index.core.schema import QueryBundle
from llama_index.postprocessor.rankwise import (
    RankwiseRerank,
    RankwiseRetriever,
    rankwise_function_tool,
)

from rankwise import InputError, Reranker, UnknownMethodError
from rankwise.abstain import Abstention
from tests.conftest import fitted_calibrator


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex embeddings over a loaded SentenceTransformer."""

    def __init__(self, model) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2")
        self._model = model

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._model.encode([text], normalize_embeddings=True)[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


@pytest.fixture(scope="module")
def index(minilm, dl19):
    record = dl19[1]
    documents = [
        Document(text=c["text"], doc_id=str(c["docid"]), metadata={"docid": str(c["docid"])})
        for c in record.candidates[:20]
    ]
    return VectorStoreIndex.from_documents(
        documents, embed_model=MiniLMEmbedding(minilm)
    ), record.query


class _Events(BaseEventHandler):
    events: list = []  # noqa: RUF012 - pydantic field with a default

    @classmethod
    def class_name(cls) -> str:
        return "RankwiseTestEvents"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


async def test_query_engine_uses_rankwise_order_and_scores(index, local_backend) -> None:
    vector_index, query = index
    handler = _Events()
    get_dispatcher().add_event_handler(handler)
    postprocessor = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=3)
    Settings.llm = MockLLM()  # the answer synthesiser's LLM; response_mode="no_text" skips it
    engine = vector_index.as_query_engine(
        similarity_top_k=8, node_postprocessors=[postprocessor], response_mode="no_text"
    )
    response = await engine.aquery(query)
    retrieved = await vector_index.as_retriever(similarity_top_k=8).aretrieve(query)
    expected = await Reranker("pointwise-qlm", local_backend).arerank(
        query,
        [
            {"id": n.node.node_id, "text": n.node.get_content(metadata_mode="embed")}
            for n in retrieved
        ],
    )
    assert [n.node.node_id for n in response.source_nodes] == expected.ids[:3]
    for node, item in zip(response.source_nodes, expected.items, strict=False):
        assert node.score == pytest.approx(item.score, abs=1e-4)
        assert node.node.metadata["docid"]  # metadata preserved
    starts = [e for e in handler.events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in handler.events if isinstance(e, ReRankEndEvent)]
    assert starts and starts[-1].top_n == 3 and len(starts[-1].nodes) == 8
    assert ends and [n.node.node_id for n in ends[-1].nodes] == expected.ids[:3]


def test_sync_postprocess_and_threshold(index, local_backend) -> None:
    vector_index, query = index
    nodes = vector_index.as_retriever(similarity_top_k=5).retrieve(query)
    post = RankwiseRerank(method="pointwise", backend=local_backend, top_n=5, score_threshold=0.5)
    kept = post.postprocess_nodes(nodes, query_str=query)
    assert all(n.score >= 0.5 for n in kept)
    assert len(post.last_result.items) == 5
    with pytest.raises(InputError, match="needs the query"):
        post.postprocess_nodes(nodes)


def test_a_field_changed_after_use_takes_effect(index, local_backend) -> None:
    vector_index, query = index
    nodes = vector_index.as_retriever(similarity_top_k=5).retrieve(query)
    post = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=1)
    assert len(post.postprocess_nodes(nodes, query_str=query)) == 1
    post.top_n = 3
    kept = post.postprocess_nodes(nodes, query_str=query)
    assert [n.node.node_id for n in kept] == [i.id for i in post.last_result.items][:3]
    post.method = "pointwise"
    post.postprocess_nodes(nodes, query_str=query)
    assert post.last_result.method == "pointwise"


def test_reranker_options_go_through_method_options(tmp_path, local_backend) -> None:
    options = {"cache": str(tmp_path / "c.sqlite"), "deadline": 30, "max_passage_tokens": 64}
    post = RankwiseRerank(method="pointwise-qlm", backend=local_backend, method_options=options)
    reranker = post.reranker
    assert reranker.deadline == 30 and reranker.method.max_passage_tokens == 64
    assert str(reranker.cache.path) == options["cache"]


def test_bad_fields_are_refused_when_the_postprocessor_is_built(local_backend) -> None:
    with pytest.raises(UnknownMethodError, match="unknown method 'pointwse'"):
        RankwiseRerank(method="pointwse", backend=local_backend)
    with pytest.raises(InputError, match="top_n must be >= 0"):
        RankwiseRerank(top_n=-3)
    with pytest.raises(InputError, match=r"either llm= .* or backend="):
        RankwiseRerank(llm=MockLLM(), backend=local_backend)


async def test_a_node_given_twice_is_ranked_twice_and_kept(index, local_backend) -> None:
    """A node list with one node twice (two retrievers merged without deduplication) raised
    DuplicateIdError from the postprocessor. (LlamaIndex retrievers drop repeats
    themselves, so RankwiseRetriever never sees one.)"""
    vector_index, query = index
    nodes = await vector_index.as_retriever(similarity_top_k=4).aretrieve(query)
    nodes = [*nodes, nodes[1]]
    post = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=None)
    kept = await post.apostprocess_nodes(nodes, query_str=query)
    ids = [n.node.node_id for n in nodes]
    assert sorted(n.node.node_id for n in kept) == sorted(ids)  # all five, the copy too
    assert sorted(post.last_result.ids) == sorted([*ids[:4], f"{ids[1]}#2"])
    copies = [n.score for n in kept if n.node.node_id == ids[1]]
    assert len(copies) == 2 and copies[0] == pytest.approx(copies[1], abs=1e-4)


async def test_retriever_and_abstention(index, local_backend) -> None:
    vector_index, query = index
    base = vector_index.as_retriever(similarity_top_k=4)
    post = RankwiseRerank(method="pointwise", backend=local_backend, top_n=2)
    retriever = RankwiseRetriever(base, post)
    got = await retriever.aretrieve(query)
    assert len(got) == 2
    assert [n.node.node_id for n in retriever.retrieve(query)] == [n.node.node_id for n in got]
    never = RankwiseRerank(
        method="pointwise", backend=local_backend, abstain=Abstention("max", 1.01)
    )
    assert await RankwiseRetriever(base, never).aretrieve(QueryBundle(query)) == []
    assert never.last_result.abstained


async def test_retriever_reads_the_chat_engines_memory_for_a_conversational_rewrite(
    index, local_backend, stub
) -> None:
    """The LlamaIndex retriever had no way to pass earlier turns, so a conversational
    rewrite in a chat engine always saw an empty history."""
    from llama_index.core.chat_engine import ContextChatEngine
    from llama_index.core.memory import ChatMemoryBuffer

    from rankwise import OpenAIBackend
    from rankwise.rewrite import QueryRewriter
    from tests.stub_server import Reply, completion, user_text

    stub.handler = lambda request: Reply(body=completion("How long does a cat flea live?"))
    vector_index, query = index
    base = vector_index.as_retriever(similarity_top_k=3)
    rewriter = QueryRewriter(OpenAIBackend("stub", base_url=stub.base_url), ["conversational"])
    post = RankwiseRerank(method="pointwise-qlm", backend=local_backend, top_n=None)
    memory = ChatMemoryBuffer.from_defaults()
    retriever = RankwiseRetriever(base, post, rewrite=rewriter, memory=memory)
    engine = ContextChatEngine.from_defaults(retriever=retriever, memory=memory, llm=MockLLM())

    await engine.achat(query)
    assert any("no chat history" in e.message for e in post.last_result.trace.events)
    await engine.achat("and on cats?")
    asked = user_text(stub.requests[-1])
    assert f"user: {query}" in asked and "assistant: " in asked
    assert "and on cats?" not in asked.split("user: ")[1]
    searched = post.last_result.trace.events[-1].data["queries"]
    assert searched == ["and on cats?", "How long does a cat flea live?"]
    pool = {n.node.node_id for q in searched for n in await base.aretrieve(q)}
    assert sorted(item.id for item in post.last_result.items) == sorted(pool)

    with pytest.raises(InputError, match="memory is read only by a QueryRewriter"):
        RankwiseRetriever(base, post, memory=memory)
    with pytest.raises(InputError, match="memory must be a LlamaIndex memory"):
        RankwiseRetriever(base, post, rewrite=rewriter, memory=["user: hi"])  # type: ignore[arg-type]


async def test_function_tool(index, local_backend) -> None:
    vector_index, query = index
    post = RankwiseRerank(method="pointwise-qlm", backend=local_backend)
    tool = rankwise_function_tool(post, retriever=vector_index.as_retriever(similarity_top_k=4))
    assert tool.metadata.name == "search_reranked"
    output = await tool.acall(query=query, top_n=2)
    assert len(output.raw_output["results"]) == 2
    rerank = rankwise_function_tool(post)
    output = rerank.call(query=query, passages=["fleas", "concrete floors cost"], top_n=1)
    assert len(output.raw_output["results"]) == 1


def _recording_llm(declares_max_tokens: bool, refuses_max_tokens: bool = False):
    """A user-defined LlamaIndex LLM that answers a fixed ranking and records each call's
    keyword arguments; with ``declares_max_tokens`` it has a ``max_tokens`` field, as
    LlamaIndex's OpenAI and OpenAILike LLMs do."""
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback
    from pydantic import Field

    class RecordingLLM(CustomLLM):
        calls: list[dict] = Field(default_factory=list)

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="recording", context_window=4096)

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
            self.calls.append(kwargs)
            if refuses_max_tokens and "max_tokens" in kwargs:
                raise TypeError("complete() got an unexpected keyword argument 'max_tokens'")
            return CompletionResponse(text="[2] > [3] > [1]")

        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
            raise NotImplementedError

    class LimitedLLM(RecordingLLM):
        max_tokens: int | None = None

    return LimitedLLM() if declares_max_tokens else RecordingLLM()


@pytest.mark.parametrize("declares_max_tokens", [True, False])
async def test_an_llm_with_a_max_tokens_field_is_asked_for_the_methods_limit(
    declares_max_tokens: bool,
) -> None:
    from rankwise.backends.llamaindex import LlamaIndexBackend

    llm = _recording_llm(declares_max_tokens)
    backend = LlamaIndexBackend(llm)
    documents = [{"id": f"d{i}", "text": f"passage {i}"} for i in range(3)]
    ranked = await Reranker("listwise", backend).arerank("q", documents)
    assert ranked.ids == ["d1", "d2", "d0"] and ranked.trace.fallbacks == []
    (call,) = llm.calls
    if declares_max_tokens:
        assert backend.max_tokens_kwarg == "max_tokens"
        assert isinstance(call.get("max_tokens"), int) and 4 <= call["max_tokens"] <= 256
    else:
        assert backend.max_tokens_kwarg is None and "max_tokens" not in call


async def test_an_llm_that_refuses_the_detected_keyword_gets_an_error_that_says_what_to_do() -> (
    None
):
    from rankwise import BackendError
    from rankwise.backends.llamaindex import LlamaIndexBackend

    documents = [{"id": f"d{i}", "text": f"passage {i}"} for i in range(3)]
    refusing = LlamaIndexBackend(_recording_llm(True, refuses_max_tokens=True))
    with pytest.raises(BackendError, match="pass max_tokens_kwarg=None"):
        await Reranker("listwise", refusing).arerank("q", documents)
    kept = LlamaIndexBackend(_recording_llm(True, refuses_max_tokens=True), max_tokens_kwarg=None)
    assert (await Reranker("listwise", kept).arerank("q", documents)).ids == ["d1", "d2", "d0"]


async def test_llm_settings_is_read_at_each_query_not_when_built(monkeypatch) -> None:
    """``llm="settings"`` stands for ``Settings.llm``, which an app often sets after building
    its postprocessors: reading it when built would fail (LlamaIndex's default needs the
    OpenAI package), and a later change of it must reach the next query."""
    from llama_index.core import Settings
    from llama_index.core.schema import NodeWithScore, TextNode

    monkeypatch.setattr(Settings, "_llm", None)  # unset: reading it now raises
    with pytest.raises(ImportError):
        _ = Settings.llm
    rerank = RankwiseRerank(method="listwise", llm="settings", top_n=None)
    nodes = [NodeWithScore(node=TextNode(text=f"passage {i}", id_=f"n{i}")) for i in range(3)]
    first = _recording_llm(declares_max_tokens=False)
    Settings.llm = first
    ranked = await rerank.apostprocess_nodes(nodes, query_str="q")
    assert [n.node.node_id for n in ranked] == ["n1", "n2", "n0"] and len(first.calls) == 1
    same = rerank.reranker
    assert rerank.reranker is same  # nothing changed: the Reranker is kept
    second = _recording_llm(declares_max_tokens=False)
    Settings.llm = second
    await rerank.apostprocess_nodes(nodes, query_str="q")
    assert len(first.calls) == 1 and len(second.calls) == 1


def _chat_llm(**response_fields):
    """A user-defined LlamaIndex LLM whose chat answers "Yes" with the given ChatResponse
    fields (raw usage, additional_kwargs, log-probs), as LLM integrations fill them."""
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse
    from llama_index.core.llms import CustomLLM, LLMMetadata

    class ChatLLM(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="chat", context_window=2048, is_chat_model=True)

        async def achat(self, messages, **kwargs) -> ChatResponse:
            message = ChatMessage(role="assistant", content="Yes")
            return ChatResponse(message=message, **response_fields)

        def complete(self, prompt: str, formatted: bool = False, **kwargs):
            raise NotImplementedError

        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
            raise NotImplementedError

    return ChatLLM()


@pytest.mark.parametrize(
    "fields",
    [
        {"raw": {"usage": {"prompt_tokens": 11, "completion_tokens": 2}}},  # a dict body
        {"raw": SimpleNamespace(usage=SimpleNamespace(prompt_tokens=11, completion_tokens=2))},
        {"additional_kwargs": {"prompt_tokens": 11, "completion_tokens": 2}},
    ],
)
async def test_an_llms_usage_and_log_probs_reach_the_rerank(fields, monkeypatch) -> None:
    """Usage is read where LlamaIndex LLMs put it; the listed log-probs give the yes/no
    share (0.75 from Yes 0.6 and No 0.2); the context comes from the LLM's metadata."""
    from llama_index.core.base.llms.types import LogProb

    from rankwise.backends.llamaindex import LlamaIndexBackend

    listed = [
        LogProb(token="Yes", logprob=math.log(0.6)),
        LogProb(token="No", logprob=math.log(0.2)),
    ]
    llm = _chat_llm(logprobs=[listed], **fields)
    backend = LlamaIndexBackend(llm, logprobs=True)
    assert backend.capabilities.max_context == 2048
    ranked = await Reranker("pointwise", backend).arerank("q", ["a passage"])
    assert ranked.items[0].score == pytest.approx(0.75)
    assert (ranked.usage.prompt_tokens, ranked.usage.completion_tokens) == (11, 2)
    monkeypatch.setattr(Settings, "_llm", llm)
    assert LlamaIndexBackend().llm is llm  # no LLM given: Settings.llm


def _tuned_llm(temperature: float, api_key: str = "k"):
    """A user-defined LlamaIndex LLM with settings, as LLM integrations declare them; it
    answers one ranking and records the temperature each call ran at."""
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse
    from llama_index.core.llms import CustomLLM, LLMMetadata

    class TunedLLM(CustomLLM):
        temperature: float = 0.0
        api_key: str = ""
        calls: int = 0

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="tuned", context_window=2048, is_chat_model=True)

        async def achat(self, messages, **kwargs) -> ChatResponse:
            self.calls += 1
            return ChatResponse(message=ChatMessage(role="assistant", content="[2] > [1]"))

        def complete(self, prompt: str, formatted: bool = False, **kwargs):
            raise NotImplementedError

        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
            raise NotImplementedError

    return TunedLLM(temperature=temperature, api_key=api_key)


async def test_the_cache_keeps_apart_llms_of_one_name_with_other_settings(tmp_path) -> None:
    """The key held the LLM's model name only, so the same LLM at another temperature read
    the first one's answers as its own."""
    from rankwise.backends.llamaindex import LlamaIndexBackend

    cache = tmp_path / "cache.sqlite"
    documents = ["fleas live a year", "concrete"]
    cold, warm, cold_again = _tuned_llm(0.0), _tuned_llm(0.9), _tuned_llm(0.0)
    for llm in (cold, warm, cold_again):
        ranked = await Reranker("listwise", llm, cache=cache).arerank("q", documents)
        assert ranked.ids == ["1", "0"]
    assert (cold.calls, warm.calls, cold_again.calls) == (1, 1, 0)
    identities = {
        LlamaIndexBackend(llm).cache_identity for llm in (_tuned_llm(0.0), _tuned_llm(0.0, "new"))
    }
    assert len(identities) == 1  # a new API key keeps the answers
    assert '"new"' not in identities.pop()


@pytest.mark.parametrize(
    ("field", "secret"),
    [
        ("api_key", True),
        ("token", True),
        ("hf_token", True),
        ("client_secret", True),
        ("password", True),
        ("max_tokens", False),
        ("temperature", False),
        ("api_base", False),
        ("num_output", False),
    ],
)
def test_the_cache_key_leaves_out_the_fields_that_hold_credentials(field, secret) -> None:
    from rankwise.backends.framework import names_a_secret

    assert names_a_secret(field) is secret


@pytest.mark.parametrize("min_quality", [-10.0, 10.0])
async def test_the_postprocessor_abstains_with_a_fitted_calibrator(
    index, local_backend, min_quality
) -> None:
    """The postprocessor's ``abstain`` field took only an Abstention rule: a fitted
    Calibrator, which ``Reranker`` takes, was refused with a pydantic ValidationError."""
    vector_index, query = index
    calibrator = fitted_calibrator(min_quality)
    post = RankwiseRerank(
        method="pointwise-qlm", backend=local_backend, top_n=2, abstain=calibrator
    )
    assert post.reranker.abstain is calibrator
    got = await RankwiseRetriever(vector_index.as_retriever(similarity_top_k=4), post).aretrieve(
        query
    )
    ranked = post.last_result
    assert ranked.confidence == pytest.approx(calibrator.predict(ranked.judged_scores))
    assert ranked.abstained is (min_quality > 0)
    assert [n.node.node_id for n in got] == ([] if ranked.abstained else ranked.ids[:2])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"top_n": -1}, "top_n must be >= 0"),
        ({"top_n": 2.5}, "top_n must be a whole number"),
        ({"query": "  "}, "query is empty"),
    ],
)
async def test_the_tools_refuse_bad_arguments_before_retrieving_or_calling_the_llm(
    arguments, message
) -> None:
    """An agent's bad argument is refused before the retriever or the LLM is paid for."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    class RecordingRetriever(BaseRetriever):
        def __init__(self) -> None:
            super().__init__()
            self.queries: list[str] = []

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            self.queries.append(query_bundle.query_str)
            return [NodeWithScore(node=TextNode(text=f"passage {i}"), score=1.0) for i in range(3)]

    llm = _recording_llm(False)
    post = RankwiseRerank(method="listwise", llm=llm)
    retriever = RecordingRetriever()
    search = rankwise_function_tool(post, retriever=retriever)
    rerank = rankwise_function_tool(post)
    call = {"query": "what is a flea", "top_n": 2} | arguments
    with pytest.raises(InputError, match=message):
        await search.acall(**call)
    with pytest.raises(InputError, match=message):
        rerank.call(passages=["passage 0", "passage 1", "passage 2"], **call)
    assert retriever.queries == [] and llm.calls == []
    good = await search.acall(query="what is a flea", top_n=2)
    assert len(good.raw_output["results"]) == 2 and retriever.queries and len(llm.calls) == 1


def test_the_retriever_refuses_parts_of_the_wrong_kind_when_built(index, local_backend) -> None:
    """Each was taken, then failed at the first retrieval with an AttributeError ("'str'
    object has no attribute 'reranker'") or a TypeError."""
    vector_index, _ = index
    base = vector_index.as_retriever(similarity_top_k=4)
    post = RankwiseRerank(method="pointwise-qlm", backend=local_backend)
    with pytest.raises(InputError, match="reranker must be a RankwiseRerank postprocessor"):
        RankwiseRetriever(base, "pointwise-qlm")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="retriever must be a LlamaIndex retriever"):
        RankwiseRetriever(["a passage"], post)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="rewrite must be a QueryRewriter, a function or None"):
        RankwiseRetriever(base, post, rewrite="multi_query")  # type: ignore[arg-type]


def test_the_tool_refuses_parts_of_the_wrong_kind_when_built(index, local_backend) -> None:
    """Both were taken; the agent's first call then failed with an AttributeError."""
    vector_index, _ = index
    post = RankwiseRerank(method="pointwise-qlm", backend=local_backend)
    with pytest.raises(InputError, match="reranker must be a RankwiseRerank postprocessor"):
        rankwise_function_tool("pointwise-qlm")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="retriever must be a LlamaIndex retriever"):
        rankwise_function_tool(post, retriever=vector_index)  # type: ignore[arg-type]
