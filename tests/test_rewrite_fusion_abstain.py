"""Query rewriting (over real HTTP to a scripted stub), RRF fusion, and calibrated abstention."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from rankwise import Candidate, InputError, OpenAIBackend, Reranker
from rankwise.abstain import (
    Abstention,
    Calibrator,
    confidence_entropy,
    confidence_margin,
    cross_validated_nauc,
    quantile,
    risk_coverage,
)
from rankwise.cli import main
from rankwise.fusion import reciprocal_rank_fusion
from rankwise.pipeline import RetrievalPipeline
from rankwise.rewrite import QueryRewriter, Rewrite
from tests.conftest import DL19, dl19_lines, fitted_calibrator
from tests.oracle import oracle, relevance_docs
from tests.stub_server import Reply, completion, sent_tokens, user_text

ANSWERS = {  # checked in order: the selection prompt mentions the other strategies
    "choose query rewriting strategies": "KWR, CCE",
    "3 different versions": '1. How long do fleas live?\n\n2) "What is a flea\'s lifespan?"\n- how long is life cycle of flea',
    "search keywords": "Keywords: flea life cycle duration",
    "core request": "",
    "write a passage": "Fleas live from a few weeks\nup to a year.",
    "sub-questions": "1. What are the flea life stages?\n2. How long is each stage?",
    "standalone question": "How long is the life cycle of a cat flea?",
}


def replying(answers: dict[str, str], otherwise: str = "?") -> Callable[[dict], Reply]:
    """A stub handler that answers with the first answer whose marker the prompt holds."""

    def reply(request) -> Reply:
        text = user_text(request)
        found = (answer for marker, answer in answers.items() if marker in text)
        return Reply(body=completion(next(found, otherwise)))

    return reply


scripted = replying(ANSWERS)


@pytest.fixture
def rewriter_backend(stub) -> OpenAIBackend:
    stub.handler = scripted
    return OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01)


QUESTION = "how long is life cycle of flea"


async def test_multi_query_output_is_cleaned(rewriter_backend) -> None:
    result = await QueryRewriter(rewriter_backend, ["multi_query"]).arewrite(QUESTION)
    assert result.queries == [QUESTION, "How long do fleas live?", "What is a flea's lifespan?"]
    assert [r.strategy for r in result.rewrites] == ["original", "multi_query", "multi_query"]
    assert result.usage.calls == 1


def test_list_marks_lead_ins_and_echoes_are_not_queries() -> None:
    """The embedded model's own multi-query answer: "- 1." (two marks) and "Options:" were
    kept as queries, and the question echoed with a "?" counted as a rewrite; "e.g." and
    "3.5" lost their first characters as if they were list marks."""
    from rankwise.rewrite import clean_lines

    answer = (
        "1. How long is life cycle of flea?\n2. How long does it take to make a new life "
        "cycle?\n3. How long does it take to make a new life cycle?\n\nOptions:\n- 1.\n- 2."
        "\n- 3.\n\nOptions:\n"
    )
    assert clean_lines(answer, multi_line=True, original=QUESTION) == [
        "How long does it take to make a new life cycle?"
    ]
    marked = "- e.g. flea eggs\n* 3.5 weeks\na) cat fleas\n**2. dog fleas**\n(1) ticks\n2 - mites"
    assert clean_lines(marked, multi_line=True) == [
        "e.g. flea eggs",
        "3.5 weeks",
        "cat fleas",
        "dog fleas",
        "ticks",
        "mites",
    ]
    assert clean_lines("The answer to this question is:\nFleas live a year.", multi_line=True) == [
        "Fleas live a year."
    ]
    assert clean_lines("**Query:** C++ flea", multi_line=False, original="c flea") == ["C++ flea"]


def test_the_sync_rewrite_counts_its_calls_and_seconds(rewriter_backend) -> None:
    """There was only arewrite(), and its usage said 0 seconds outside the pipeline."""
    result = QueryRewriter(rewriter_backend, ["multi_query", "keywords"]).rewrite(QUESTION)
    assert result.queries[0] == QUESTION
    assert "flea life cycle duration" in result.queries
    assert result.usage.calls == 2 and result.usage.seconds > 0


async def test_one_strategy_name_and_repeated_names_each_run_once(rewriter_backend) -> None:
    """A lone name was read letter by letter ("unknown strategies ['k', 'e', ...]"), and a
    repeated name paid for the same call twice."""
    from rankwise.errors import InputError

    result = await QueryRewriter(rewriter_backend, "keywords").arewrite(QUESTION)
    assert result.queries == [QUESTION, "flea life cycle duration"]
    assert result.usage.calls == 1
    twice = await QueryRewriter(rewriter_backend, ["keywords", "keywords"]).arewrite(QUESTION)
    assert twice.queries == result.queries and twice.usage.calls == 1
    for bad in (0, -8, 2.5, True):
        with pytest.raises(InputError, match="max_tokens must be a whole number of at least 1"):
            QueryRewriter(rewriter_backend, "keywords", max_tokens=bad)


async def test_strategies_run_together_and_original_can_be_excluded(rewriter_backend) -> None:
    rewriter = QueryRewriter(
        rewriter_backend, ["keywords", "pseudo_answer", "decompose"], include_original=False
    )
    result = await rewriter.arewrite(QUESTION)
    assert result.queries == [
        "flea life cycle duration",
        "Fleas live from a few weeks up to a year.",
        "What are the flea life stages?",
        "How long is each stage?",
    ]
    assert result.usage.calls == 3


async def test_unusable_output_falls_back_and_is_traced(rewriter_backend) -> None:
    result = await QueryRewriter(
        rewriter_backend, ["core_content"], include_original=False
    ).arewrite(QUESTION)
    assert result.queries == [QUESTION]
    assert len(result.trace.fallbacks) == 2  # the empty rewrite, then the fallback itself


async def test_adaptive_selection_runs_only_what_it_picked(rewriter_backend, stub) -> None:
    result = await QueryRewriter(rewriter_backend, ["adaptive"]).arewrite(QUESTION)
    assert [r.strategy for r in result.rewrites] == ["original", "keywords"]  # CCE gave nothing
    assert result.usage.calls == 3  # selection + KWR + CCE


async def test_an_unreadable_selection_falls_back_to_the_general_rewrite(stub) -> None:
    stub.handler = replying(
        {"choose query rewriting strategies": "I would pick the best ones."},
        otherwise="How long does a flea live?",
    )
    backend = OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01)
    result = await QueryRewriter(backend, ["adaptive"]).arewrite(QUESTION)
    assert [r.strategy for r in result.rewrites] == ["original", "general"]
    assert "strategy selection unreadable" in result.trace.fallbacks[0].message
    assert "Rewrite the search query below" in user_text(stub.requests[-1])


async def test_the_selected_strategies_run_in_the_order_the_model_gave(stub) -> None:
    stub.handler = replying(
        {
            "choose query rewriting strategies": "PAR, then KWR, then PAR again",
            "write a passage": "Fleas live for up to a year.",
            "search keywords": "flea lifespan",
        }
    )
    backend = OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01)
    result = await QueryRewriter(backend, ["adaptive"]).arewrite(QUESTION)
    assert [r.strategy for r in result.rewrites] == ["original", "pseudo_answer", "keywords"]
    assert result.usage.calls == 3  # the selection, then each strategy once


async def test_a_pseudo_answer_may_write_four_times_the_tokens_of_a_query(
    rewriter_backend, stub
) -> None:
    """HyDE writes a passage, not a query: 4 × max_tokens."""
    await QueryRewriter(rewriter_backend, ["pseudo_answer", "keywords"], max_tokens=50).arewrite(
        QUESTION
    )
    room = {
        "pseudo_answer" if "write a passage" in user_text(r) else "keywords": r["max_tokens"]
        for r in stub.requests
    }
    assert room == {"pseudo_answer": 200, "keywords": 50}


async def test_conversational_rewrite_sees_the_history(rewriter_backend, stub) -> None:
    rewriter = QueryRewriter(rewriter_backend, ["conversational"], include_original=False)
    result = await rewriter.arewrite("and for cat fleas?", chat_history="Human: flea life cycle?")
    assert result.queries == ["How long is the life cycle of a cat flea?"]
    assert "Human: flea life cycle?" in user_text(stub.requests[-1])


LONG_HISTORY = "\n".join(
    f"Human: question {i} about fleas and their hosts\nAI: answer {i} about flea eggs and larvae"
    for i in range(60)
)


async def test_a_long_history_keeps_its_latest_lines_to_fit(stub) -> None:
    stub.handler = scripted
    backend = OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01, max_context=300)
    assert backend.count_tokens(LONG_HISTORY) > 300
    rewriter = QueryRewriter(backend, ["conversational"], include_original=False)
    result = await rewriter.arewrite("and for cat fleas?", chat_history=LONG_HISTORY)
    assert result.queries == ["How long is the life cycle of a cat flea?"]
    sent = user_text(stub.requests[-1])
    assert "answer 59 about flea eggs" in sent and "question 0 about" not in sent
    assert sent_tokens(backend, stub.requests[-1]) < 300
    [cut] = [event for event in result.trace.events if event.kind == "truncation"]
    assert 0 < cut.data["kept_lines"] < cut.data["lines"] == 120
    assert sent.count("Human: question") == cut.data["kept_lines"] // 2


async def test_a_long_history_fits_the_local_models_context(local_backend, local_context) -> None:
    context = 500
    local_context(context)
    rewriter = QueryRewriter(local_backend, ["conversational"], include_original=False)
    result = await rewriter.arewrite("and for cat fleas?", chat_history=LONG_HISTORY)
    assert result.trace.count("truncation") == 1
    assert result.usage.calls == 1
    assert result.usage.prompt_tokens + result.usage.completion_tokens <= context


async def test_without_history_the_conversational_rewrite_says_so(rewriter_backend) -> None:
    rewriter = QueryRewriter(rewriter_backend, ["conversational"])
    result = await rewriter.arewrite("and for cat fleas?")
    assert any("no chat history was given" in e.message for e in result.trace.events)
    with_history = await rewriter.arewrite("and for cat fleas?", chat_history="Human: fleas?")
    assert not any("chat history" in e.message for e in with_history.trace.events)


async def test_the_pipeline_passes_the_history_to_the_rewriter(rewriter_backend, stub) -> None:
    """The pipeline (and so both retrievers) called arewrite(query) alone, so a
    conversational rewrite never saw the conversation."""
    searched: list[str] = []

    async def retrieve(text: str) -> list[Candidate]:
        searched.append(text)
        return [Candidate(id=f"{text}-{i}", text=f"{text} {i}") for i in range(2)]

    rewriter = QueryRewriter(rewriter_backend, ["conversational"])
    reranker = Reranker("listwise", rewriter_backend)
    pipeline = RetrievalPipeline(reranker, rewrite=rewriter)
    history = "Human: how long is the life cycle of a flea?"
    ranked = await pipeline.arun("and for cat fleas?", retrieve, chat_history=history)
    assert history in user_text(stub.requests[0])
    assert searched == ["and for cat fleas?", "How long is the life cycle of a cat flea?"]
    assert sorted(ranked.ids) == sorted(f"{q}-{i}" for q in searched for i in range(2))

    async def own(text: str) -> list[str]:
        return [text + " life span"]

    with pytest.raises(InputError, match="chat_history is read only by a QueryRewriter"):
        await RetrievalPipeline(reranker, rewrite=own).arun("q", retrieve, chat_history=history)


def test_reciprocal_rank_fusion_by_hand() -> None:
    a = [Candidate(id="x", text="x"), Candidate(id="y", text="y", metadata={"list": "a"})]
    b = [
        Candidate(id="y", text="y", metadata={"list": "b"}),
        Candidate(id="z", text="z"),
        Candidate(id="y", text="y", metadata={"list": "b, again"}),
    ]
    fused = reciprocal_rank_fusion([a, b])
    assert [c.id for c in fused] == ["y", "x", "z"]
    assert fused[0].metadata == {"list": "a"}  # the first occurrence is the one kept
    # documents are one by id, whatever their text; by text only when they have no id
    edited = [Candidate(id="x", text="x, edited"), Candidate(id="w", text="x")]
    assert [c.id for c in reciprocal_rank_fusion([a, edited])] == ["x", "y", "w"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)
    weighted = reciprocal_rank_fusion([a, b], weights=[1.0, 0.0])  # b counts for nothing
    assert [c.id for c in weighted] == ["x", "y", "z"]


def test_confidence_functions() -> None:
    assert confidence_margin([0.9, 0.2, 0.1]) == pytest.approx(0.7)
    assert confidence_entropy([5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert confidence_entropy([50.0, 0.0, 0.0]) == pytest.approx(1.0, abs=1e-6)
    assert Abstention("max", 0.5).decide([0.4, 0.1]) == (True, 0.4)
    assert Abstention("max", 0.5).decide([0.5, 0.1]) == (False, 0.5)  # below, not at
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([0.0, 10.0], 0.25) == 2.5  # interpolated, as numpy's default


def test_an_abstention_rate_of_zero_abstains_on_no_reference_query() -> None:
    """The threshold is the rate-quantile of the reference predictions, and a list abstains
    at or below it. At a rate of 0 that quantile is the lowest prediction, so the weakest
    reference query abstained: a user who asked for none got at least one."""
    rng = random.Random(5)
    lists = [[rng.random() for _ in range(5)] for _ in range(20)]
    quality = [max(s) for s in lists]
    calibrator = Calibrator(n=5).fit(lists, quality, abstention_rate=0.0)
    assert not any(calibrator.decide(s)[0] for s in lists)
    some = Calibrator(n=5).fit(lists, quality, abstention_rate=0.25)
    assert sum(some.decide(s)[0] for s in lists) == 5  # other rates as before


def test_calibrator_recovers_a_known_relationship(tmp_path) -> None:
    rng = random.Random(7)
    lists = [[rng.random() for _ in range(10)] for _ in range(400)]
    quality = [0.2 + 0.6 * max(s) - 0.3 * min(s) for s in lists]
    calibrator = Calibrator(n=10, alpha=1e-6, method="pointwise", model="m").fit(
        lists, quality, abstention_rate=0.25
    )
    intercept, *weights = calibrator.weights
    assert intercept == pytest.approx(0.2, abs=1e-3)
    assert weights[-1] == pytest.approx(0.6, abs=1e-3)  # features are sorted ascending
    assert weights[0] == pytest.approx(-0.3, abs=1e-3)
    assert all(abs(w) < 1e-3 for w in weights[1:-1])
    abstained = [calibrator.decide(s)[0] for s in lists]
    assert abs(sum(abstained) - 0.25 * len(lists)) <= 1  # the requested rate, within one query
    path = tmp_path / "calib.json"
    calibrator.save(path)
    assert Calibrator.load(path, method="pointwise").weights == calibrator.weights
    with pytest.warns(UserWarning, match="fitted for method 'pointwise'"):
        Calibrator.load(path, method="listwise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Calibrator.load(path, method="pointwise", model="m")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n", "3", "n must be a whole number of at least 1"),
        ("n", 0, "n must be a whole number of at least 1"),
        ("alpha", -1, "alpha must be a number of at least 0"),
        ("threshold", "0.3", "threshold must be a number"),
        ("threshold", math.inf, "threshold must be a number"),
        ("threshold", math.nan, "threshold must be a number"),
        ("weights", ["a", 1.0, 2.0, 3.0], "weights must be finite numbers"),
        ("weights", [1.0, 2.0, 3.0, None], "weights must be finite numbers"),
        ("weights", "1, 2, 3, 4", "weights must be finite numbers"),
        ("reference_size", -1, "reference_size must be a whole number of at least 0"),
        ("method", 3, "method must be a string"),
    ],
)
def test_a_calibrator_with_a_field_of_the_wrong_kind_is_refused(
    tmp_path, field, value, message
) -> None:
    """A hand-edited calibrator file (``"n": "3"``, ``"threshold": "0.3"``) loaded, then failed
    at the first list with a TypeError from deep inside, or, with ``n: 0``, fitted nothing."""
    calibrator = fitted_calibrator(0.3)
    path = tmp_path / "calib.json"
    calibrator.save(path)
    fields = json.loads(path.read_text()) | {field: value}
    path.write_text(json.dumps(fields))
    with pytest.raises(InputError, match=f"cannot read a calibrator from .*{message}"):
        Calibrator.load(path)
    with pytest.raises(InputError, match=message):  # and when built in Python
        Calibrator(**fields)


def test_a_calibrator_saved_with_minus_infinity_still_never_abstains(tmp_path) -> None:
    """Files saved before ``null`` meant "never abstain" hold ``-Infinity``; they load as
    before, and are saved again as strict JSON."""
    path = tmp_path / "calib.json"
    fitted_calibrator(0.3).save(path)
    path.write_text(path.read_text().replace('"threshold": 0.3', '"threshold": -Infinity'))
    calibrator = Calibrator.load(path)
    assert calibrator.threshold is None and not calibrator.decide([-9.0, -9.0, -9.0])[0]
    calibrator.save(path)
    assert json.loads(path.read_text())["threshold"] is None
    with pytest.raises(InputError, match="min_quality must be a finite number"):
        Calibrator(n=3).fit([[1.0, 0.5, 0.2], [0.4, 0.3, 0.1]], [0.9, 0.2], min_quality="0.5")


def test_cross_validation_over_few_queries_tests_at_least_two_at_a_time() -> None:
    """With under eight queries, each 20% test split held one query, whose nAUC is not
    defined (it was counted as 0.0): five queries whose top score tracks their quality
    perfectly reported 0.0 for every confidence, as if no better than chance."""
    lists = [[0.1 * i, 0.02, 0.01] for i in range(5)]
    cv = cross_validated_nauc(lists, [0.1 * i for i in range(5)], n=3)
    assert cv["max"] == pytest.approx(1.0) and cv["calibrator"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="every query has the same quality"):
        cross_validated_nauc(lists, [0.0] * 5, n=3)
    with pytest.raises(InputError, match="at least two queries each"):
        cross_validated_nauc(lists[:3], [0.1, 0.2, 0.3], n=3)
    quality = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.9]  # some splits test only zeros
    with pytest.warns(UserWarning, match="of the 5 test splits hold queries of one quality"):
        partly = cross_validated_nauc([[q, 0.0] for q in quality], quality, n=2)
    assert partly["max"] == pytest.approx(1.0)


def test_risk_coverage_bounds() -> None:
    metrics = [0.1, 0.9, 0.5, 0.3, 0.7]
    assert risk_coverage(metrics, metrics)["nauc"] == pytest.approx(1.0)
    assert risk_coverage([-m for m in metrics], metrics)["nauc"] < 0
    rng = random.Random(1)
    lists = [[rng.random() for _ in range(10)] for _ in range(60)]
    quality = [max(s) for s in lists]
    cv = cross_validated_nauc(lists, quality)
    assert cv["calibrator"] > 0.9 and cv["max"] == pytest.approx(1.0)


@pytest.mark.parametrize("order", ["worst first", "best first", "shuffled"])
def test_tied_confidences_tell_nothing_whatever_the_order_of_the_queries(order) -> None:
    """Queries of equal confidence were dropped in the order they were listed, so a
    confidence that tells them apart no better than chance scored anything from -1 to 1 by
    the input order alone: a constant one scored a perfect 1.0 on queries listed worst
    first. Ties now count as a random draw among the tied queries."""
    metrics = [0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 0.9]
    if order == "best first":
        metrics.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(metrics)
    constant = risk_coverage([0.7] * len(metrics), metrics)
    assert constant["nauc"] == pytest.approx(0.0, abs=1e-12)
    assert constant["method"] == pytest.approx([statistics.fmean(metrics)] * 101)
    # Two levels: the three best queries share the high confidence, the rest the low one.
    ranked = sorted(metrics)
    two_levels = [1.0 if m >= ranked[4] else 0.0 for m in metrics]
    curve = risk_coverage(two_levels, metrics)
    assert curve["nauc"] == pytest.approx(risk_coverage(two_levels[::-1], metrics[::-1])["nauc"])
    # Dropping 2 of 7 removes 2 of the 4 low-confidence queries at random: in expectation,
    # half of their total.
    expected = (sum(ranked[4:]) + sum(ranked[:4]) / 2) / 5
    two_dropped = next(i for i, rate in enumerate(curve["rates"]) if round(rate * 7) == 2)
    assert curve["method"][two_dropped] == pytest.approx(expected)


async def test_reranker_abstains_with_a_calibrator(stub) -> None:
    stub.handler = oracle
    calibrator = Calibrator(n=3)
    calibrator.weights = [0.0, 0.0, 0.0, 1.0]  # predicted quality = the best score
    calibrator.threshold = 0.5
    backend = OpenAIBackend("oracle", base_url=stub.base_url)
    junk = await Reranker("pointwise", backend, abstain=calibrator).arerank(
        "q", relevance_docs([0.1, 0.2, 0.3])
    )
    assert junk.abstained and junk.selected == [] and len(junk.items) == 3
    assert junk.confidence == pytest.approx(0.3, abs=1e-3)
    assert junk.abstain_reason == f"confidence {junk.confidence:.4g} below 0.5"
    good = await Reranker("pointwise", backend, abstain=calibrator).arerank(
        "q", relevance_docs([0.1, 0.8])
    )
    assert not good.abstained and math.isclose(good.confidence, 0.8, abs_tol=1e-3)
    assert good.abstain_reason is None


@pytest.mark.parametrize("rule", ["max", "std", "margin", "entropy", "calibrator"])
async def test_empty_documents_do_not_change_the_abstention_confidence(stub, rule) -> None:
    """An empty document is placed last under a placeholder score, without a call. Abstention
    read that score too: with pointwise-qlm's -1e9, one empty chunk turned 'std' from 0.169
    (abstain) into 4.3e8 (answer), and 'margin' over one passage into 1e9."""
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url)
    if rule == "calibrator":
        abstain = Calibrator(n=4)  # predicted quality = the lowest of the top 4 (padded)
        abstain.weights, abstain.threshold = [0.0, 1.0, 0.0, 0.0, 0.0], 0.5
    else:
        abstain = Abstention(rule, 0.5)
    reranker = Reranker("pointwise", backend, abstain=abstain)
    docs = relevance_docs([0.1, 0.2, 0.3])
    plain = await reranker.arerank("q", docs)
    padded = await reranker.arerank("q", [*docs, {"id": "blank", "text": " "}])
    assert plain.abstained and padded.abstained
    assert padded.confidence == pytest.approx(plain.confidence, abs=1e-9)
    assert padded.judged_scores == plain.judged_scores == [i.score for i in plain.items]
    assert padded.ids == [*plain.ids, "blank"]
    assert [item.judged for item in padded.items] == [True, True, True, False]
    nothing = await reranker.arerank("q", ["", "  "])
    assert nothing.abstained and nothing.confidence is None and nothing.usage.calls == 0
    assert "no document had text to judge" in str(nothing.trace.events)
    assert nothing.abstain_reason == "no document had text to judge"
    # a retriever that found nothing: "nothing relevant" too, not a list that passed the rule
    found_none = await reranker.arerank("q", [])
    assert found_none.abstained and found_none.confidence is None
    assert found_none.abstain_reason == "there were no documents to rank"
    assert found_none.usage.calls == 0 and found_none.selected == []


@pytest.mark.parametrize(
    ("method", "kind"), [("pointwise-qlm", "log_likelihood"), ("icr", "attention")]
)
def test_a_fixed_abstention_rule_needs_scores_that_mean_the_same_across_queries(method, kind):
    """Query likelihood's scores are mean log-probs (about -10 here), so Abstention's default
    'max' >= 0.5 abstained on every query, and nothing said why."""
    with pytest.raises(InputError, match=f"{method}' gives {kind} scores that only order one"):
        Reranker(method, abstain=Abstention())
    assert Reranker(method, abstain=fitted_calibrator(0.3)).abstain is not None  # learns the scale


async def test_calibrated_query_likelihood_takes_a_threshold_and_a_rule(local_backend, dl19):
    record = dl19[0]
    documents = record.documents(4)
    plain = await Reranker("pointwise-qlm", local_backend, calibrated=True).arerank(
        record.query, documents
    )
    scores = sorted(item.score for item in plain.items)
    middle = (scores[1] + scores[2]) / 2
    kept = await Reranker(
        "pointwise-qlm", local_backend, calibrated=True, score_threshold=middle
    ).arerank(record.query, documents)
    assert [i.id for i in kept.selected] == [i.id for i in plain.items][:2]
    above = Abstention("max", scores[-1] + 0.01)
    ruled = await Reranker("pointwise-qlm", local_backend, calibrated=True, abstain=above).arerank(
        record.query, documents
    )
    assert ruled.abstained and ruled.confidence == pytest.approx(scores[-1])
    assert sorted(i.id for i in ruled.items) == sorted(d["id"] for d in documents)


def test_a_calibrator_fitted_for_another_method_or_model_is_warned_about() -> None:
    """Calibrator.load warned of a mismatch only when told the method; a Reranker given a
    calibrator fitted for other scores abstained on them without a word."""
    weights = [0.0, 0.0, 0.0, 1.0]
    fitted = Calibrator(n=3, method="pointwise-qlm", model="SmolLM2-135M-Instruct", weights=weights)
    with pytest.warns(UserWarning, match="fitted for method 'pointwise-qlm'.*uses 'pointwise'"):
        Reranker("pointwise", abstain=fitted)
    api = OpenAIBackend("gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    with pytest.warns(UserWarning, match="fitted for model 'SmolLM2-135M-Instruct'.*gpt-4o-mini"):
        Reranker("pointwise", api, abstain=Calibrator(n=3, model=fitted.model, weights=weights))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Reranker("pointwise-qlm", abstain=fitted)  # what it was fitted for: no warning
        Reranker("pointwise", api, abstain=fitted_calibrator(0.3))  # fitted for nothing named


def test_auto_with_an_abstention_rule_picks_absolute_scores() -> None:
    assert Reranker(abstain=Abstention()).method.name == "pointwise"  # local, else qlm
    assert Reranker(abstain=fitted_calibrator(0.3)).method.name == "pointwise-qlm"


def test_cli_calibrate_then_eval_with_abstention(tmp_path, capsys) -> None:
    common = [
        "--data",
        str(DL19 / "bm25-top100.jsonl"),
        "--qrels",
        str(DL19 / "qrels.txt"),
        "--method",
        "pointwise-qlm",
        "--depth",
        "5",
        "--queries",
        "6",
        "--cache",
        str(tmp_path / "cache.sqlite"),
    ]
    calib = tmp_path / "calib.json"
    assert main(["calibrate", *common, "--out", str(calib), "--top", "5"]) == 0
    assert json.loads(calib.read_text())["method"] == "pointwise-qlm"
    capsys.readouterr()
    report_path = tmp_path / "r.json"
    plot = tmp_path / "rc.svg"
    assert (
        main(
            [
                "eval",
                *common,
                "--abstention",
                str(calib),
                "--report",
                str(report_path),
                "--plot",
                str(plot),
            ]
        )
        == 0
    )
    report = json.loads(report_path.read_text())
    assert {"nauc", "coverage", "quality_at_coverage"} <= set(report["abstention"])
    assert 0 < report["abstention"]["coverage"] <= 1
    assert report["calls"] == 0 and report["cache_hits"] == 30  # the calibration run is cached
    assert plot.stat().st_size > 1000
    assert f"calibrator (nAUC {report['abstention']['nauc']:.3f})" in _plot_labels(plot)
    assert main(["eval", *common, "--abstention", "cv", "--report", str(report_path)]) == 0
    cv = json.loads(report_path.read_text())["abstention"]
    assert set(cv["nauc"]) == {"calibrator", "max", "std", "margin", "entropy"}


def _plot_labels(path: Path) -> list[str]:
    """The texts of an SVG that matplotlib drew: it writes each one as a comment."""
    return re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8"))


def test_the_cv_plot_names_the_confidence_it_draws(tmp_path) -> None:
    """With --abstention cv no calibrator is fitted on all queries, so the plot draws the
    top score's curve; its legend called that curve "rankwise", as if it were the calibrator
    or the method's own, with an nAUC found nowhere in the report."""
    records, qrels = dl19_lines(4), tmp_path / "qrels.txt"
    qrels.write_text((DL19 / "qrels.txt").read_text(), encoding="utf-8")
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    plot = tmp_path / "rc.svg"
    args = ["eval", "--data", str(data), "--qrels", str(qrels), "--method", "pointwise-qlm"]
    args += ["--depth", "3", "--abstention", "cv", "--plot", str(plot)]
    assert main(args) == 0
    (legend,) = [text for text in _plot_labels(plot) if "nAUC" in text]
    assert legend.startswith("top score, all queries (nAUC ")


