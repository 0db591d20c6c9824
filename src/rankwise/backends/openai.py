"""Any OpenAI-compatible chat API (OpenAI, vLLM, llama.cpp, Ollama) via the async `openai` client.

Retries are done here, not by the SDK, so that each retry is counted in ``Usage.retries`` and
``Retry-After`` is honoured. Concurrency is bounded by a semaphore per event loop.

With ``stream_logprobs=True``, log-prob requests are streamed and their chunks put back
together. The answer is the same; llama-cpp-python's server computes log-probs for a streamed
request only at the generated tokens, where it computes them at every prompt position for a
request that is not streamed (``bench/server_logprobs.py`` measures the difference).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import logging
import os
import random
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
import openai

from rankwise._checks import check_flag, check_whole, checked_names, is_real
from rankwise._loops import PerLoop
from rankwise.backends.base import (
    API_CONCURRENCY,
    API_MAX_CONTEXT,
    API_TIMEOUT,
    Capabilities,
    ContinuationLogprobs,
    Generation,
    LabelLogprobs,
    MissingLogprobsWarning,
)
from rankwise.backends.framework import (
    MAX_TOP_LOGPROBS,
    PREFIX_TOKENS,
    check_concurrency,
    check_top_logprobs,
    read_labels,
)
from rankwise.backends.refusals import context_overflow, refused_as_too_long
from rankwise.backends.tokens import TokenCounter, estimate_chat_prompt_tokens
from rankwise.errors import (
    BackendError,
    BackendUnavailableError,
    CapabilityError,
    ContextOverflowError,
    InputError,
    RankwiseError,
)
from rankwise.prompts import Message

T = TypeVar("T")

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class MalformedResponseError(BackendError):
    """The server answered 200 but the body is not a usable completion."""


class _Resend(Exception):
    """The model refused a field that the request can be sent again without."""


@dataclass
class _Answer:
    """What a chat completion returned, whether it came in one body or in a stream."""

    text: str
    content: list[Any]  # one ChatCompletionTokenLogprob per generated token
    prompt_tokens: int
    completion_tokens: int
    has_logprobs: bool = False
    """Whether the server sent log-probs at all (an object, even one with no entries)."""


@dataclass
class _LoopResources:
    client: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore
    closer: AsyncGenerator[None, None] | None = None


class OpenAIBackend:
    """A chat-completions endpoint.

    Args:
        model: model name sent with each request.
        base_url: e.g. ``http://127.0.0.1:8080/v1`` for a llama.cpp server; ``None`` for OpenAI.
        api_key: defaults to ``OPENAI_API_KEY``; a placeholder is used for non-OpenAI URLs.
        concurrency: most requests in flight at once.
        timeout: seconds for one request.
        max_retries: retries after the first attempt, on 429, 5xx, timeouts and bad bodies.
        backoff: first backoff in seconds, doubled each retry (with jitter), capped at
            ``max_backoff``. A ``Retry-After`` header wins when present.
        logprobs: whether the server returns log-probs (llama.cpp, vLLM and OpenAI do).
        top_logprobs: how many alternatives to ask for (OpenAI allows up to 20).
        stream_logprobs: stream the requests that ask for log-probs. The log-probs are the
            same; the server may spend less on them. llama-cpp-python's server computes
            log-probs at every prompt position for a request that is not streamed (about a
            fifth of a FIRST request on two CPU cores), and only at the generated tokens for a
            streamed one. Usage is asked for in the stream (``stream_options``); where the
            server sends none (llama-cpp-python's), completion tokens are counted from the
            stream and prompt tokens estimated as ``--dry-run`` estimates them. A stream that
            ends without a ``finish_reason`` is retried: llama-cpp-python's server cuts a
            stream short when another request arrives, unless it runs with
            ``--interrupt_requests False`` (as :func:`rankwise.llamacpp.serve_gguf` starts it).
        max_context: the served model's context length in tokens: window methods cut
            passages so that their prompts fit it. Tokens are counted with tiktoken's
            ``o200k_base`` (OpenAI's models), which may count fewer than another model's
            tokenizer (SmolLM2's counts about twice as many for Chinese), so for a self-hosted
            model set it somewhat below the server's context. A prompt the server refuses as
            too long raises :class:`~rankwise.errors.ContextOverflowError`.
        request_options: more fields for the body of every request, such as
            ``{"reasoning_effort": "minimal"}`` for OpenAI's reasoning models, or
            ``{"chat_template_kwargs": {"enable_thinking": False}}`` for Qwen3 on vLLM. They
            are part of the response cache's key. Fields that rankwise sets itself (the
            model, messages, token limit, temperature, log-probs, streaming) are refused.
        client_kwargs: more arguments for ``openai.AsyncOpenAI`` (``default_headers``,
            ``default_query``, ``http_client``, ...); the key, URL, timeout and retries are
            this backend's own options.

    A model that refuses ``max_tokens`` and asks for ``max_completion_tokens`` (OpenAI's
    reasoning models) is sent that instead, and one that refuses ``temperature=0`` is sent
    none, from the refusal on, with a warning. A reasoning model spends that limit on its
    thoughts too: with a low ``reasoning_effort`` in ``request_options`` its thoughts stay
    short enough to leave room for the answer.
    """

    kind = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = API_CONCURRENCY,
        timeout: float = API_TIMEOUT,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        logprobs: bool = True,
        top_logprobs: int = 5,
        stream_logprobs: bool = False,
        max_context: int = API_MAX_CONTEXT,
        request_options: Mapping[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _check_options(
            concurrency, timeout, max_retries, backoff, max_backoff, top_logprobs, max_context
        )
        check_flag("logprobs", logprobs)
        check_flag("stream_logprobs", stream_logprobs)
        self.request_options = _checked_request_options(request_options)
        if base_url is not None:
            _check_base_url(base_url)
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if key is None:
            if base_url is None:
                raise BackendError(
                    "no API key: set OPENAI_API_KEY or pass api_key=, or pass base_url= for a "
                    "self-hosted server that needs no key"
                )
            key = "not-needed"
        self.model_name = model
        self.base_url = base_url
        self._api_key = key
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.top_logprobs = top_logprobs
        self.stream_logprobs = stream_logprobs
        self._client_kwargs = checked_names(
            "client_kwargs",
            client_kwargs or {},
            frozenset({"api_key", "base_url", "timeout", "max_retries"}),
            names="AsyncOpenAI keyword names",
            example='{"default_headers": {"X-Team": "search"}}',
            taken="which OpenAIBackend sets from its own options; pass OpenAIBackend(..., "
            "api_key=, base_url=, timeout=, max_retries=) instead",
        )
        self._token_limit_field = "max_tokens"  # "max_completion_tokens" once refused
        self._sends_temperature = True  # False once the model refused one
        self._no_logprobs = MissingLogprobsWarning(
            logger, "OpenAIBackend(..., logprobs=False) (--no-logprobs on the command line)"
        )
        self._tokens = TokenCounter()
        self._capabilities = Capabilities(chat=True, logprobs=logprobs, max_context=max_context)
        self._resources: PerLoop[_LoopResources] = PerLoop(self._new_resources)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def cache_identity(self) -> str:
        """What the response cache keys this model by: its name, and the
        ``request_options`` that change its answers."""
        if not self.request_options:
            return self.model_name
        return f"{self.model_name} {json.dumps(self.request_options, sort_keys=True, default=str)}"

    def count_tokens(self, text: str) -> int:
        return self._tokens.count(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self._tokens.truncate(text, max_tokens)

    # ------------------------------------------------------------------ requests
    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        assistant_prefix: str = "",
    ) -> Generation:
        """Chat completion. ``assistant_prefix`` is ignored: chat APIs cannot be made to
        continue a partial reply."""
        answer, retries = await self._complete(
            messages, max_tokens=max_tokens, temperature=temperature
        )
        return Generation(
            text=answer.text,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            retries=retries,
        )

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        """First-token log-probs of ``labels`` among the top alternatives.

        Chat APIs cannot be made to continue a partial assistant turn, so an
        ``assistant_prefix`` (such as FIRST's ``[``) is handled by generating a few tokens and
        reading the alternatives at the position right after the prefix.
        """
        if not self._capabilities.logprobs:
            raise CapabilityError(f"{self.model_name} was configured without log-probs")
        prefix = assistant_prefix.strip()
        params = {
            "max_tokens": 1 + (PREFIX_TOKENS if prefix else 0),
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": min(MAX_TOP_LOGPROBS, max(self.top_logprobs, len(labels))),
        }
        answer, retries = await self._complete(messages, stream=self.stream_logprobs, **params)
        if not answer.has_logprobs:
            self._no_logprobs.give(self.base_url or "the OpenAI API")
        positions = [
            [(entry.token, entry.logprob)]
            + [(alt.token, alt.logprob) for alt in entry.top_logprobs or []]
            for entry in answer.content
        ]
        found = read_labels(positions, labels, prefix)
        return LabelLogprobs(
            logprobs=found,
            text=answer.text,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            retries=retries,
        )

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        raise CapabilityError(
            "chat APIs do not score a given continuation; use a local TransformersBackend for "
            "query likelihood (pointwise-qlm), or the 'pointwise' method with this backend"
        )

    async def aclose(self) -> None:
        for resources in self._resources.clear():
            if resources.closer is not None:
                await resources.closer.aclose()
            else:
                await resources.client.close()

    # ------------------------------------------------------------------ plumbing
    async def _loop_resources(self) -> _LoopResources:
        """The client and semaphore of the running event loop, made on its first request.

        Clients are bound to their loop, so each loop gets its own, closed with its
        connections when the loop shuts down (``asyncio.run`` does so on return), so that
        an app running ``asyncio.run(reranker.arerank(...))`` per request keeps no
        connections open. A client given ``http_client`` is the caller's to close."""
        resources = self._resources.get()
        if resources.closer is None and "http_client" not in self._client_kwargs:
            resources.closer = self._close_at_loop_shutdown(resources.client)
            await anext(resources.closer)
        return resources

    def _new_resources(self) -> _LoopResources:
        client = openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,
            **self._client_kwargs,
        )
        return _LoopResources(client, asyncio.Semaphore(self.concurrency))

    async def _close_at_loop_shutdown(
        self, client: openai.AsyncOpenAI
    ) -> AsyncGenerator[None, None]:
        """Suspended for the life of the loop it started on: the loop's shutdown closes
        every async generator still open (``loop.shutdown_asyncgens``), and this one then
        closes ``client`` and forgets the loop."""
        try:
            yield
        finally:
            self._resources.forget()
            await client.close()

    async def _complete(
        self, messages: Sequence[Message], *, stream: bool = False, **params: Any
    ) -> tuple[_Answer, int]:
        """One chat completion, retried; with ``stream``, streamed and its chunks put back
        together. Returns the answer and the retry count."""
        resources = await self._loop_resources()

        async def attempt() -> Any:
            body = self._body(messages, stream, params)  # as the model's refusals taught
            async with resources.semaphore:
                try:
                    response = await resources.client.chat.completions.create(**body)
                except openai.BadRequestError as error:
                    if self._adapt_to_refusal(error, body):
                        raise _Resend from error
                    if refused_as_too_long(error):
                        raise self._overflow(error, messages) from error
                    raise
                if stream:
                    async with response:
                        chunks = [chunk async for chunk in response]
            if stream:
                return self._assemble(chunks, messages)
            if not getattr(response, "choices", None):
                raise MalformedResponseError(f"the server returned no choices: {response!r:.200}")
            return response

        reply, retries = await self.with_retries(attempt)
        return (reply if stream else _answer_of(reply)), retries

    def _body(
        self, messages: Sequence[Message], stream: bool, params: dict[str, Any]
    ) -> dict[str, Any]:
        """The arguments of one request: ``params`` with the token limit under the field the
        model takes, without a temperature where it refused one, and ``request_options``."""
        fields = dict(params)
        if "max_tokens" in fields:
            fields[self._token_limit_field] = fields.pop("max_tokens")
        if not self._sends_temperature:
            fields.pop("temperature", None)
        body = {"model": self.model_name, "messages": [m.as_dict() for m in messages], **fields}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        if self.request_options:
            body["extra_body"] = self.request_options
        return body

    def _overflow(
        self, error: openai.BadRequestError, messages: Sequence[Message]
    ) -> ContextOverflowError:
        """The error for a prompt refused as too long; where the server states a shorter
        context than prompts were fitted to, prompts are fitted to it from now on."""
        overflow = context_overflow(
            error,
            self,
            messages,
            where=self.base_url or "the OpenAI API",
            option="OpenAIBackend(..., max_context=N) (--max-context N on the command line)",
        )
        if overflow.context_length is not None:
            self._capabilities = replace(self._capabilities, max_context=overflow.context_length)
        return overflow

    def _adapt_to_refusal(self, error: openai.BadRequestError, body: dict[str, Any]) -> bool:
        """Whether ``error`` refused a field of ``body`` that can be sent otherwise: then
        every request from now on sends ``max_completion_tokens`` for an unsupported
        ``max_tokens``, or no ``temperature`` for one the model does not support. Each
        refused request is sent again once, without the field it was refused for."""
        refused = error.param
        if refused not in body:  # refused what it was not sent: no other way to send it
            return False
        if refused == "max_tokens" and error.code == "unsupported_parameter":
            change = "sending max_completion_tokens instead"
            first = self._token_limit_field == "max_tokens"
            self._token_limit_field = "max_completion_tokens"
        elif refused == "temperature":  # 0, which every model with a temperature supports
            change = "sending none, so its answers are sampled at its default temperature"
            first = self._sends_temperature
            self._sends_temperature = False
        else:
            return False
        if first:
            logger.warning("%s refused %r (%s); %s", self.model_name, refused, error, change)
        return True

    def _assemble(self, chunks: Sequence[Any], messages: Sequence[Message]) -> _Answer:
        """One answer from a streamed reply's chunks (the first choice of each)."""
        text: list[str] = []
        content: list[Any] = []
        usage = None
        finished = False
        has_logprobs = False
        for chunk in chunks:
            usage = getattr(chunk, "usage", None) or usage
            choices = getattr(chunk, "choices", None) or []
            if not choices:
                continue
            delta, logprobs = choices[0].delta, choices[0].logprobs
            finished = finished or bool(choices[0].finish_reason)
            piece = (delta.content if delta is not None else None) or ""
            text.append(piece)
            if logprobs is not None:
                has_logprobs = True
                content.extend(logprobs.content or [])
        if not text:  # one piece per chunk with a choice
            raise MalformedResponseError(f"the server streamed no choices ({len(chunks)} chunks)")
        if not finished:
            raise MalformedResponseError(
                f"the stream ended before the answer did (no finish_reason in {len(chunks)} "
                "chunks). llama-cpp-python's server cuts a stream short when another request "
                "arrives: start it with --interrupt_requests False, or pass "
                "stream_logprobs=False"
            )
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        else:  # each streamed token comes with its log-prob entry, or at least its text
            prompt_tokens = estimate_chat_prompt_tokens(
                self.count_tokens, [m.content for m in messages]
            )
            completion_tokens = max(len(content), sum(1 for piece in text if piece))
        return _Answer("".join(text), content, prompt_tokens, completion_tokens, has_logprobs)

    async def with_retries(self, attempt: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """Run ``attempt`` with exponential backoff; return its result and the retry count."""
        retries = 0
        while True:
            try:
                return await attempt(), retries
            except Exception as error:
                delay = self._retry_delay(error, retries)
                if delay is None:
                    raise _final_error(error, self.base_url) from error
                retries += 1
                await asyncio.sleep(delay)

    def _retry_delay(self, error: Exception, retries: int) -> float | None:
        if isinstance(error, _Resend):
            return 0.0
        if retries >= self.max_retries or not _is_retryable(error):
            return None
        delay = min(self.max_backoff, self.backoff * (2**retries)) * (0.5 + random.random() / 2)
        after = _retry_after(error)
        return min(self.max_backoff, after) if after is not None else delay


def _answer_of(response: Any) -> _Answer:
    """The parts of a chat completion (not streamed) that rankwise reads."""
    choice = response.choices[0]
    usage = response.usage
    return _Answer(
        text=choice.message.content or "",
        content=(choice.logprobs.content if choice.logprobs is not None else None) or [],
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        has_logprobs=choice.logprobs is not None,
    )


def _is_retryable(error: Exception) -> bool:
    if isinstance(
        error, MalformedResponseError | openai.APITimeoutError | openai.APIConnectionError
    ):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in _RETRYABLE_STATUS
    # The SDK raises these when a 200 body is not valid JSON or not a completion.
    return isinstance(error, openai.APIResponseValidationError | ValueError | AttributeError)


def _retry_after(error: Exception) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms`` (OpenAI's), else
    ``Retry-After`` in seconds or as an HTTP date (RFC 9110); None if absent or unreadable."""
    response: httpx.Response | None = getattr(error, "response", None)
    if response is None:
        return None
    milliseconds = response.headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _final_error(error: Exception, base_url: str | None) -> RankwiseError:
    where = base_url or "the OpenAI API"
    if isinstance(error, BackendError | ContextOverflowError):
        return error
    if isinstance(error, openai.APIConnectionError | openai.APITimeoutError):
        return BackendUnavailableError(
            f"could not reach {where} ({type(error).__name__}: {error}); check that the server "
            "is running and base_url is right (it usually ends in /v1)"
        )
    if isinstance(error, openai.AuthenticationError):
        return BackendError(f"{where} rejected the API key: {error}")
    if isinstance(error, openai.NotFoundError):
        path_hint = (
            " (OpenAI-compatible servers serve under /v1)"
            if base_url and not base_url.rstrip("/").endswith("/v1")
            else ""
        )
        return BackendError(
            f"{where} answered 404: {error}; check the model name and base_url{path_hint}"
        )
    if isinstance(error, openai.BadRequestError | openai.UnprocessableEntityError):
        hint = ""
        if "stream" in str(error).lower():
            hint = (
                "; the server refused a streamed request, so pass OpenAIBackend(..., "
                "stream_logprobs=False)"
            )
        elif "logprob" in str(error).lower():
            hint = (
                "; the server does not give log-probs, so pass OpenAIBackend(..., "
                "logprobs=False) and a method that needs none (listwise, setwise, prp-*)"
            )
        return BackendError(f"{where} refused the request ({error}){hint}")
    retried = " after retries" if _is_retryable(error) else ""
    return BackendError(f"{where} failed{retried}: {type(error).__name__}: {error}")


def _check_base_url(base_url: object) -> None:
    """A base URL the client can send to: a string with an http(s) scheme and a host."""
    parsed = urllib.parse.urlsplit(base_url) if isinstance(base_url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(
            f"base_url must be an http:// or https:// URL with a host, such as "
            f"http://127.0.0.1:8080/v1; got {base_url!r}"
        )


_RANKWISE_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "logprobs",
        "top_logprobs",
        "stream",
        "stream_options",
        "n",
    }
)


def _checked_request_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``request_options`` as a dict: refused where it is not a mapping of names, or sets a
    field rankwise sets itself or a keyword of the client's."""
    if options is None:
        return {}
    checked = checked_names(
        "request_options",
        options,
        _RANKWISE_FIELDS,
        names="field names",
        example='{"reasoning_effort": "minimal"}',
        taken="which rankwise sets itself for each method; leave them out (pass "
        "top_logprobs= to OpenAIBackend for the alternatives)",
    )
    client_side = sorted(
        {"extra_body", "extra_headers", "extra_query", "timeout"}.intersection(checked)
    )
    if client_side:
        raise InputError(
            f"request_options are the fields of the request's body itself, so "
            f"{', '.join(client_side)} would be sent as a field; put the fields in "
            "request_options directly, and headers, query parameters or the timeout in "
            "client_kwargs (default_headers, default_query) or timeout="
        )
    return checked


def _check_options(
    concurrency: int,
    timeout: float,
    max_retries: int,
    backoff: float,
    max_backoff: float,
    top_logprobs: int,
    max_context: int,
) -> None:
    """Raise :class:`InputError` for an option no request could run with."""
    check_concurrency(concurrency)
    if not (is_real(timeout) and timeout > 0):
        raise InputError(f"timeout must be more than 0 seconds, got {timeout!r}")
    check_whole("max_retries", max_retries, 0, " (0: no retries)")
    if not (is_real(backoff) and is_real(max_backoff)) or backoff < 0 or max_backoff < backoff:
        raise InputError(
            f"backoff must be >= 0 and max_backoff >= backoff, got {backoff} and {max_backoff}"
        )
    check_top_logprobs(top_logprobs)
    check_whole("max_context", max_context, 1, " token")
