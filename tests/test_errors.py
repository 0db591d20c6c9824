"""Bad input and impossible configurations raise typed errors with useful messages."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from rankwise import (
    CapabilityError,
    DuplicateIdError,
    InputError,
    OpenAIBackend,
    PromptNotFoundError,
    Reranker,
    UnknownMethodError,
)


def test_unknown_method_suggests_the_closest() -> None:
    with pytest.raises(UnknownMethodError, match="Did you mean 'pointwise'"):
        Reranker("pointwize", OpenAIBackend("m", base_url="http://127.0.0.1:9/v1"))


def test_bad_method_option_is_reported() -> None:
    """The message named Python's ``__init__`` and not the options the method has."""
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(
        UnknownMethodError,
        match="bad options for method 'pointwise': 'windw'; its options are prompt, "
        "max_passage_tokens, yes, no",
    ):
        Reranker("pointwise", backend, windw=3)


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("pointwise", {"max_passage_tokens": 0}, "max_passage_tokens must be a whole number"),
        ("prp-allpair", {"max_passage_tokens": -5}, "max_passage_tokens must be a whole number"),
        ("setwise", {"max_passage_tokens": "lots"}, "max_passage_tokens must be a whole number"),
        ("listwise", {"max_words": 0}, "max_words must be a whole number"),
        ("listwise", {"max_new_tokens": 0}, "max_new_tokens must be a whole number"),
        ("prp-heapsort", {"top_k": 2.5}, "top_k must be a whole number; got 2.5"),
        ("pointwise", {"yes": ""}, "two different, non-empty labels"),
        ("pointwise", {"yes": "No"}, "two different, non-empty labels"),
        ("listwise", {"window": 5, "step": 10}, "step 10 is larger than window 5"),
        ("first", {"window": 4, "step": 6}, "step 6 is larger than window 4"),
    ],
)
def test_options_that_would_rank_nothing_or_skip_passages_are_refused(
    method, options, message
) -> None:
    """All were accepted: a passage cut to nothing or fewer tokens, or windows that never
    look at the passages between them."""
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match=message):
        Reranker(method, backend, **options)


def test_logprob_method_on_a_backend_without_logprobs_names_alternatives() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", logprobs=False)
    with pytest.raises(CapabilityError, match="needs logprobs"):
        Reranker("pointwise", backend)


def test_query_likelihood_needs_prompt_logprobs() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(
        CapabilityError, match=r"prompt_logprobs.*Methods that work with it: pointwise"
    ):
        Reranker("pointwise-qlm", backend)


def test_threshold_on_an_order_only_method_is_refused() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match="log_likelihood"):
        Reranker("pointwise-qlm", backend, score_threshold=0.3)


def test_no_api_key_and_no_base_url(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(Exception, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")


async def test_input_errors_surface_before_any_call(stub) -> None:
    reranker = Reranker("pointwise", OpenAIBackend("m", base_url=stub.base_url))
    with pytest.raises(DuplicateIdError):
        await reranker.arerank("q", [{"id": 1, "text": "a"}, {"id": "1", "text": "b"}])
    with pytest.raises(InputError, match="text of type"):
        await reranker.arerank("q", [{"text": None}])
    with pytest.raises(InputError, match="query is empty"):
        await reranker.arerank("  ", ["a", "b"])
    assert stub.requests == []


def test_the_local_backend_without_torch_says_which_extra_to_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
        "import rankwise.backends.transformers\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "needs the 'local' extra: pip install 'rankwise[local]'" in result.stderr


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("listwise", {"window": 1}, "window must be in"),
        ("first", {"step": 0}, "step >= 1"),
        ("setwise", {"children": 0}, "children must be between 1 and 25, got 0"),
        # a parent and 26 children need 27 labels, one more than the alphabet
        ("setwise", {"children": 26}, "children must be between 1 and 25, got 26"),
        ("prp-heapsort", {"top_k": 0}, "top_k must be >= 1, got 0"),
        ("prp-allpair", {"ties": "coin"}, "ties must be"),
    ],
)
def test_out_of_range_method_options_are_input_errors(method, options, message) -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match=message):
        Reranker(method, backend, **options)