@pytest.mark.parametrize(
    "strategy",
    [
        "multi_query",
        "pseudo_answer",
        "decompose",
        "conversational",
        "keywords",
        "core_content",
        "general",
        "adaptive",
    ],
)
async def test_every_strategy_with_the_local_model(local_backend, strategy) -> None:
    rewriter = QueryRewriter(local_backend, [strategy], include_original=False, max_tokens=48)
    result = await rewriter.arewrite(QUESTION, chat_history="Human: tell me about fleas")
    assert result.queries and all(q.strip() for q in result.queries)
    assert len({q.lower() for q in result.queries}) == len(result.queries)
    assert result.usage.calls >= 1


async def test_garbage_output_takes_the_fallback(stub) -> None:
    stub.handler = lambda request: Reply(body=completion('1.\n\n- \n""\n' + QUESTION))
    backend = OpenAIBackend("stub", base_url=stub.base_url)
    for strategy in ("multi_query", "keywords", "decompose"):
        result = await QueryRewriter(backend, [strategy], include_original=False).arewrite(QUESTION)
        assert result.queries == [QUESTION] and result.trace.fallbacks


async def test_the_pipeline_counts_the_rewriting_calls(rewriter_backend) -> None:
    """The rewriter's calls were left out of the result's usage, so a query's cost looked
    smaller than it was, and its fallbacks were missing from the trace."""
    from rankwise.pipeline import RetrievalPipeline

    corpus = relevance_docs([0.2, 0.8, 0.5, 0.1])
    searched: list[str] = []

    async def retrieve(text: str) -> list[Candidate]:
        searched.append(text)
        return [Candidate(**doc) for doc in corpus]

    rewriter = QueryRewriter(rewriter_backend, ["multi_query", "core_content"])
    pipeline = RetrievalPipeline(Reranker("listwise", rewriter_backend), rewrite=rewriter)
    ranked = await pipeline.arun(QUESTION, retrieve)
    assert searched == [QUESTION, "How long do fleas live?", "What is a flea's lifespan?"]
    assert ranked.usage.calls == 2 + 1  # two rewriting calls, one listwise window
    assert sorted(ranked.ids) == sorted(doc["id"] for doc in corpus)
    messages = [event.message for event in ranked.trace.events]
    assert "core_content: no usable rewrite" in messages
    assert any(
        m.startswith("searched with 3 queries (2 rewrites, 2 rewriting calls)") for m in messages
    )


