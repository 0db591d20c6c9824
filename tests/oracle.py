"""An OpenAI-compatible stub that answers every rankwise prompt like a perfect judge.

Each test passage states its relevance as ``relevance 0.xx``; the oracle reads the prompt,
finds the passages the way a model would see them, and answers each method's question
correctly in that method's expected format. A method that ranks wrongly against it has a
bug in its own logic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.stub_server import Reply, completion, user_text, yes_no

RELEVANCE = re.compile(r"relevance (\d\.\d+)")


def relevance_docs(values: list[float]) -> list[dict[str, str]]:
    """Documents whose text states their relevance; ids are ``d0``, ``d1``, ..."""
    return [{"id": f"d{i}", "text": f"passage {i} relevance {v:.3f}"} for i, v in enumerate(values)]


def _rel(text: str) -> float:
    match = RELEVANCE.search(text)
    return float(match.group(1)) if match else 0.0


def _labelled(text: str, pattern: str) -> list[tuple[str, float]]:
    return [(m.group(1), _rel(m.group(2))) for m in re.finditer(pattern, text, re.MULTILINE)]


def oracle(request: dict[str, Any]) -> Reply:
    text = user_text(request)
    messages = request.get("messages", [])
    if "Does the passage answer the query" in text:
        return Reply(body=yes_no(_rel(text)))
    if "which of the following two passages" in text or "which of the following passages" in text:
        found = _labelled(text, r'Passage ([A-Z]): "(.*?)"')
        best = max(found, key=lambda item: item[1])[0]
        return Reply(body=completion(f"Passage {best}"))
    if "alphabetical identifier" in text:
        found = _labelled(text, r"^\[([A-Z])\] (.*)$")
        ranked = sorted(found, key=lambda item: -item[1])
        top = {label: -0.1 * rank for rank, (label, _) in enumerate(ranked)}
        return Reply(body=first_answer(top))
    if "RankGPT" in str(messages[0].get("content", "")) or "numerical identifier" in text:
        found = _labelled(text, r"^\[(\d+)\] (.*)$")
        ranked = sorted(found, key=lambda item: -item[1])
        return Reply(body=completion(" > ".join(f"[{label}]" for label, _ in ranked)))
    return Reply(body=completion("I cannot help with that."))


def first_answer(letter_logprobs: dict[str, float]) -> dict[str, Any]:
    """Two generated tokens, "[" then the best letter, with top log-probs at each."""
    body = completion("[" + max(letter_logprobs, key=letter_logprobs.__getitem__))
    best = max(letter_logprobs, key=letter_logprobs.__getitem__)
    body["choices"][0]["logprobs"] = {
        "content": [
            {
                "token": "[",
                "logprob": -0.01,
                "bytes": None,
                "top_logprobs": [{"token": "[", "logprob": -0.01, "bytes": None}],
            },
            {
                "token": best,
                "logprob": letter_logprobs[best],
                "bytes": None,
                "top_logprobs": [
                    {"token": k, "logprob": v, "bytes": None}
                    for k, v in sorted(letter_logprobs.items(), key=lambda kv: -kv[1])[:20]
                ],
            },
        ]
    }
    return body


def position_biased(margin: float) -> Callable[[dict[str, Any]], Reply]:
    """A pairwise judge with position bias: it names the more relevant passage when the two
    differ by more than ``margin``, and otherwise "Passage A", whichever passage stands first."""

    def judge(request: dict[str, Any]) -> Reply:
        (first, first_rel), (second, second_rel) = _labelled(
            user_text(request), r'Passage ([A-Z]): "(.*?)"'
        )
        better = second if second_rel - first_rel > margin else first
        return Reply(body=completion(f"Passage {better}"))

    return judge


def prose(request: dict[str, Any]) -> Reply:
    """A model that never answers the question."""
    return Reply(body=completion("These passages are all very interesting to read."))