def test_setwise_takes_as_many_children_as_the_alphabet_labels() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    assert Reranker("setwise", backend, children=25).method.children == 25  # labels A to Z


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a whole number of at least 1, got 0"),
        # 2.5 was accepted (a semaphore of 2.5 lets three calls in); "4" raised TypeError
        ({"concurrency": 2.5}, r"concurrency must be a whole number of at least 1, got 2\.5"),
        ({"concurrency": "4"}, "concurrency must be a whole number of at least 1, got '4'"),
        ({"timeout": 0}, "timeout must be more than 0 seconds"),
        ({"timeout": "5"}, "timeout must be more than 0 seconds, got '5'"),  # was a TypeError
        ({"backoff": float("nan")}, "backoff must be >= 0"),  # was accepted
        ({"top_logprobs": 2.5}, r"top_logprobs must be in \[0, 20\]"),  # was accepted
        ({"max_context": 0}, "max_context must be a whole number of at least 1 token, got 0"),
        ({"max_retries": -1}, "max_retries must be a whole number of at least 0"),
        ({"max_retries": 1.5}, r"max_retries must be a whole number .*\(0: no retries\), got 1\.5"),
        ({"backoff": 2.0, "max_backoff": 1.0}, "max_backoff >= backoff"),
        ({"top_logprobs": 21}, r"top_logprobs must be in \[0, 20\]"),
    ],
)
def test_openai_backend_options_no_request_could_use_are_input_errors(options, message) -> None:
    with pytest.raises(InputError, match=message):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", **options)


def test_evaluation_data_refuses_depths_and_limits_that_would_drop_candidates() -> None:
    from rankwise.evaluate import load_queries
    from tests.conftest import DL19

    record = load_queries(DL19 / "bm25-top100.jsonl", 1)[0]
    assert len(record.documents(5)) == 5
    assert len(record.documents()) == len(record.candidates)
    with pytest.raises(InputError, match="depth must be at least 1"):
        record.documents(-5)
    with pytest.raises(InputError, match="limit must be at least 1"):
        load_queries(DL19 / "bm25-top100.jsonl", 0)