async def test_a_rewrite_function_that_returns_one_string_searches_it_once(
    rewriter_backend,
) -> None:
    """A plain rewrite function that returned a string was iterated character by character,
    so the retriever was asked once per letter."""
    from rankwise.errors import InputError
    from rankwise.pipeline import RetrievalPipeline

    corpus = relevance_docs([0.2, 0.8, 0.5])
    searched: list[str] = []

    async def retrieve(text: str) -> list[Candidate]:
        searched.append(text)
        return [Candidate(**doc) for doc in corpus]

    async def one_rewrite(query: str) -> str:
        return "flea lifespan"

    reranker = Reranker("listwise", rewriter_backend)
    ranked = await RetrievalPipeline(reranker, rewrite=one_rewrite).arun(QUESTION, retrieve)
    assert searched == [QUESTION, "flea lifespan"]
    assert sorted(ranked.ids) == sorted(doc["id"] for doc in corpus)

    async def not_queries(query: str) -> list[object]:
        return ["fine", None]

    with pytest.raises(InputError, match=r"returned \['fine', None\]; it must return a list"):
        await RetrievalPipeline(reranker, rewrite=not_queries).arun(QUESTION, retrieve)

    # a plain function works too ("object list can't be used in 'await' expression" before)
    searched.clear()
    quick = RetrievalPipeline(reranker, rewrite=lambda query: [query + " lifespan"])
    await quick.arun(QUESTION, retrieve)
    assert searched == [QUESTION, QUESTION + " lifespan"]


