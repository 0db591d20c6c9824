"""OpenAIBackend over real HTTP against a loopback stub: scoring, retries and failures."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import os
import re
import time

import httpx
import pytest

from rankwise import (
    BackendError,
    BackendUnavailableError,
    ContextOverflowError,
    InputError,
    OpenAIBackend,
    Reranker,
)
from rankwise.backends.refusals import stated_context
from rankwise.backends.tokens import TokenCounter
from tests.oracle import oracle, relevance_docs
from tests.stub_server import (
    Reply,
    StubServer,
    chunk,
    completion,
    sse,
    streamed,
    streamed_when_asked,
    user_text,
    yes_no,
)

DOCS = [
    {"id": "low", "text": "relevance 0.10"},
    {"id": "high", "text": "relevance 0.90"},
    {"id": "mid", "text": "relevance 0.50"},
]


def by_stated_relevance(request) -> Reply:
    value = float(re.search(r"relevance (\d\.\d+)", user_text(request)).group(1))
    return Reply(body=yes_no(value, prompt_tokens=20))


def backend_for(server: StubServer, **kwargs) -> OpenAIBackend:
    options = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 2.0}
    options.update(kwargs)
    return OpenAIBackend("stub", base_url=server.base_url, **options)


async def test_pointwise_reads_yes_no_logprobs(stub) -> None:
    stub.handler = by_stated_relevance
    ranked = await Reranker("pointwise", backend_for(stub)).arerank("q", DOCS)
    assert ranked.ids == ["high", "mid", "low"]
    assert [round(i.score, 3) for i in ranked.items] == [0.9, 0.5, 0.1]
    assert ranked.usage.calls == 3 and ranked.usage.prompt_tokens == 60
    assert ranked.usage.completion_tokens == 3
    sent = stub.requests[0]
    assert sent["max_tokens"] == 1 and sent["logprobs"] is True and sent["temperature"] == 0.0


streamed_by_stated_relevance = streamed_when_asked(by_stated_relevance)


async def test_streamed_logprobs_score_as_a_whole_reply_does(stub) -> None:
    stub.handler = streamed_by_stated_relevance
    whole = await Reranker("pointwise", backend_for(stub)).arerank("q", DOCS)
    assert not any(request.get("stream") for request in stub.requests)
    stub.requests.clear()
    backend = backend_for(stub, stream_logprobs=True)
    ranked = await Reranker("pointwise", backend).arerank("q", DOCS)
    assert ranked.ids == whole.ids == ["high", "mid", "low"]
    assert [i.score for i in ranked.items] == pytest.approx([i.score for i in whole.items])
    assert ranked.trace.fallbacks == []
    # Usage from the stream's last chunk, as the server reported it.
    assert ranked.usage.calls == 3 and ranked.usage.prompt_tokens == 60
    assert ranked.usage.completion_tokens == 3
    assert len(stub.requests) == 3
    for sent in stub.requests:
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert sent["logprobs"] is True and sent["max_tokens"] == 1


async def test_a_stream_without_usage_counts_its_tokens_and_estimates_the_prompt(stub) -> None:
    stub.handler = lambda request: streamed(by_stated_relevance(request).body, usage=False)
    reranker = Reranker("pointwise", backend_for(stub, stream_logprobs=True))
    ranked = await reranker.arerank("q", DOCS)
    assert ranked.ids == ["high", "mid", "low"]
    assert ranked.usage.completion_tokens == 3  # one streamed token per call
    predicted = await reranker.aestimate("q", DOCS)  # what --dry-run says
    assert ranked.usage.prompt_tokens == predicted.prompt_tokens > 3 * 10


def usage_only_chunk() -> dict:
    return chunk([], usage={"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5})


def unfinished_stream() -> list[dict]:
    """How llama-cpp-python's server ends a stream that another request interrupted: the
    first chunks, then ``[DONE]``, and no chunk with a finish_reason."""
    return [chunk([{"index": 0, "delta": {"role": "assistant"}}])]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (lambda: sse([usage_only_chunk()]), "streamed no choices"),
        (lambda: sse([b'{"choices": [']), "failed after retries"),
        (lambda: sse(unfinished_stream()), "--interrupt_requests False"),
    ],
    ids=["no-choices", "bad-json", "cut-short"],
)
async def test_a_broken_stream_is_retried_then_a_typed_error(stub, broken, message) -> None:
    stub.handler = lambda request: broken()
    backend = backend_for(stub, stream_logprobs=True, max_retries=2)
    with pytest.raises(BackendError, match=message):
        await Reranker("pointwise", backend).arerank("q", DOCS[:1])
    assert len(stub.requests) == 3
    answers = iter([broken()])
    stub.handler = lambda request: next(answers, None) or streamed_by_stated_relevance(request)
    ranked = await Reranker("pointwise", backend).arerank("q", DOCS[1:2])
    assert ranked.usage.retries == 1 and ranked.items[0].score == pytest.approx(0.9)


async def test_a_server_that_refuses_streams_is_told_to_turn_streaming_off(stub) -> None:
    refusal = {"error": {"message": "Unrecognized request argument supplied: stream_options"}}
    stub.handler = lambda request: Reply(status=400, body=refusal)
    backend = backend_for(stub, stream_logprobs=True)
    with pytest.raises(BackendError, match=r"stream_logprobs=False\)$"):
        await Reranker("pointwise", backend).arerank("q", DOCS[:1])
    assert len(stub.requests) == 1  # a 400 is not retried


def test_stream_logprobs_must_be_a_bool() -> None:
    with pytest.raises(InputError, match="stream_logprobs must be True or False"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", stream_logprobs="yes")  # type: ignore[arg-type]


async def test_429_with_retry_after_is_retried_and_counted(stub) -> None:
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            return Reply(
                status=429, body={"error": {"message": "slow down"}}, headers={"retry-after": "0.2"}
            )
        return by_stated_relevance(request)

    stub.handler = handler
    started = time.perf_counter()
    ranked = await Reranker("pointwise", backend_for(stub, max_backoff=1.0)).arerank("q", DOCS[:2])
    assert time.perf_counter() - started >= 0.2  # Retry-After honoured
    assert ranked.usage.retries == 1 and ranked.usage.calls == 2
    assert ranked.ids == ["high", "low"]


@pytest.mark.parametrize(
    ("header", "least_wait"),
    [
        ("retry-after-ms", 1.5),  # OpenAI's own header, in milliseconds
        ("http-date", 1.0),  # RFC 9110's other form: a date about 2 s ahead (1 s resolution)
    ],
)
async def test_retry_after_in_milliseconds_or_as_a_date_is_honoured(
    stub, header, least_wait
) -> None:
    """Both forms were ignored, so the retry came after the short computed backoff."""
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] > 1:
            return by_stated_relevance(request)
        if header == "retry-after-ms":
            headers = {"retry-after-ms": "1500"}
        else:
            ahead = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
            headers = {"retry-after": email.utils.format_datetime(ahead, usegmt=True)}
        return Reply(status=429, body={"error": {"message": "slow down"}}, headers=headers)

    stub.handler = handler
    started = time.perf_counter()
    backend = backend_for(stub, backoff=0.01, max_backoff=5.0)
    ranked = await Reranker("pointwise", backend).arerank("q", DOCS[:2])
    assert time.perf_counter() - started >= least_wait
    assert ranked.usage.retries == 1 and ranked.ids == ["high", "low"]


async def test_a_retry_after_longer_than_max_backoff_waits_max_backoff(stub) -> None:
    """A server that asks for an hour gets ``max_backoff``: the retry is not parked for an
    hour inside a rerank (the wait_for fails the test if it is)."""
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            headers = {"retry-after": "3600"}
            return Reply(status=429, body={"error": {"message": "slow down"}}, headers=headers)
        return by_stated_relevance(request)

    stub.handler = handler
    started = time.perf_counter()
    reranker = Reranker("pointwise", backend_for(stub, backoff=0.01, max_backoff=0.3))
    ranked = await asyncio.wait_for(reranker.arerank("q", DOCS[:2]), timeout=30)
    assert time.perf_counter() - started >= 0.3
    assert ranked.usage.retries == 1 and ranked.ids == ["high", "low"]


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(stub, status) -> None:
    failures = {"left": 2}

    def handler(request):
        if failures["left"]:
            failures["left"] -= 1
            return Reply(status=status, body={"error": {"message": "boom"}})
        return by_stated_relevance(request)

    stub.handler = handler
    ranked = await Reranker("pointwise", backend_for(stub, concurrency=1)).arerank("q", DOCS[:2])
    assert ranked.usage.retries == 2
    assert ranked.ids == ["high", "low"]


async def test_malformed_json_is_retried_then_a_typed_error(stub) -> None:
    def handler(request):
        slow = "0.90" in user_text(request)  # the sibling call: slow, and would be retried too
        return Reply(body=b'{"choices": [', delay=0.5 if slow else 0.0)

    stub.handler = handler
    backend = backend_for(stub, max_retries=2)
    with pytest.raises(BackendError, match="failed after retries"):
        await Reranker("pointwise", backend).arerank("q", DOCS[:2])
    await asyncio.sleep(1.0)
    # 3 tries of the failing document, 1 of the slow one, which was cancelled, not retried.
    assert len(stub.requests) == 4


async def test_a_refused_request_is_not_reported_as_retried(stub) -> None:
    """A 400 is not retried, but the error said 'failed after retries'; a server without
    log-probs (some vLLM and Ollama builds refuse the parameter) got no hint of the fix."""

    def handler(request):
        if request.get("logprobs"):
            return Reply(status=400, body={"error": {"message": "logprobs is not supported"}})
        return Reply(status=403, body={"error": {"message": "model not allowed"}})

    stub.handler = handler
    with pytest.raises(BackendError, match=r"refused the request .*logprobs=False") as raised:
        await Reranker("pointwise", backend_for(stub)).arerank("q", DOCS[:2])
    assert "after retries" not in str(raised.value)
    # The refusal cancels the sibling call, which may be cut off mid-send (an empty body).
    asked = [user_text(request) for request in stub.requests if request]
    assert asked and len(asked) == len(set(asked))  # no document asked twice: no retry
    plain = backend_for(stub, logprobs=False)
    with pytest.raises(BackendError, match=r"failed: PermissionDeniedError") as raised:
        await Reranker("listwise", plain).arerank("q", DOCS[:2])
    assert "after retries" not in str(raised.value)


@pytest.mark.parametrize(
    "error",
    [
        {  # OpenAI's
            "message": "This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
        {  # llama.cpp's server
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
        },
        {  # vLLM's
            "message": "The decoder prompt (length 9000) is longer than the maximum model "
            "length of 8192. Make sure that `max_model_len` is no smaller than the number of "
            "text tokens.",
            "type": "BadRequestError",
        },
    ],
)
async def test_a_prompt_refused_as_too_long_says_to_set_max_context(stub, error) -> None:
    """A server that refused a prompt as longer than its context gave a generic 'refused the
    request', with no word of max_context, the option that fits prompts to the context."""
    stub.handler = lambda request: Reply(status=400, body={"error": error})
    with pytest.raises(ContextOverflowError, match=r"max_context=3000 tokens.*--max-context N"):
        await Reranker("listwise", backend_for(stub, max_context=3000)).arerank("q", DOCS)
    assert len(stub.requests) == 1  # not retried