def test_evaluation_files_with_a_bad_line_name_it(tmp_path) -> None:
    """A qrels line with a relevance like '1.0' raised a bare int() ValueError, and a
    candidate without a docid loaded, then raised KeyError at the first rerank."""
    from rankwise.evaluate import load_qrels, load_queries

    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d1 1\nq1 0 d2 1.0\n")
    with pytest.raises(InputError, match=r"qrels.txt:2: the relevance '1.0' is not a whole"):
        load_qrels(qrels)
    qrels.write_text("q1 0 d1 2\nq1 0 d2 0\n")
    assert load_qrels(qrels) == {"q1": {"d1": 2, "d2": 0}}
    queries = tmp_path / "queries.jsonl"
    good = {"qid": "q1", "query": "q", "candidates": [{"docid": "d1", "text": "a"}]}
    bad = {
        "qid": "q2",
        "query": "q",
        "candidates": [{"docid": "d1", "text": "a"}, {"id": "d2", "text": "b"}],
    }
    queries.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert [r.qid for r in load_queries(queries, 1)] == ["q1"]  # stops before the bad line
    with pytest.raises(InputError, match=r"queries.jsonl:2: candidate 1 has no docid"):
        load_queries(queries)
    queries.write_text(json.dumps({**good, "candidates": ["d1"]}) + "\n")
    with pytest.raises(InputError, match=r"queries.jsonl:1: candidate 0 has no docid"):
        load_queries(queries)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        # loaded, then ranked as an empty passage with no word of why
        (
            [{"qid": "q1", "query": "q", "candidates": [{"docid": "d1"}]}],
            r"queries.jsonl:1: candidate 0 \(docid 'd1'\) has no text string",
        ),
        (
            [{"qid": "q1", "query": "q", "candidates": [{"docid": 7, "text": ["a"]}]}],
            r"queries.jsonl:1: candidate 0 \(docid '7'\) has no text string",
        ),
        # failed at its rerank, after every query before it had been paid for, naming no line
        (
            [
                {"qid": "q1", "query": "q", "candidates": [{"docid": "d1", "text": "a"}]},
                {"qid": "q2", "query": "q", "candidates": [{"docid": 3, "text": "a"}] * 2},
            ],
            r"queries.jsonl:2: candidates 0 and 1 share the docid '3'",
        ),
        (
            [
                {
                    "qid": "q1",
                    "query": "q",
                    "candidates": [{"docid": "d", "text": "a", "score": "hi"}],
                }
            ],
            r"queries.jsonl:1: candidate 0 \(docid 'd'\) has the score 'hi'; give a number",
        ),
        # a blank query failed at its own rerank, after the queries before it were paid for
        (
            [
                {"qid": "q1", "query": "q", "candidates": [{"docid": "d1", "text": "a"}]},
                {"qid": "q2", "query": "  ", "candidates": [{"docid": "d1", "text": "a"}]},
            ],
            r"queries.jsonl:2: qid 'q2' has the query '  '; give the question as text",
        ),
        # null was ranked as the query 'None', and a text of candidates as its characters
        (
            [{"qid": "q1", "query": None, "candidates": []}],
            r"queries.jsonl:1: qid 'q1' has the query None",
        ),
        (
            [{"qid": "q1", "query": "q", "candidates": "d1"}],
            r"queries.jsonl:1: qid 'q1' has candidates of type str; give a list",
        ),
        (  # two null qids were both 'None', and the second named as a repeat of the first
            [{"qid": None, "query": "q", "candidates": []}] * 2,
            r"queries.jsonl:1: the qid None is not a name",
        ),
        # two lines for one qid gave a run with the query twice, and eval counted it twice
        (
            [
                {"qid": 5, "query": "q", "candidates": []},
                {"qid": "5", "query": "r", "candidates": []},
            ],
            r"queries.jsonl:2: qid '5' is also on line 1",
        ),
    ],
)
def test_queries_files_are_checked_line_by_line_as_they_are_read(tmp_path, lines, message):
    from rankwise.evaluate import load_queries

    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(InputError, match=message):
        load_queries(queries)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch": 0}, "max_batch must be a whole number of at least 1, got 0"),
        ({"max_batch_tokens": 0}, "max_batch_tokens must be a whole number of at least 1, got 0"),
        ({"max_queue": 0}, "max_queue must be a whole number of at least 1, got 0"),
        # these passed the check and failed later (2.5, True, NaN) or raised TypeError ('100')
        ({"max_batch": 2.5}, r"max_batch must be a whole number of at least 1, got 2\.5"),
        ({"max_queue": True}, "max_queue must be a whole number of at least 1, got True"),
        ({"max_batch_tokens": "100"}, "max_batch_tokens must be a whole number .*got '100'"),
        (
            {"min_shared_prefix": -3},
            r"min_shared_prefix must be a whole number of at least 0 \(0: off\), got -3",
        ),
        ({"min_shared_prefix": 1.5}, r"min_shared_prefix must be a whole number .*got 1\.5"),
        ({"prefix_cache_mb": -1}, r"prefix_cache_mb must be a number of at least 0 \(0: off\)"),
        ({"prefix_cache_mb": float("nan")}, "prefix_cache_mb must be a number .*got nan"),
        ({"dtype": "float64"}, "dtype must be one of float32, bfloat16, float16, got 'float64'"),
        ({"device": "gpu0"}, "unknown device 'gpu0'"),
        ({"device": "meta", "cuda_graphs": True}, "cuda_graphs needs a CUDA device"),
        # The legacy spelling was ignored without a word (the model loaded in float32), and
        # the current one failed inside transformers with "multiple values for 'dtype'".
        ({"model_kwargs": {"torch_dtype": "bfloat16"}}, r"model_kwargs sets torch_dtype.*dtype="),
        ({"model_kwargs": {"dtype": "bfloat16"}}, r"model_kwargs sets dtype.*dtype="),
        ({"model_kwargs": ["attn_implementation"]}, "model_kwargs must map"),
    ],
)
def test_local_backend_options_are_checked_before_the_model_loads(options, message) -> None:
    pytest.importorskip("torch")
    from rankwise.backends.transformers import TransformersBackend

    with pytest.raises(InputError, match=message):
        TransformersBackend("/nonexistent/model/folder", **options)


def test_a_device_this_machine_lacks_is_named() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    from rankwise.backends.transformers import TransformersBackend

    with pytest.raises(InputError, match="device 'cuda' is not available on this machine"):
        TransformersBackend("/nonexistent/model/folder", device="cuda")