async def test_the_pipeline_takes_a_plain_retrieve_function_and_refuses_wrong_parts(
    rewriter_backend,
) -> None:
    """A plain retrieve function failed with "object list can't be used in 'await'
    expression" (a plain rewrite function already worked); a reranker or rewrite of the
    wrong kind was taken, and failed at the first query with an AttributeError or
    "'str' object is not callable"."""
    from rankwise.pipeline import RetrievalPipeline

    corpus = relevance_docs([0.2, 0.8, 0.5])
    searched: list[str] = []

    def retrieve(text: str) -> list[Candidate]:
        searched.append(text)
        return [Candidate(**doc) for doc in corpus]

    reranker = Reranker("listwise", rewriter_backend)
    pipeline = RetrievalPipeline(reranker, rewrite=lambda query: query + " lifespan")
    ranked = await pipeline.arun(QUESTION, retrieve)
    assert searched == [QUESTION, QUESTION + " lifespan"]
    assert sorted(ranked.ids) == sorted(doc["id"] for doc in corpus)
    rewritten: list[str] = []
    counting = RetrievalPipeline(reranker, rewrite=lambda q: rewritten.append(q) or [q + " x"])
    with pytest.raises(InputError, match="retrieve must be a function"):
        await counting.arun(QUESTION, corpus)  # type: ignore[arg-type]
    assert rewritten == []  # refused before the rewrite is asked for (and paid)
    with pytest.raises(InputError, match="reranker must be a rankwise Reranker"):
        RetrievalPipeline("listwise")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="rewrite must be a QueryRewriter, a function or None"):
        RetrievalPipeline(reranker, rewrite="multi_query")  # type: ignore[arg-type]