SERVER_CONTEXT = 1500


def _refusal_as(server: str, prompt: int, completion: int) -> dict:
    """The error body of ``server``'s refusal of a prompt of ``prompt`` tokens."""
    if server == "llama.cpp":  # llama.cpp's server says it in fields of its own
        return {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": prompt,
            "n_ctx": SERVER_CONTEXT,
        }
    if server == "vllm":
        return {
            "message": f"The decoder prompt (length {prompt}) is longer than the maximum "
            f"model length of {SERVER_CONTEXT}. Make sure that `max_model_len` is no smaller "
            "than the number of text tokens."
        }
    return {  # OpenAI's message, which vLLM and llama-cpp-python send too
        "message": f"This model's maximum context length is {SERVER_CONTEXT} tokens. However, "
        f"you requested {prompt + completion} tokens ({prompt} in the messages, {completion} "
        "in the completion). Please reduce the length of the messages or completion.",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }


@pytest.mark.parametrize("server", ["openai", "llama.cpp", "vllm"])
async def test_a_context_the_server_states_is_learned_and_the_rerank_fits_it(
    stub, caplog, server
) -> None:
    """A server whose model has a shorter context than the 8192 tokens that API prompts are
    fitted to by default (llama-cpp-python's server runs 2048 unless told) refused the first
    window, and the rerank failed with advice to pass max_context. The refusal states the
    context: the backend now fits prompts to it, scaled to the server's count of the refused
    prompt (its tokenizer counts 30% more tokens here), and the rerank runs again."""
    counter = TokenCounter()
    filler = " ".join(["word"] * 150)
    docs = [{**d, "text": f"{d['text']} {filler}"} for d in relevance_docs([0.1, 0.9, 0.5] * 4)]

    def small_context(request) -> Reply:
        prompt = sum(round(1.3 * counter.count(m["content"])) + 4 for m in request["messages"])
        if prompt + request["max_tokens"] > SERVER_CONTEXT:
            return Reply(status=400, body={"error": _refusal_as(server, prompt, 128)})
        return oracle(request)

    stub.handler = small_context
    backend = backend_for(stub)
    with caplog.at_level("WARNING", logger="rankwise.backends"):
        ranked = await Reranker("listwise", backend).arerank("q", docs)
    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    assert ranked.ids[:4] == ["d1", "d4", "d7", "d10"]
    (retry,) = [event for event in ranked.trace.events if event.kind == "retry"]
    learned = backend.capabilities.max_context
    assert f"fitted to 8192 tokens, and the rerank ran again with them fitted to {learned}" in (
        retry.message
    )
    assert learned < SERVER_CONTEXT * 0.85  # scaled down by the server's count
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "rankwise.backends"]
    assert f"pass OpenAIBackend(..., max_context={learned})" in warning
    stub.requests.clear()
    again = await Reranker("listwise", backend).arerank("q", docs)  # fitted from the start
    assert again.ids == ranked.ids and again.trace.count("retry") == 0
    assert len(stub.requests) == 1