def test_top_n_and_threshold_that_would_cut_silently_are_refused() -> None:
    """``top_n=-1`` kept all but the last candidate, and a NaN threshold kept none."""
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match="top_n must be >= 0, got -1"):
        Reranker("listwise", backend, top_n=-1)
    with pytest.raises(InputError, match=r"top_n must be a whole number or None, got 2\.5"):
        Reranker("listwise", backend, top_n=2.5)
    with pytest.raises(InputError, match=r"score_threshold must be a number.*got nan"):
        Reranker("pointwise", backend, score_threshold=float("nan"))
    with pytest.raises(InputError, match=r"probabilities in \[0, 1\].* 1\.5 would keep nothing"):
        Reranker("pointwise", backend, score_threshold=1.5)
    with pytest.raises(InputError, match=r"-0\.2 would keep everything"):
        Reranker("pointwise", backend, score_threshold=-0.2)
    for edge in (0.0, 1.0):
        assert Reranker("pointwise", backend, score_threshold=edge).score_threshold == edge
    reranker = Reranker("listwise", backend)
    with pytest.raises(InputError, match="top_n must be >= 0, got -1"):
        reranker.rerank("q", ["a", "b"], top_n=-1)  # refused before any call


def test_a_cache_path_that_cannot_hold_a_cache_is_named(tmp_path) -> None:
    from rankwise.cache import ResponseCache

    with pytest.raises(InputError, match="is a folder; pass a file path such as"):
        ResponseCache(tmp_path)
    not_a_database = tmp_path / "notes.sqlite"
    not_a_database.write_text("these are notes, not a database\n" * 100)
    with pytest.raises(InputError, match=r"cannot open the response cache .*not a database"):
        ResponseCache(not_a_database)
    assert not_a_database.read_text().startswith("these are notes")  # left as it was
    other_tables = tmp_path / "app.sqlite"
    with sqlite3.connect(other_tables) as connection:
        connection.execute("CREATE TABLE responses (id INTEGER, body TEXT)")
        connection.execute("INSERT INTO responses VALUES (1, 'kept')")
    connection.close()
    with pytest.raises(InputError, match=r"'responses' table that is not a rankwise cache"):
        ResponseCache(other_tables)  # it failed at the first lookup: "no such column: value"
    with sqlite3.connect(other_tables) as connection:
        assert connection.execute("SELECT * FROM responses").fetchall() == [(1, "kept")]
    connection.close()


async def test_rewriting_fusion_and_calibration_misuse_raise_input_errors() -> None:
    """These raised bare ValueErrors (or ran on an empty question); they are InputErrors
    now, like the rest of the library's usage errors, so one except clause catches them."""
    from rankwise.abstain import Calibrator
    from rankwise.fusion import reciprocal_rank_fusion
    from rankwise.rewrite import QueryRewriter
    from rankwise.types import Candidate

    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match="unknown strategies \\['hyde'\\]"):
        QueryRewriter(backend, ["hyde"])
    with pytest.raises(InputError, match="question is empty"):
        await QueryRewriter(backend).arewrite("   ")  # refused before any call
    ranking = [Candidate(id="a", text="a")]
    with pytest.raises(InputError, match="2 weights for 1 rankings"):
        reciprocal_rank_fusion([ranking], weights=[1.0, 2.0])
    with pytest.raises(InputError, match="not fitted"):
        Calibrator().predict([0.5, 0.2])


def test_calibration_refuses_reference_data_it_cannot_fit() -> None:
    """A NaN metric or score made every weight NaN, so the calibrator never abstained; two
    decision rules at once kept one silently; a count mismatch named ridge_fit."""
    from rankwise.abstain import Calibrator

    scores = [[0.9, 0.1], [0.5, 0.4], [0.2, 0.1]]
    with pytest.raises(InputError, match="3 score lists for 2 metrics"):
        Calibrator().fit(scores, [0.8, 0.2])
    with pytest.raises(InputError, match="0 score lists for 0 metrics"):
        Calibrator().fit([], [])
    with pytest.raises(InputError, match="reference query 1 has a value that is not a finite"):
        Calibrator().fit(scores, [0.8, float("nan"), 0.1])
    with pytest.raises(InputError, match="reference query 2 has a value that is not a finite"):
        Calibrator().fit([*scores[:2], [float("-inf")]], [0.8, 0.3, 0.1])
    with pytest.raises(InputError, match="abstention_rate or min_quality, not both"):
        Calibrator().fit(scores, [0.8, 0.3, 0.1], abstention_rate=0.5, min_quality=0.2)
    fitted = Calibrator(n=2).fit(scores, [0.8, 0.3, 0.1], abstention_rate=0.34)
    assert all(math.isfinite(w) for w in fitted.weights)
    assert fitted.decide([0.2, 0.1])[0] and not fitted.decide([0.9, 0.1])[0]