async def test_the_pipeline_searches_each_distinct_query_once(rewriter_backend) -> None:
    """A rewrite function's repeats (or an echo of the question) were each searched again,
    so the retriever was paid twice and that list counted twice in the fusion; a blank query
    reached the retriever before the Reranker refused it."""
    corpus = relevance_docs([0.2, 0.8, 0.5, 0.1])
    searched: list[str] = []

    async def retrieve(text: str) -> list[Candidate]:
        searched.append(text)
        return [Candidate(**doc) for doc in corpus]

    async def repetitive(query: str) -> list[str]:
        return ["Flea lifespan", " flea lifespan", query.upper(), "", "flea LIFESPAN", "cats"]

    reranker = Reranker("listwise", rewriter_backend)
    pipeline = RetrievalPipeline(reranker, rewrite=repetitive)
    ranked = await pipeline.arun(QUESTION, retrieve)
    assert searched == [QUESTION, "Flea lifespan", "cats"]
    assert sorted(ranked.ids) == sorted(doc["id"] for doc in corpus)
    searches = [e for e in ranked.trace.events if e.message.startswith("searched with")]
    assert [e.message for e in searches] == ["searched with 3 queries (2 rewrites)"]
    assert searches[0].data["queries"] == searched

    searched.clear()
    for blank in ("", "  \n"):
        with pytest.raises(InputError, match="query is empty"):
            await pipeline.arun(blank, retrieve)
    with pytest.raises(InputError, match="query must be a str, got int"):
        await pipeline.arun(7, retrieve)  # type: ignore[arg-type]
    assert searched == []


