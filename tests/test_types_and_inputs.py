from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rankwise import Candidate, DuplicateIdError, InputError, RankedList
from rankwise.adapters import CandidateKeys
from rankwise.inputs import normalise_documents, normalise_query
from rankwise.types import RankedCandidate


def _item(id_: str, rank: int, score: float) -> RankedCandidate:
    return RankedCandidate(id=id_, text=id_, score=score, rank=rank, input_rank=rank)


def test_strings_get_positional_ids() -> None:
    docs = normalise_documents(["a", "b", ""])
    assert [d.id for d in docs] == ["0", "1", "2"]
    assert [d.text for d in docs] == ["a", "b", ""]


def test_dicts_keep_id_score_and_metadata() -> None:
    docs = normalise_documents(
        [
            {"id": 7, "text": "x", "score": 1.5, "metadata": {"source": "s"}},
            {"docid": "d", "text": "y"},
        ]
    )
    assert docs[0] == Candidate(id="7", text="x", score=1.5, metadata={"source": "s"})
    assert docs[1].id == "d"
    # a LangChain Document's fields, as a dict (Document.model_dump())
    [dumped] = normalise_documents([{"id": "a", "page_content": "z", "metadata": {}}])
    assert (dumped.id, dumped.text) == ("a", "z")


def test_candidates_pass_through() -> None:
    candidate = Candidate(id="c", text="t")
    assert normalise_documents([candidate]) == [candidate]