def test_a_file_that_holds_no_calibrator_is_named(tmp_path) -> None:
    """Such files raised TypeError or JSONDecodeError from inside the dataclass."""
    from rankwise.abstain import Calibrator

    saved = tmp_path / "calibrator.json"
    fitted = Calibrator(n=2).fit([[0.9, 0.1], [0.5, 0.4]], [0.8, 0.2])
    fitted.save(saved)
    assert Calibrator.load(saved).predict([0.9, 0.1]) == fitted.predict([0.9, 0.1])
    for name, text in [
        ("prices.json", '{"gpt-4o-mini": {"input": 0.15}}'),
        ("notes.json", "not json"),
        ("empty.json", "{}"),
        ("cut.json", '{"n": 10, "weights": [0.1, 0.2]}'),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=f"{name}"):
            Calibrator.load(tmp_path / name)
    with pytest.raises(InputError, match="cannot read a calibrator from"):
        Calibrator.load(tmp_path / "missing.json")


async def test_a_fusion_constant_or_weight_that_breaks_the_ranks_is_refused() -> None:
    """k=-1 raised ZeroDivisionError; a negative k gave negative scores that reversed the
    order; a NaN weight left the order to chance."""
    from rankwise.fusion import reciprocal_rank_fusion
    from rankwise.pipeline import RetrievalPipeline
    from rankwise.types import Candidate

    lists = [[Candidate(id="a", text="a"), Candidate(id="b", text="b")]] * 2
    for k in (-1, -30, float("nan"), float("inf"), "60", True):
        with pytest.raises(InputError, match="RRF constant k must be a number of at least 0"):
            reciprocal_rank_fusion(lists, k=k)
    with pytest.raises(InputError, match=r"RRF weights must be finite numbers, got \[1.0, nan\]"):
        reciprocal_rank_fusion(lists, weights=[1.0, float("nan")])
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match="got -5"):
        RetrievalPipeline(Reranker("pointwise", backend), rrf_k=-5)
    with pytest.raises(InputError, match=r"rankings\[0\] is a Candidate, not a ranked list"):
        reciprocal_rank_fusion(lists[0])  # one flat list: AttributeError on a tuple before
    with pytest.raises(InputError, match=r"rankings\[1\]\[0\] is a str; each ranked list"):
        reciprocal_rank_fusion([lists[0], ["a", "b"]])
    fused = reciprocal_rank_fusion(lists, k=0)  # 1/rank, allowed
    assert [c.id for c in fused] == ["a", "b"] and [c.score for c in fused] == [2.0, 1.0]


def test_an_unknown_prompt_name_fails_when_the_reranker_is_built() -> None:
    """It failed at the first rerank, after the model had loaded."""
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(PromptNotFoundError, match="no prompt template named 'nope'"):
        Reranker("pointwise", backend, prompt="nope")
    assert Reranker("pointwise", backend, prompts={"mine": "{query} {text}"}, prompt="mine")


def test_an_abstention_rule_that_could_never_fire_is_refused() -> None:
    """A NaN threshold never abstained (every comparison with NaN is false), and top_n=0
    judged an empty list."""
    from rankwise.abstain import Abstention

    with pytest.raises(InputError, match="threshold must be a number, got nan"):
        Abstention("max", float("nan"))
    with pytest.raises(InputError, match="top_n must be a whole number of at least 1, got 0"):
        Abstention("max", 0.5, top_n=0)
    assert Abstention("margin", 0.1, top_n=3).decide([0.9, 0.85, 0.1]) == (
        True,
        pytest.approx(0.05),
    )