async def test_rewriting_counts_its_retries(stub) -> None:
    failures = {"left": 1}

    def handler(request) -> Reply:
        if failures["left"]:
            failures["left"] -= 1
            return Reply(status=503, body={"error": {"message": "busy"}})
        return scripted(request)

    stub.handler = handler
    backend = OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01)
    result = await QueryRewriter(backend, ["keywords"]).arewrite(QUESTION)
    assert result.queries == [QUESTION, "flea life cycle duration"]
    assert result.usage.calls == 1 and result.usage.retries == 1


REASONING = "<think>\nGQR would paraphrase it; KWR, PAR and CCE also fit. Fleas live\n"


async def test_a_reasoning_models_thoughts_are_not_searched_for(stub) -> None:
    """Reasoning models (Qwen3, DeepSeek-R1 distills) write ``<think>…</think>`` before
    the answer. The pseudo answer searched with the whole text, thoughts included, and the
    adaptive selection read strategy names from the thoughts, so it ran every one the
    model had thought about."""
    stub.handler = replying(
        {
            "choose query rewriting strategies": REASONING + "</think>\n\nPAR",
            "write a passage": REASONING + "</think>\n\nFleas live up to a year.",
        }
    )
    backend = OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01)
    result = await QueryRewriter(backend, ["adaptive"]).arewrite(QUESTION)
    assert result.rewrites[1:] == [Rewrite("Fleas live up to a year.", "pseudo_answer")]
    assert result.usage.calls == 2  # the selection, then the pseudo answer alone


