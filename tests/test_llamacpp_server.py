"""Integration: a real llama.cpp server (llama-cpp-python) on 127.0.0.1 serving the same GGUF."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator

import pytest

from rankwise import OpenAIBackend, Reranker
from rankwise.cli import main
from rankwise.llamacpp import serve_gguf
from tests.conftest import DL19

pytestmark = pytest.mark.server


def _require_server() -> None:
    """Skip without llama-cpp-python's server, or fail where the run requires it."""
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("RANKWISE_REQUIRE_SERVER"):
            pytest.fail("llama-cpp-python[server] is not installed; run ./run setup")
        pytest.skip("llama-cpp-python[server] is not installed")


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    _require_server()
    with serve_gguf() as base_url:
        yield base_url


async def test_pointwise_through_the_real_server(llama_server, dl19, local_backend) -> None:
    record = dl19[0]
    docs = record.documents(8)
    backend = OpenAIBackend("smollm2", base_url=llama_server, top_logprobs=5, timeout=120)
    ranked = await Reranker("pointwise", backend).arerank(record.query, docs)
    await backend.aclose()
    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    assert ranked.usage.calls == 8
    assert ranked.usage.prompt_tokens > 8 * 50  # real usage from the server's responses
    assert ranked.trace.fallbacks == []  # the server returned Yes/No log-probs every time
    # The server runs the 4-bit GGUF, the local backend its dequantised weights: the scores
    # must still agree closely, document by document.
    local = await Reranker("pointwise", local_backend).arerank(record.query, docs)
    local_scores = {item.id: item.score for item in local.items}
    for item in ranked.items:
        assert abs(item.score - local_scores[item.id]) < 0.15, (item.id, item.score)


@pytest.mark.parametrize("method", ["pointwise", "first"])
async def test_streamed_logprobs_rank_as_whole_replies_do(llama_server, dl19, method) -> None:
    """The server sends the same log-probs in a stream (where it skips those of the prompt),
    but no usage: completion tokens are counted from the stream, prompt tokens estimated."""
    record = dl19[1]
    docs = record.documents(5)
    runs = {}
    for stream in (False, True):
        backend = OpenAIBackend(
            "smollm2", base_url=llama_server, timeout=120, stream_logprobs=stream
        )
        runs[stream] = await Reranker(method, backend).arerank(record.query, docs)
        await backend.aclose()
    whole, streamed = runs[False], runs[True]
    assert streamed.ids == whole.ids
    assert sorted(streamed.ids) == sorted(d["id"] for d in docs)
    assert [i.score for i in streamed.items] == pytest.approx(
        [i.score for i in whole.items], abs=1e-3
    )
    assert len(streamed.trace.fallbacks) == len(whole.trace.fallbacks)
    assert streamed.usage.calls == whole.usage.calls
    assert streamed.usage.completion_tokens == whole.usage.completion_tokens
    assert 0.5 < streamed.usage.prompt_tokens / whole.usage.prompt_tokens < 2


async def test_prompts_fit_the_servers_context_when_told_or_refused(llama_server, dl19) -> None:
    """Twenty passages of 300 words, past the server's 4,096-token context: fitted to the
    default max_context (8,192), the server refuses the prompt and states its context, which
    the backend learns (the rerank failed with ContextOverflowError); fitted to a
    max_context below the server's, the window runs at once."""
    record = dl19[2]
    docs = [{**d, "text": " ".join([d["text"]] * 6)} for d in record.documents(20)]
    too_big = OpenAIBackend("smollm2", base_url=llama_server, timeout=120)
    await assert_learns_the_servers_context(too_big, record)
    await too_big.aclose()
    fitted = OpenAIBackend("smollm2", base_url=llama_server, timeout=120, max_context=3000)
    ranked = await Reranker("listwise", fitted).arerank(record.query, docs)
    await fitted.aclose()
    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    assert [event.kind for event in ranked.trace.events].count("truncation") == 1
    assert ranked.usage.calls == 1
    assert 2000 < ranked.usage.prompt_tokens <= 4096  # the server's own count