def test_stated_context_reads_no_length_where_none_is_stated() -> None:
    assert stated_context(ValueError("maximum context length exceeded")) is None
    assert stated_context(ValueError("exceed_context_size")) is None


@pytest.mark.parametrize("url", ["127.0.0.1:8080/v1", "localhost:11434", "ftp://host/v1", ""])
def test_a_base_url_without_scheme_or_host_is_refused_when_built(url) -> None:
    """'127.0.0.1:8080/v1' was taken, then every call failed as 'could not reach'."""
    with pytest.raises(InputError, match="base_url must be an http:// or https:// URL"):
        OpenAIBackend("m", base_url=url)


async def test_a_404_from_a_base_url_without_v1_says_where_servers_listen(stub) -> None:
    stub.handler = lambda request: Reply(status=404, body={"error": {"message": "not found"}})
    bare = OpenAIBackend("m", base_url=stub.base_url.removesuffix("/v1"), max_retries=0)
    with pytest.raises(BackendError, match=r"answered 404.*serve under /v1"):
        await Reranker("listwise", bare).arerank("q", DOCS[:2])
    with pytest.raises(BackendError, match="answered 404") as raised:
        await Reranker("listwise", backend_for(stub, max_retries=0)).arerank("q", DOCS[:2])
    assert "/v1)" not in str(raised.value)  # the path is right: the model name is the doubt