def test_serving_a_gguf_that_cannot_start_says_why_before_starting(tmp_path, monkeypatch) -> None:
    """A wrong path started the server anyway, which exited with its own traceback; with
    llama-cpp-python missing, the error quoted 'No module named llama_cpp'."""
    import importlib.util

    from rankwise import ModelNotFoundError
    from rankwise.errors import BackendUnavailableError
    from rankwise.llamacpp import serve_gguf

    with pytest.raises(ModelNotFoundError, match=r"no GGUF file at .*model\.gguf"):
        with serve_gguf(tmp_path / "model.gguf"):
            pass
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llama_cpp" else real_find_spec(name, *args),
    )
    with pytest.raises(BackendUnavailableError, match=r"pip install 'llama-cpp-python\[server\]'"):
        with serve_gguf():
            pass


def test_limits_that_are_not_numbers_of_the_right_kind_are_refused() -> None:
    """A string threshold or deadline raised TypeError; max_calls=2.5 was accepted, and a
    NaN max_tokens never stopped anything (every comparison with NaN is false)."""
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match=r"score_threshold must be a number.*got '0\.5'"):
        Reranker("pointwise", backend, score_threshold="0.5")
    for deadline in ("5", 0, -1, float("nan"), True):
        with pytest.raises(InputError, match="deadline must be a positive number of seconds"):
            Reranker("pointwise", backend, deadline=deadline)
    for name in ("max_calls", "max_tokens"):
        for limit in (2.5, float("nan"), "10", True):
            with pytest.raises(InputError, match=f"{name} must be a whole number"):
                Reranker("pointwise", backend, **{name: limit})
        with pytest.raises(
            InputError, match=f"{name} must be a whole number of at least 0, got -1"
        ):
            Reranker("pointwise", backend, **{name: -1})
    kept = Reranker("pointwise", backend, deadline=2.5, max_calls=0, max_tokens=100)
    assert (kept.deadline, kept.max_calls, kept.max_tokens) == (2.5, 0, 100)


def test_something_that_is_no_backend_is_refused_when_built() -> None:
    """An int, a dict or a misspelt keyword's value as the backend raised AttributeError at
    the first call ('int' object has no attribute 'capabilities' / 'generate')."""
    from langchain_rankwise import RankwiseRerank

    from rankwise.rewrite import QueryRewriter

    for bad in (5, {"model": "gpt-4o-mini"}):
        with pytest.raises(InputError, match="backend must be a rankwise backend"):
            Reranker("listwise", bad)
        with pytest.raises(InputError, match="backend must be a rankwise backend"):
            QueryRewriter(bad)
        with pytest.raises(InputError, match="llm= takes a LangChain chat model"):
            RankwiseRerank(llm=bad)


async def test_a_rewriter_takes_a_question_string_and_a_local_model_name() -> None:
    from rankwise.rewrite import QueryRewriter

    rewriter = QueryRewriter("default", "keywords")  # nothing loads until it is used
    assert rewriter._backend is None
    with pytest.raises(InputError, match="query must be a str, got int"):
        await rewriter.arewrite(5)
    with pytest.raises(InputError, match="chat_history must be a str, got list"):
        await rewriter.arewrite("q", chat_history=["user: hi"])
    assert rewriter._backend is None


def test_a_local_path_that_holds_no_model_says_so(tmp_path, monkeypatch) -> None:
    """An empty folder failed with transformers' tokenizer-conversion ValueError, a missing
    folder and a JSON file were tried as hub ids, and '~' was not expanded."""
    from rankwise import ModelNotFoundError
    from rankwise.backends.transformers import TransformersBackend

    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes.json"
    notes.write_text("{}")
    cases = [
        (str(empty), "holds no model \\(no config.json\\)"),
        (str(notes), "is a file but not a .gguf one"),
        (str(tmp_path / "absent"), "there is no folder"),
        ("./no/such/model", "there is no folder './no/such/model'"),
    ]
    for model, message in cases:
        with pytest.raises(ModelNotFoundError, match=message):
            TransformersBackend(model)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=f"the folder '{empty}' holds no model"):
        TransformersBackend("~/empty")


def test_a_hub_id_missing_from_the_offline_cache_says_what_to_pass() -> None:
    """The most common offline mistake: a hub id that was never downloaded. The error names
    the id and the choices, and transformers' own sentence does not end in a second period.
    The suite runs offline (conftest sets HF_HUB_OFFLINE before huggingface_hub reads it)."""
    from rankwise import ModelNotFoundError
    from rankwise.backends.transformers import TransformersBackend

    with pytest.raises(ModelNotFoundError) as raised:
        TransformersBackend("rankwise-tests/no-such-model")
    message = str(raised.value)
    assert message.startswith("could not load 'rankwise-tests/no-such-model': ")
    assert "a hub id that is in the local Hugging Face cache (offline)" in message
    assert ".." not in message