def test_cli_eval_against_the_server(llama_server, tmp_path) -> None:
    report_path = tmp_path / "r.json"
    code = main(
        [
            "eval",
            "--data",
            str(DL19 / "bm25-top100.jsonl"),
            "--qrels",
            str(DL19 / "qrels.txt"),
            "--method",
            "pointwise",
            "--depth",
            "5",
            "--queries",
            "2",
            "--backend",
            "openai",
            "--model",
            "smollm2",
            "--base-url",
            llama_server,
            "--timeout",
            "120",
            "--report",
            str(report_path),
        ]
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["backend"] == "openai" and report["calls"] == 10
    assert report["prompt_tokens"] > 0 and report["completion_tokens"] > 0


async def test_langchain_chat_model_drives_pointwise(llama_server, dl19) -> None:
    from langchain_openai import ChatOpenAI

    from rankwise import CapabilityError
    from rankwise.backends.langchain import LangChainBackend

    record = dl19[2]
    docs = record.documents(5)
    chat = ChatOpenAI(model="smollm2", base_url=llama_server, api_key="none", temperature=0)
    with_logprobs = LangChainBackend(chat, logprobs=True)
    ranked = await Reranker("pointwise", with_logprobs).arerank(record.query, docs)
    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    assert ranked.trace.fallbacks == [] and ranked.usage.prompt_tokens > 0
    direct = OpenAIBackend("smollm2", base_url=llama_server, timeout=120)
    reference = await Reranker("pointwise", direct).arerank(record.query, docs)
    await direct.aclose()
    reference_scores = {i.id: i.score for i in reference.items}
    # Same server, same prompts: the same probabilities, up to the server reusing the key/value
    # cache of whichever prompt it ran before (concurrent calls arrive in any order), which
    # moved a score by 0.024 once. Swapped or unnormalised labels would move them far more.
    for item in ranked.items:
        assert item.score == pytest.approx(reference_scores[item.id], abs=0.05)

    without = LangChainBackend(chat)
    with pytest.raises(CapabilityError, match="logprobs"):
        Reranker("pointwise", without)
    listed = await Reranker("listwise-full", without).arerank(record.query, docs)
    assert sorted(listed.ids) == sorted(d["id"] for d in docs) and listed.usage.calls == 1
    # The server refuses a prompt past its 4096-token context, and says so: the backend
    # learns it, and the rerank runs again with prompts fitted to it. (Here, not in a test
    # of its own: ChatOpenAI keeps one HTTP client per base URL, bound to the event loop of
    # the test that first used it.)
    await assert_learns_the_servers_context(without, record)


async def assert_learns_the_servers_context(backend, record) -> None:
    """A listwise rerank of 20 passages, each six times over (about 12,000 tokens), through
    ``backend`` to the server, whose 4096-token context is shorter than the 8192 tokens that
    prompts are fitted to by default, ranks, where it failed with ContextOverflowError; the
    next rerank is fitted from the start."""
    long_docs = [{**d, "text": " ".join([d["text"]] * 6)} for d in record.documents(20)]
    ranked = await Reranker("listwise", backend).arerank(record.query, long_docs)
    assert sorted(ranked.ids) == sorted(d["id"] for d in long_docs)
    learned = backend.capabilities.max_context
    assert learned < 4096
    (retry,) = [event for event in ranked.trace.events if event.kind == "retry"]
    assert f"again with them fitted to {learned}" in retry.message
    assert "maximum context length is 4096 tokens" in retry.data["refusal"]
    again = await Reranker("listwise", backend).arerank(record.query, long_docs)
    assert again.trace.count("retry") == 0 and sorted(again.ids) == sorted(ranked.ids)


async def test_llamaindex_llm_drives_a_generation_method(llama_server, dl19) -> None:
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback
    from openai import OpenAI

    from rankwise.backends.llamaindex import LlamaIndexBackend

    class ServerLLM(CustomLLM):
        """A user-defined LlamaIndex LLM calling the llama.cpp server."""

        base_url: str

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="smollm2", context_window=4096)

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
            client = OpenAI(base_url=self.base_url, api_key="none")
            reply = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=kwargs.get("max_tokens", 64),
                temperature=0,
            )
            return CompletionResponse(text=reply.choices[0].message.content or "")

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
            yield self.complete(prompt, **kwargs)

    record = dl19[2]
    docs = record.documents(4)
    backend = LlamaIndexBackend(ServerLLM(base_url=llama_server), max_tokens_kwarg="max_tokens")
    ranked = await Reranker("setwise", backend).arerank(record.query, docs)
    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    assert ranked.usage.calls >= 1


def test_a_model_path_under_home_is_served(tmp_path, monkeypatch) -> None:
    """``serve_gguf("~/models/x.gguf")`` said there was no GGUF file at that path: the
    ``~`` was not expanded, as the local backend expands it."""
    import urllib.request

    from rankwise.backends.model_files import default_gguf_path

    _require_server()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2.gguf").symlink_to(default_gguf_path())
    monkeypatch.setenv("HOME", str(tmp_path))
    with serve_gguf("~/models/smollm2.gguf", startup_timeout=120) as base_url:
        with urllib.request.urlopen(f"{base_url}/models", timeout=10) as response:
            served = json.load(response)["data"][0]["id"]
    assert served.endswith("smollm2.gguf")