async def test_empty_choices_is_retried(stub) -> None:
    answers = iter([Reply(body={"choices": []})])
    stub.handler = lambda request: next(answers, None) or by_stated_relevance(request)
    ranked = await Reranker("pointwise", backend_for(stub, concurrency=1)).arerank("q", DOCS[:2])
    assert ranked.usage.retries == 1


async def test_a_timed_out_request_is_retried(stub) -> None:
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        return Reply(body=yes_no(0.9), delay=1.0 if calls["n"] == 1 else 0.0)

    stub.handler = handler
    backend = backend_for(stub, timeout=0.3, max_retries=1, concurrency=1)
    ranked = await Reranker("pointwise", backend).arerank("q", DOCS[:1])
    assert ranked.usage.retries == 1 and len(stub.requests) == 2
    assert ranked.items[0].score == pytest.approx(0.9)


async def test_timeout_then_unavailable(stub) -> None:
    stub.handler = lambda request: Reply(body=yes_no(0.5), delay=1.0)
    backend = backend_for(stub, timeout=0.2, max_retries=1)
    with pytest.raises(BackendUnavailableError, match="could not reach"):
        await Reranker("pointwise", backend).arerank("q", DOCS[:2])


async def test_missing_logprobs_fall_back_to_the_text_and_are_traced(stub) -> None:
    stub.handler = lambda request: Reply(
        body=completion("Yes" if "0.90" in user_text(request) else "No")
    )
    ranked = await Reranker("pointwise", backend_for(stub)).arerank("q", DOCS)
    assert ranked.ids[0] == "high"
    assert sorted(ranked.ids) == ["high", "low", "mid"]
    assert len(ranked.trace.fallbacks) == 3