@pytest.mark.parametrize("name", ["gpt-4o-mini", "llama3.1:8b"])
def test_an_api_model_name_given_as_a_local_model_says_how_to_reach_the_api(name) -> None:
    """``Reranker(backend="gpt-4o-mini")``, or an Ollama name, is read as a local model: the
    message listed only the local choices, not how to reach the model over its API."""
    from rankwise import ModelNotFoundError

    with pytest.raises(ModelNotFoundError) as raised:
        Reranker("pointwise", name).backend  # noqa: B018 - loads the model
    message = str(raised.value)
    assert f"could not load {name!r}" in message
    assert f"pass OpenAIBackend({name!r}, base_url=...) as the backend" in message
    with pytest.raises(ModelNotFoundError) as hub:  # an org/name hub id gets no such hint
        Reranker("pointwise", "rankwise-tests/no-such-model").backend  # noqa: B018
    assert "OpenAIBackend" not in str(hub.value)


def test_a_framework_document_passed_to_the_core_names_its_adapter() -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from rankwise.inputs import normalise_documents

    with pytest.raises(InputError, match=r"is a Document;.*langchain_rankwise\.RankwiseRerank"):
        normalise_documents([Document(page_content="fleas")])
    node = TextNode(text="fleas")
    for given in (node, NodeWithScore(node=node, score=0.5)):
        with pytest.raises(InputError, match=r"llama_index\.postprocessor\.rankwise"):
            normalise_documents([given])
    with pytest.raises(InputError, match=r"is a int; expected a str, a Candidate or a dict .*key$"):
        normalise_documents([3])


@pytest.mark.parametrize("value", ["False", "no", 0, 1, None])
def test_a_flag_option_takes_true_or_false_only(value) -> None:
    """``calibrated`` was taken as the truth of whatever it was given, so the command line's
    ``-o calibrated=False`` (Python's spelling, not JSON's) turned calibration on."""
    with pytest.raises(InputError, match=r"calibrated must be True or False \(on the command"):
        Reranker("pointwise-qlm", "default", calibrated=value)


def test_the_command_line_refuses_a_flag_spelt_as_python_does(tmp_path, capsys) -> None:
    from rankwise.cli import main
    from tests.conftest import DL19

    output = tmp_path / "run.trec"
    args = ["rerank", "--data", str(DL19 / "bm25-top100.jsonl"), "--output", str(output)]
    assert main([*args, "--method", "pointwise-qlm", "-o", "calibrated=False"]) == 2
    assert not output.exists()
    assert "-o calibrated=true or -o calibrated=false" in capsys.readouterr().err


def _framework_backend(kind: str, **options: object):  # type: ignore[no-untyped-def]
    """A LangChain (``ChatOpenAI``) or LlamaIndex (``MockLLM``) backend built with
    ``options``; no call is made."""
    if kind == "langchain":
        from langchain_openai import ChatOpenAI

        from rankwise.backends.langchain import LangChainBackend

        chat = ChatOpenAI(model="m", base_url="http://127.0.0.1:9/v1", api_key="unused")  # type: ignore[arg-type]
        return LangChainBackend(chat, **options)  # type: ignore[arg-type]
    from llama_index.core.llms.mock import MockLLM

    from rankwise.backends.llamaindex import LlamaIndexBackend

    return LlamaIndexBackend(MockLLM(), **options)  # type: ignore[arg-type]


def _flagged(kind: str, value: object):  # type: ignore[no-untyped-def]
    """Build ``kind`` with ``value`` for one of its True-or-False options."""
    url = "http://127.0.0.1:9/v1"
    if kind == "openai":
        return OpenAIBackend("m", base_url=url, logprobs=value)  # type: ignore[arg-type]
    if kind in ("langchain", "llamaindex"):
        return _framework_backend(kind, logprobs=value)
    if kind == "rewriter":
        from rankwise.rewrite import QueryRewriter

        backend = OpenAIBackend("m", base_url=url)
        return QueryRewriter(backend, include_original=value)  # type: ignore[arg-type]
    from rankwise.backends.transformers import TransformersBackend

    return TransformersBackend("/no/such/model", **{kind: value})  # checked before loading