ONE_QUERY_MARKERS = {
    "general": "clear and precise",
    "keywords": "search keywords",
    "core_content": "core request",
    "conversational": "standalone question",
}


@pytest.mark.parametrize(
    "answer",
    [
        REASONING + "</think>\n\n{query}",  # Qwen3, DeepSeek-R1
        "\n\n{query}",
        "Here is the rewritten query:\n\n**{query}**",
        "Sure! Here it is:\n{query}\n\nI kept the meaning.",
    ],
)
async def test_a_one_query_answer_after_a_blank_line_or_a_lead_in_is_read(stub, answer) -> None:
    """The strategies that write one query read only the answer's first paragraph. A
    reasoning model's answer starts with a blank line after ``</think>``, so that paragraph
    was empty and the rewrite lost: with Qwen3 the conversational rewrite never resolved a
    follow-up question. A lead-in paragraph ("Here is the rewritten query:") was lost the
    same way, and a lead-in line was searched for as part of the query."""
    queries = {strategy: f"how long do fleas live ({strategy})" for strategy in ONE_QUERY_MARKERS}
    stub.handler = replying(
        {marker: answer.format(query=queries[s]) for s, marker in ONE_QUERY_MARKERS.items()}
    )
    backend = OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01)
    rewriter = QueryRewriter(backend, list(ONE_QUERY_MARKERS))
    result = await rewriter.arewrite(QUESTION, chat_history="Human: my cat has fleas")
    assert result.rewrites == [
        Rewrite(QUESTION, "original"),
        *(Rewrite(query, strategy) for strategy, query in queries.items()),
    ]
    assert result.trace.fallbacks == []