async def test_unreachable_base_url_is_a_clear_error() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff=0.01)
    with pytest.raises(BackendUnavailableError, match="base_url"):
        await Reranker("pointwise", backend).arerank("q", ["a", "b"])


async def test_concurrency_is_bounded_and_real(stub) -> None:
    stub.handler = lambda request: Reply(body=yes_no(0.5), delay=0.2)
    backend = backend_for(stub, concurrency=4)
    docs = [f"doc {i}" for i in range(12)]
    ranked = await Reranker("pointwise", backend).arerank("q", docs)
    assert stub.max_in_flight == 4  # four at once, never more
    assert len(ranked) == 12


async def test_labels_with_leading_space_count_as_the_label(stub) -> None:
    stub.handler = lambda request: Reply(
        body=completion(" Yes", top_logprobs={" Yes": -0.2, "Yes": -2.0, " No": -3.0})
    )
    ranked = await Reranker("pointwise", backend_for(stub), score_threshold=0.0).arerank("q", ["a"])
    import math

    p_yes = math.exp(-0.2) + math.exp(-2.0)
    assert math.isclose(ranked.items[0].score, p_yes / (p_yes + math.exp(-3.0)), rel_tol=1e-6)


async def test_a_label_the_api_all_but_rules_out_scores_without_overflow(stub) -> None:
    """APIs report -9999 for a label they all but rule out; P(Yes) computed as
    1 / (1 + exp(no - yes)) raised OverflowError and the whole rerank failed."""
    answers = {
        "ruled out": {"No": -0.01, "Yes": -9999.0},
        "certain": {"Yes": -0.01, "No": -9999.0},
        "even": {"Yes": -0.7, "No": -0.7},
    }
    stub.handler = lambda request: Reply(
        body=completion(
            "x", top_logprobs=answers[re.search(r"Passage: (.*)", user_text(request))[1]]
        )
    )
    docs = [{"id": key, "text": key} for key in ("ruled out", "certain", "even")]
    ranked = await Reranker("pointwise", backend_for(stub)).arerank("q", docs)
    assert ranked.ids == ["certain", "even", "ruled out"]
    assert [i.score for i in ranked.items] == [1.0, 0.5, 0.0]
    assert ranked.trace.fallbacks == []


def test_label_shares_stay_numbers_at_the_extremes() -> None:
    import math

    from rankwise.backends.framework import match_labels
    from rankwise.methods.pointwise import yes_share

    assert yes_share(-math.inf, -math.inf) == 0.5  # was NaN
    assert yes_share(-math.inf, -1.0) == 0.0 and yes_share(-1.0, -math.inf) == 1.0
    assert yes_share(-2000.0, 0.0) == 0.0 and yes_share(0.0, -2000.0) == 1.0
    assert math.isclose(yes_share(math.log(0.3), math.log(0.1)), 0.75)
    found = match_labels([("Yes", -math.inf), (" Yes", -math.inf), ("No", -1.0)], ["Yes", "No"])
    assert found == {"Yes": -math.inf, "No": -1.0}  # two spellings of -inf stay -inf, not NaN


async def test_one_backend_serves_the_sync_api_and_several_loops(stub) -> None:
    stub.handler = by_stated_relevance
    reranker = Reranker("pointwise", backend_for(stub))
    first = await reranker.arerank("q", DOCS)
    second = await asyncio.to_thread(reranker.rerank, "q", DOCS)
    assert first.ids == second.ids == ["high", "mid", "low"]


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_a_backend_used_under_asyncio_run_closes_its_connections_with_each_loop(stub) -> None:
    """An app that runs ``asyncio.run(reranker.arerank(...))`` per request kept each loop's
    client, and its connections, open: 8 more open files per request here, until the process
    ran out of file descriptors. Each loop's client now closes when the loop shuts down."""
    stub.handler = by_stated_relevance
    reranker = Reranker("pointwise", backend_for(stub))
    assert asyncio.run(reranker.arerank("q", DOCS)).ids == ["high", "mid", "low"]
    before = _open_files()
    for _ in range(10):
        assert asyncio.run(reranker.arerank("q", DOCS)).ids == ["high", "mid", "low"]
    assert _open_files() <= before + 2