@pytest.mark.parametrize(
    ("kind", "option"),
    [
        ("openai", "logprobs"),
        ("langchain", "logprobs"),
        ("llamaindex", "logprobs"),
        ("rewriter", "include_original"),
        ("dispatch_early", "dispatch_early"),
        ("pack_prompts", "pack_prompts"),
        ("cuda_graphs", "cuda_graphs"),
    ],
)
@pytest.mark.parametrize("value", ["false", "no", 0, 1])
def test_a_true_or_false_option_refuses_anything_else(kind, option, value) -> None:
    """``logprobs="false"``, as read from an env var or a config file, was true: the backend
    claimed log-probs, so ``method="auto"`` picked a method that needs them."""
    with pytest.raises(InputError, match=f"{option} must be True or False(, or None .*)?, got"):
        _flagged(kind, value)


@pytest.mark.parametrize("kind", ["langchain", "llamaindex"])
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_context", 0, "max_context must be a whole number of at least 1"),
        ("max_context", -5, "max_context must be a whole number of at least 1"),
        ("max_context", 10.5, "max_context must be a whole number of at least 1"),
        ("top_logprobs", -1, "top_logprobs must be in \\[0, 20\\]"),
        ("top_logprobs", 50, "top_logprobs must be in \\[0, 20\\]"),
        ("max_tokens_kwarg", "", "max_tokens_kwarg must be a keyword name or None"),
        ("max_tokens_kwarg", 3, "max_tokens_kwarg must be a keyword name or None"),
    ],
)
def test_a_framework_backend_refuses_options_no_call_could_run_with(
    kind, option, value, message
) -> None:
    """As OpenAIBackend does: ``max_context=0`` was kept as a context of no tokens (the
    LlamaIndex backend took the LLM's own instead), ``top_logprobs=50`` reached the API as a
    400 at the first call, and ``max_tokens_kwarg=""`` quietly kept the model's own limit."""
    with pytest.raises(InputError, match=message):
        _framework_backend(kind, **{option: value})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda b: Reranker("pointwise", b, abstain="0.5"), "abstain must be an Abstention"),
        (lambda b: Reranker("pointwise", b, abstain=0.5), "abstain must be an Abstention"),
        (lambda b: Reranker("pointwise", b, cache=3), "cache must be a file path"),
        (lambda b: Reranker("pointwise", b, prompts=["x"]), "prompts must map template names"),
        (
            lambda b: Reranker("pointwise", b, prompts={"pointwise_yes_no": 3}),
            "prompts must map template names",
        ),
        (
            lambda b: _rewriter(b, prompts={"rewrite_keywords": None}),
            "prompts must map template names",
        ),
        (lambda b: _rewriter(b, strategies=[]), "strategies is empty"),
    ],
)
def test_a_reranker_or_rewriter_option_of_the_wrong_kind_is_refused_when_built(
    build, message
) -> None:
    """Each was accepted, then failed at the first rerank with an AttributeError or a
    TypeError from deep inside (``abstain="0.5"`` after every call was paid for), or, for
    ``cache=3`` and ``prompts=["x"]``, at once with Python's own TypeError or ValueError."""
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match=message):
        build(backend)


def _rewriter(backend, **options):  # type: ignore[no-untyped-def]
    from rankwise.rewrite import QueryRewriter

    return QueryRewriter(backend, **options)


async def test_an_unfitted_calibrator_is_refused_before_any_call(stub) -> None:
    """``abstain=Calibrator()`` (fit() forgotten) failed only after the rerank, every call
    paid for."""
    from rankwise.abstain import Calibrator
    from tests.oracle import oracle, relevance_docs

    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url, api_key="unused")
    with pytest.raises(InputError, match="the calibrator is not fitted"):
        Reranker("pointwise", backend, abstain=Calibrator())
    assert stub.requests == []
    fitted = Calibrator(n=3).fit([[0.9, 0.5, 0.1], [0.2, 0.1, 0.0]], [0.8, 0.1])
    ranked = await Reranker("pointwise", backend, abstain=fitted).arerank(
        "q", relevance_docs([0.3, 0.9, 0.1])
    )
    assert ranked.confidence == pytest.approx(fitted.predict(ranked.judged_scores))