def test_duplicate_ids_are_an_error_that_names_them() -> None:
    with pytest.raises(DuplicateIdError, match="documents 0 and 2 share the id 'a'"):
        normalise_documents(
            [{"id": "a", "text": "1"}, {"id": "b", "text": "2"}, {"id": "a", "text": "3"}]
        )


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([{"text": 5}], "text of type int"),
        ([{"body": "x"}], "has no 'text' key"),
        ([3.0], "document 0 is a float"),
        ("just a string", "not a single str"),
        (None, "documents is None"),
        ([{"text": "x", "score": "high"}], "non-numeric score"),
    ],
)
def test_bad_documents_raise_input_error(documents: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        normalise_documents(documents)  # type: ignore[arg-type]


def test_query_must_be_text() -> None:
    with pytest.raises(InputError, match="query must be a str"):
        normalise_query(["q"])


@given(st.lists(st.text(max_size=20), max_size=30))
def test_normaliser_keeps_every_document_in_order(texts: list[str]) -> None:
    docs = normalise_documents(texts)
    assert [d.text for d in docs] == texts
    assert len({d.id for d in docs}) == len(texts)


def test_ranked_list_rejects_duplicates_and_bad_ranks() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        RankedList(
            query="q",
            method="m",
            model="x",
            score_kind="rank",
            items=[_item("a", 1, 1.0), _item("a", 2, 0.5)],
        )
    with pytest.raises(ValueError, match="ranks must be"):
        RankedList(
            query="q",
            method="m",
            model="x",
            score_kind="rank",
            items=[_item("a", 2, 1.0), _item("b", 1, 0.5)],
        )


def _three_scored(top_n: int | None, score_threshold: float | None) -> RankedList:
    """A list of "a", "b", "c" with probabilities 0.9, 0.6 and 0.2."""
    return RankedList(
        query="q",
        method="m",
        model="x",
        score_kind="probability",
        items=[_item("a", 1, 0.9), _item("b", 2, 0.6), _item("c", 3, 0.2)],
        top_n=top_n,
        score_threshold=score_threshold,
    )


def test_selected_and_cut_partition_the_list() -> None:
    ranked = _three_scored(top_n=2, score_threshold=0.5)
    assert [i.id for i in ranked.selected] == ["a", "b"]
    assert [i.id for i in ranked.cut] == ["c"]
    ranked.score_threshold = 0.7
    assert [i.id for i in ranked.selected] == ["a"]
    assert [i.id for i in ranked.cut] == ["b", "c"]
    ranked.score_threshold = 0.6  # a score at the threshold passes it
    assert [i.id for i in ranked.selected] == ["a", "b"]
    # a placeholder score (no text, or NaN from the model)
    ranked.items[1] = ranked.items[1].model_copy(update={"judged": False})
    assert [i.id for i in ranked.selected] == ["a"]
    ranked.abstained = True
    assert ranked.selected == [] and len(ranked.cut) == 3


def test_the_agent_tool_answer_honours_the_threshold() -> None:
    """It cut only by top_n, so an agent got passages below the configured threshold (and
    ``top_n=0`` gave every passage)."""
    ranked = _three_scored(top_n=5, score_threshold=0.5)

    def ids(answer: dict) -> list[str]:
        return [result["id"] for result in answer["results"]]

    assert ids(ranked.as_tool_result()) == ["a", "b"]  # the list's own top_n and threshold
    assert ids(ranked.as_tool_result(top_n=1)) == ["a"]
    assert ids(ranked.as_tool_result(top_n=3)) == ["a", "b"]  # "c" is below the threshold
    assert ids(ranked.as_tool_result(top_n=0)) == []
    ranked.score_threshold = None
    assert ids(ranked.as_tool_result(top_n=3)) == ["a", "b", "c"]
    assert ranked.as_tool_result()["abstain_reason"] is None
    ranked.abstained, ranked.abstain_reason = True, "confidence 0.1 below 0.5"
    assert ranked.as_tool_result(top_n=3)["results"] == []
    assert ranked.as_tool_result()["abstained"] is True
    assert ranked.as_tool_result()["abstain_reason"] == "confidence 0.1 below 0.5"


def test_the_agent_tool_answer_refuses_a_top_n_that_is_not_a_count() -> None:
    """top_n=-1 sliced off the last passage instead of failing; 2.5 raised a TypeError."""
    ranked = _three_scored(top_n=None, score_threshold=None)
    with pytest.raises(InputError, match="top_n must be >= 0, got -1"):
        ranked.as_tool_result(top_n=-1)
    with pytest.raises(InputError, match=r"top_n must be a whole number or None, got 2\.5"):
        ranked.as_tool_result(top_n=2.5)
    assert len(ranked.as_tool_result(top_n=2)["results"]) == 2


def test_a_reranker_shows_what_it_will_do() -> None:
    from rankwise import OpenAIBackend, Reranker

    assert repr(Reranker(top_n=3)) == (
        "Reranker('pointwise-qlm', backend='local:default (loads on first use)', top_n=3)"
    )
    api = OpenAIBackend("gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    shown = repr(Reranker("pointwise", api, score_threshold=0.5, max_calls=10))
    assert shown == (
        "Reranker('pointwise', backend='openai:gpt-4o-mini', score_threshold=0.5, max_calls=10)"
    )


def test_candidate_keys_give_one_key_to_one_document_across_lists() -> None:
    keys = CandidateKeys()
    # a copy in one list is numbered; a literal "x#2" takes the next free number
    assert keys.assign([("x", "A"), ("x", "A"), ("x#2", "B")]) == ["x", "x#2", "x#2#2"]
    # a later list: the same document keeps its key, another document with its id does not
    assert keys.assign([("x", "C"), ("x", "A"), ("x#2", "B")]) == ["x#3", "x", "x#2#2"]


@given(st.lists(st.lists(st.tuples(st.sampled_from("xy"), st.sampled_from("ABC")), max_size=6)))
def test_candidate_keys_are_unique_per_list_and_name_one_text(lists) -> None:
    keys, named = CandidateKeys(), {}
    for documents in lists:
        assigned = keys.assign(documents)
        assert len(set(assigned)) == len(assigned) == len(documents)
        for key, (_, text) in zip(assigned, documents, strict=True):
            assert named.setdefault(key, text) == text
