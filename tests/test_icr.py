"""ICR against its paper (Chen, Gutiérrez and Su, ICLR 2025; ``methods.md`` §10), on the real
local model: the published prompt layout, the attention scan's reuse of the document prefix,
and the masked N/A calibration, recomputed here from the scan the method received."""

from __future__ import annotations

import statistics

import pytest

from rankwise import Reranker

PASSAGES = [
    "Fleas live for about two to three months as adults.",
    "Concrete is made of cement, water and aggregate.",
    "The cat flea is the most common flea on dogs and cats.",
    "Paris is the capital of France.",
]
QUERY = "how long do fleas live"


async def test_a_query_reads_the_same_attention_whichever_query_went_before(local_backend):
    """The scan keeps the documents' key/value cache and drops each query from it before
    the next: a query asked second reads exactly what it reads when asked alone."""
    pieces = [" Here are some paragraphs:", "\n\n[1] ", PASSAGES[0], "\n\n[2] ", PASSAGES[1]]
    first, second = "\n\nQuery: how long do fleas live", "\n\nQuery: N/A"
    both = await local_backend.query_attention(pieces, [first, second])
    alone = await local_backend.query_attention(pieces, [second])
    assert both.spans == alone.spans
    assert both.attention[1] == pytest.approx(alone.attention[0], abs=1e-5)
    assert both.attention[0] != pytest.approx(both.attention[1], abs=1e-3)  # queries differ


def _published_score(calibrated: list[float]) -> float:
    """§10 step 3: θ = mean − 2·std over the document's tokens; the sum of c(t) above θ."""
    theta = statistics.fmean(calibrated) - 2 * statistics.pstdev(calibrated)
    return sum(value for value in calibrated if value > theta)


@pytest.mark.parametrize(
    ("task", "late"),
    [
        (
            "retrieval",
            "Please find information that are relevant to the following query in "
            "the paragraphs above.",
        ),
        (
            "qa",
            "Please answer the following question based on the information in the "
            "paragraphs above.",
        ),
    ],
    ids=["retrieval", "qa"],
)
async def test_icr_builds_the_published_prompt_and_scores_by_calibrated_attention(
    local_backend, monkeypatch, task, late
) -> None:
    scans = []
    scan = local_backend.query_attention

    async def recording(pieces, queries):
        result = await scan(pieces, queries)
        scans.append((list(pieces), list(queries), result))
        return result

    monkeypatch.setattr(local_backend, "query_attention", recording)
    ranked = await Reranker("icr", local_backend, task=task).arerank(QUERY, PASSAGES)

    assert len(scans) == 1
    pieces, queries, result = scans[0]
    prefix, suffix = local_backend.chat_affixes()
    n = len(PASSAGES)
    # {prefix}{instruction}{SEP}[1] {doc}...{SEP}[N] {doc}{SEP}, first-stage top-1 last
    assert pieces[0] == prefix + " Here are some paragraphs:"
    assert pieces[1::2][:n] == [f"\n\n[{slot}] " for slot in range(1, n + 1)]
    assert pieces[2::2][:n] == PASSAGES[::-1]
    assert pieces[-1] == "\n\n" and len(pieces) == 2 * n + 2
    assert queries == [f"{late}\n\nQuery: {text}{suffix}" for text in (QUERY, "N/A")]

    real, content_free = result.attention
    calibrated = [a - b for a, b in zip(real, content_free, strict=True)]
    expected = {}
    for slot, text in enumerate(PASSAGES[::-1], start=1):
        start, end = result.spans[2 * slot]
        expected[str(PASSAGES.index(text))] = _published_score(calibrated[start:end])
    assert {item.id: item.score for item in ranked.items} == pytest.approx(expected, rel=1e-9)
    assert ranked.ids == sorted(expected, key=lambda doc: -expected[doc])
    assert ranked.usage.calls == 2