def test_an_echo_or_a_run_of_lead_ins_is_no_rewrite_whatever_follows() -> None:
    """A one-query answer that repeats the question and then explains itself has no
    rewrite: the explanation is not a query. Nor has the embedded model's answer of
    headings, whose last one the token limit cut short."""
    from rankwise.rewrite import clean_lines

    echo = f"{QUESTION}?\n\nThe question is already clear."
    assert clean_lines(echo, multi_line=False, original=QUESTION) == []
    headings = "Rewritten query:\n\nClear and precise:\n\nRefinement:\n\nPrecision:\n\nPrec"
    assert clean_lines(headings, multi_line=False, original=QUESTION) == []


@pytest.mark.parametrize("strategy", ["pseudo_answer", "multi_query", "keywords"])
async def test_thoughts_cut_short_by_the_token_limit_are_no_rewrite(stub, strategy) -> None:
    """When ``max_tokens`` ends the answer inside the thoughts, no answer was written; the
    thoughts were searched for as if they were the rewrite."""
    stub.handler = lambda request: Reply(body=completion(REASONING))
    backend = OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01)
    result = await QueryRewriter(backend, [strategy]).arewrite(QUESTION)
    assert result.queries == [QUESTION]
    assert "no usable rewrite" in result.trace.fallbacks[0].message


async def test_a_selection_cut_short_in_its_thoughts_falls_back_to_the_general_rewrite(
    stub,
) -> None:
    stub.handler = replying(
        {"choose query rewriting strategies": REASONING}, otherwise="How long does a flea live?"
    )
    backend = OpenAIBackend("stub", base_url=stub.base_url, backoff=0.01)
    result = await QueryRewriter(backend, ["adaptive"]).arewrite(QUESTION)
    assert [r.strategy for r in result.rewrites] == ["original", "general"]
    assert "strategy selection unreadable" in result.trace.fallbacks[0].message