def test_a_client_given_http_client_is_left_open_for_its_owner(stub) -> None:
    """``http_client`` is the caller's: the loop's shutdown does not close it."""
    stub.handler = by_stated_relevance
    http_client = httpx.AsyncClient()
    backend = backend_for(stub, client_kwargs={"http_client": http_client})
    loop = asyncio.new_event_loop()
    try:
        ranked = loop.run_until_complete(Reranker("pointwise", backend).arerank("q", DOCS))
        loop.run_until_complete(loop.shutdown_asyncgens())  # as asyncio.run does on return
        assert ranked.ids[0] == "high" and not http_client.is_closed
        loop.run_until_complete(http_client.aclose())
    finally:
        loop.close()


def _refusal(param: str, code: str, message: str) -> Reply:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return Reply(status=400, body={"error": error})


UNSUPPORTED_MAX_TOKENS = _refusal(
    "max_tokens",
    "unsupported_parameter",
    "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead.",
)
UNSUPPORTED_TEMPERATURE = _refusal(
    "temperature",
    "unsupported_value",
    "Unsupported value: 'temperature' does not support 0 with this model. Only the default "
    "(1) value is supported.",
)


def like_a_reasoning_model(request) -> Reply:
    """OpenAI's reasoning models (o-series, GPT-5): they refuse ``max_tokens`` and any
    temperature but 1, with these bodies, and otherwise answer (here, like the oracle)."""
    if "max_tokens" in request:
        return UNSUPPORTED_MAX_TOKENS
    if request.get("temperature", 1) != 1:
        return UNSUPPORTED_TEMPERATURE
    assert request["max_completion_tokens"] >= 1
    return oracle(request)


@pytest.mark.parametrize("method", ["listwise", "pointwise"])
async def test_a_model_that_refuses_max_tokens_and_temperature_is_sent_what_it_takes(
    stub, caplog, method
) -> None:
    """Every request to OpenAI's reasoning models failed with "Unsupported parameter:
    'max_tokens'", and there was no option to send another field. Now the refused fields
    are sent as the model asks. Listwise sends its windows one after another; pointwise
    sends every passage at once, so each refused request is sent again."""
    stub.handler = like_a_reasoning_model
    values = [0.3, 0.9, 0.1, 0.6, 0.5, 0.8, 0.2, 0.7] * 3
    docs = relevance_docs(values)
    backend = OpenAIBackend("reasoner", base_url=stub.base_url, backoff=0.01)
    options = {"window": 8, "step": 4} if method == "listwise" else {}
    with caplog.at_level("WARNING", logger="rankwise.backends.openai"):
        ranked = await Reranker(method, backend, **options).arerank("q", docs)
    found = [values[int(i[1:])] for i in ranked.ids]
    best = sorted(values, reverse=True)
    if method == "listwise":  # one pass of sliding windows puts the best `step` first
        found, best = found[:4], best[:4]
    assert found == best
    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    answered = [r for r in stub.requests if "max_completion_tokens" in r and "temperature" not in r]
    assert len(answered) >= ranked.usage.calls  # more if a connection failed under the load
    refused = len(stub.requests) - len(answered)
    assert ranked.usage.retries >= refused >= 2  # each refused request was sent again
    if method == "listwise":
        assert refused == 2  # one request learnt both; the later ones were sent right
    warnings = [r.getMessage() for r in caplog.records if r.name == "rankwise.backends.openai"]
    assert len(warnings) == 2
    assert "'max_tokens'" in warnings[0] and "max_completion_tokens instead" in warnings[0]
    assert "'temperature'" in warnings[1]


async def test_a_refusal_of_a_value_is_not_taken_for_an_unsupported_field(stub) -> None:
    """A limit too large for the model is refused with ``param: max_tokens`` too; sending
    it as ``max_completion_tokens`` would not help, so it fails at once, saying why."""
    stub.handler = lambda request: _refusal(
        "max_tokens", "invalid_value", "max_tokens is too large: 100000."
    )
    backend = OpenAIBackend("m", base_url=stub.base_url)
    with pytest.raises(BackendError, match="max_tokens is too large"):
        await Reranker("listwise", backend).arerank("q", relevance_docs([0.2, 0.8]))
    assert len(stub.requests) == 1 and "max_tokens" in stub.requests[0]


