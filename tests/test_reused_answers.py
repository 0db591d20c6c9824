"""A prompt asked twice within one rerank is answered once: by its first asking when that
has returned, or by sharing it while in flight. No document is lost or merged on the way."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

import pytest

from rankwise import OpenAIBackend, Reranker
from rankwise.context import RankContext
from rankwise.errors import BackendError
from rankwise.prompts import Message, PromptLibrary
from tests.oracle import relevance_docs
from tests.stub_server import Reply, completion, user_text, yes_no

PASSAGE = re.compile(r'Passage ([A-Z]): "(.*?)"')


def api_backend(server) -> OpenAIBackend:
    return OpenAIBackend("judge", base_url=server.base_url, backoff=0.01, timeout=5)


def whim(first: str, second: str) -> bool:
    """A judge with fixed but arbitrary tastes: does it prefer ``first`` in this order?"""
    digest = hashlib.sha256(f"{first}\n{second}".encode()).digest()
    return digest[0] % 3 != 0  # often the first shown, so orders disagree and ties occur


def whimsical(request: dict[str, Any]) -> Reply:
    """Answers PRP and setwise prompts from the passages' texts alone: the same prompt always
    gets the same answer, as from a model decoding greedily."""
    found = PASSAGE.findall(user_text(request))
    if len(found) == 2:
        return Reply(
            body=completion("Passage A" if whim(found[0][1], found[1][1]) else "Passage B")
        )
    group = "\n".join(text for _, text in found)  # a choice of the group as a whole
    pick = hashlib.sha256(group.encode()).digest()[0] % len(found)
    return Reply(body=completion(f"Passage {found[pick][0]}"))


def sliding_reference(texts: list[str], passes: int) -> list[int]:
    """PRP-Sliding-K written out plainly, asking the judge every comparison anew."""
    order = list(range(len(texts)))
    for settled in range(min(passes, len(order) - 1)):
        for j in range(len(order) - 2, settled - 1, -1):
            lower, upper = texts[order[j + 1]], texts[order[j]]
            if whim(lower, upper) and not whim(upper, lower):
                order[j], order[j + 1] = order[j + 1], order[j]
    return order


def sent_prompts(stub) -> list[str]:
    return [json.dumps(request["messages"], sort_keys=True) for request in stub.requests]


@pytest.mark.parametrize("method", ["prp-sliding", "prp-heapsort", "setwise"])
async def test_no_prompt_is_sent_twice_within_a_rerank(stub, method) -> None:
    stub.handler = whimsical
    docs = relevance_docs([i / 40 for i in range(20)])
    reranker = Reranker(method, api_backend(stub))
    ranked = await reranker.arerank("which passage is most relevant?", docs)

    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    prompts = sent_prompts(stub)
    assert len(prompts) == len(set(prompts)) == ranked.usage.calls
    if method.startswith("prp"):  # pairs meet again often; setwise groups only now and then
        assert ranked.usage.reused_answers > 0
    comparisons = next(
        e.data["comparisons"] for e in ranked.trace.events if "comparisons" in e.data
    )
    per_comparison = 2 if method.startswith("prp") else 1
    assert ranked.usage.calls + ranked.usage.reused_answers == per_comparison * comparisons
    fewest, most = reranker.call_bounds(docs)
    assert fewest <= ranked.usage.calls < most


async def test_reused_answers_rank_as_asking_again_would(stub) -> None:
    """The sliding passes ranked with reused answers come out as the plain algorithm asking
    every comparison of the same judge anew."""
    stub.handler = whimsical
    docs = relevance_docs([i / 40 for i in range(15)])
    ranked = await Reranker("prp-sliding", api_backend(stub), top_k=10).arerank("q", docs)
    expected = sliding_reference([d["text"] for d in docs], 10)
    assert ranked.ids == [docs[i]["id"] for i in expected]
    assert ranked.usage.calls < 2 * sum(14 - i for i in range(10))  # what asking anew costs


async def test_identical_passages_are_asked_once_and_every_copy_kept(stub) -> None:
    stub.handler = lambda request: Reply(
        body=yes_no(0.9 if "wanted" in user_text(request) else 0.2), delay=0.2
    )
    docs = [
        {"id": "a1", "text": "the wanted passage"},
        {"id": "b", "text": "another passage"},
        {"id": "a2", "text": "the wanted passage"},
        {"id": "a3", "text": "the wanted passage"},
    ]
    ranked = await Reranker("pointwise", api_backend(stub)).arerank("q", docs)
    assert sorted(ranked.ids) == ["a1", "a2", "a3", "b"]
    assert ranked.ids[-1] == "b"
    assert len(stub.requests) == ranked.usage.calls == 2  # the copies shared one call in flight
    assert ranked.usage.reused_answers == 2
    scores = {item.id: item.score for item in ranked.items}
    assert scores["a1"] == scores["a2"] == scores["a3"] > scores["b"]


def context_for(stub) -> RankContext:
    return RankContext(api_backend(stub), PromptLibrary())


QUESTION = [Message("user", "Is this passage relevant?")]


async def test_a_cancelled_first_asking_leaves_its_repeat_to_ask_itself(stub) -> None:
    stub.handler = lambda request: Reply(body=completion("yes"), delay=0.3)
    context = context_for(stub)
    first = asyncio.create_task(context.generate(QUESTION, max_tokens=4))
    await asyncio.sleep(0.05)
    repeat = asyncio.create_task(context.generate(QUESTION, max_tokens=4))
    await asyncio.sleep(0.05)
    first.cancel()
    answer = await repeat
    assert answer.text == "yes"
    assert first.cancelled()
    assert context.usage.calls == 1 and context.usage.reused_answers == 0
    assert len(stub.requests) == 2  # the cancelled asking had been sent; the repeat sent again
    assert (await context.generate(QUESTION, max_tokens=4)).text == "yes"
    assert context.usage.reused_answers == 1 and len(stub.requests) == 2


async def test_a_failed_first_asking_fails_its_repeats_without_sending_them(stub) -> None:
    stub.handler = lambda request: Reply(status=400, body={"error": {"message": "no"}}, delay=0.2)
    context = context_for(stub)
    results = await asyncio.gather(
        context.generate(QUESTION, max_tokens=4),
        context.generate(QUESTION, max_tokens=4),
        return_exceptions=True,
    )
    assert all(isinstance(result, BackendError) for result in results)
    assert len(stub.requests) == 1
    # A failure is not remembered: asking later sends the prompt again.
    stub.handler = lambda request: Reply(body=completion("yes"))
    assert (await context.generate(QUESTION, max_tokens=4)).text == "yes"
    assert len(stub.requests) == 2 and context.usage.calls == 1


async def test_other_decoding_parameters_are_another_question(stub) -> None:
    stub.handler = lambda request: Reply(body=completion("yes"))
    context = context_for(stub)
    await context.generate(QUESTION, max_tokens=4)
    await context.generate(QUESTION, max_tokens=8)
    await context.generate(QUESTION, max_tokens=4, assistant_prefix="Answer:")
    assert len(stub.requests) == 3 and context.usage.reused_answers == 0