async def test_request_options_go_in_every_request_and_in_the_cache_key(stub, tmp_path) -> None:
    stub.handler = oracle
    docs = relevance_docs([0.2, 0.8, 0.5])
    thinking_off = {"chat_template_kwargs": {"enable_thinking": False}, "seed": 7}
    backend = OpenAIBackend("m", base_url=stub.base_url, request_options=thinking_off)
    cache = tmp_path / "cache.sqlite"
    first = await Reranker("pointwise", backend, cache=cache).arerank("q", docs)
    assert first.ids == ["d1", "d2", "d0"]
    assert len(stub.requests) == 3
    for request in stub.requests:
        assert request["chat_template_kwargs"] == {"enable_thinking": False}
        assert request["seed"] == 7 and request["max_tokens"] == 1 and request["logprobs"]
    plain = OpenAIBackend("m", base_url=stub.base_url)
    other = await Reranker("pointwise", plain, cache=cache).arerank("q", docs)
    assert other.usage.calls == 3 and other.usage.cache_hits == 0  # other answers
    again = OpenAIBackend("m", base_url=stub.base_url, request_options=dict(thinking_off))
    assert (await Reranker("pointwise", again, cache=cache).arerank("q", docs)).usage.calls == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_tokens": 5, "temperature": 0.7}, "max_tokens, temperature"),
        ({"messages": []}, "messages"),
        ({"extra_headers": {"x": "1"}}, "client_kwargs"),
        (["reasoning_effort"], "must map field names"),
        ({1: "x"}, "must map field names"),
    ],
)
def test_request_options_that_rankwise_sets_itself_are_refused(options, message) -> None:
    with pytest.raises(InputError, match=message):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", request_options=options)


async def test_a_server_that_refuses_a_field_it_was_not_sent_is_not_asked_forever(stub) -> None:
    """Each refused request is sent again once without the field it was refused for; a
    server that goes on naming that field fails the request, rather than looping."""
    stub.handler = lambda request: UNSUPPORTED_MAX_TOKENS
    backend = OpenAIBackend("m", base_url=stub.base_url, max_retries=0)
    with pytest.raises(BackendError, match="Unsupported parameter"):
        await asyncio.wait_for(
            Reranker("listwise", backend).arerank("q", relevance_docs([0.2, 0.8])), 10
        )
    assert ["max_tokens" in r for r in stub.requests] == [True, False]


@pytest.mark.parametrize("given", ["max_retries", "timeout", "api_key", "base_url"])
def test_client_kwargs_that_the_backend_sets_itself_are_refused(given) -> None:
    """They failed at the first request, with the client's TypeError "got multiple values
    for keyword argument", after the rerank had started."""
    with pytest.raises(InputError, match=f"client_kwargs sets {given}.*OpenAIBackend"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", client_kwargs={given: 1})


@pytest.mark.parametrize("stream", [False, True])
async def test_a_server_that_ignores_the_request_for_log_probs_is_warned_about(
    stub, caplog, stream
) -> None:
    """Some OpenAI-compatible servers answer a request for log-probs without them (LM
    Studio, older Ollama). Each yes/no judgement then fell back to the answer's text, and
    only the trace said so, one passage at a time: the ranking was that of a model that
    can say only 0.5 or 0, with no word of why or of the option that fixes it."""
    stub.handler = streamed_when_asked(lambda request: Reply(body=completion("Yes")))
    backend = backend_for(stub, stream_logprobs=stream)
    with caplog.at_level("WARNING", logger="rankwise.backends.openai"):
        for _ in range(2):
            ranked = await Reranker("pointwise", backend).arerank("q", DOCS[:3])
            assert len(ranked.trace.fallbacks) == 3  # still scored from the text
    warnings = [r.getMessage() for r in caplog.records if r.name == "rankwise.backends.openai"]
    assert len(warnings) == 1  # once per backend
    assert "answered without log-probs" in warnings[0]
    assert "pass OpenAIBackend(..., logprobs=False)" in warnings[0]
    caplog.clear()
    labels_far_down = {"Maybe": -0.1, "Perhaps": -2.0}  # log-probs, without the labels
    stub.handler = streamed_when_asked(
        lambda request: Reply(body=completion("Maybe", top_logprobs=labels_far_down))
    )
    with caplog.at_level("WARNING", logger="rankwise.backends.openai"):
        ranked = await Reranker("pointwise", backend_for(stub, stream_logprobs=stream)).arerank(
            "q", DOCS[:3]
        )
    assert len(ranked.trace.fallbacks) == 3
    assert not [r for r in caplog.records if r.name == "rankwise.backends.openai"]
