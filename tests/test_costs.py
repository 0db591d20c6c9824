"""Cost accounting: dry-run predictions of calls and tokens, and dollar estimates."""

from __future__ import annotations

import json

import pytest

from rankwise import Reranker
from rankwise.backends.openai import OpenAIBackend
from rankwise.cli import main
from rankwise.costs import Price, PriceTable
from rankwise.errors import InputError
from rankwise.types import Usage
from tests.conftest import DL19, dl19_lines
from tests.oracle import oracle, relevance_docs


@pytest.mark.parametrize(
    ("method", "n", "calls"),
    [
        ("pointwise", 10, 10),
        ("prp-allpair", 5, 20),
        ("listwise", 25, 2),
        ("listwise-full", 25, 1),
        ("first", 25, 2),
    ],
)
async def test_dry_run_predicts_the_calls_a_real_rerank_makes(stub, method, n, calls) -> None:
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url, backoff=0.01, timeout=5)
    reranker = Reranker(method, backend)
    docs = relevance_docs([(7 * i % n) / n for i in range(n)])
    predicted = await reranker.aestimate("which passage is relevant?", docs)
    assert stub.requests == []  # a dry run sends nothing
    assert predicted.calls == calls
    assert predicted.prompt_tokens > calls * 10
    assert predicted.completion_tokens >= calls
    actual = await reranker.arerank("which passage is relevant?", docs)
    assert actual.usage.calls == predicted.calls == len(stub.requests)
    await backend.aclose()


async def test_dry_run_of_prp_sliding_predicts_its_fewest_calls(stub) -> None:
    """The dry run's model prefers no passage, so no pass after the first swaps anything and
    every later comparison is one already answered."""
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url, backoff=0.01, timeout=5)
    reranker = Reranker("prp-sliding", backend)
    docs = relevance_docs([(7 * i % 12) / 12 for i in range(12)])
    predicted = await reranker.aestimate("which passage is relevant?", docs)
    fewest, most = reranker.call_bounds(docs)
    assert predicted.calls == fewest == 2 * 11
    assert most == 2 * sum(11 - i for i in range(10))
    actual = await reranker.arerank("which passage is relevant?", docs)
    assert fewest < actual.usage.calls == len(stub.requests) < most
    await backend.aclose()


@pytest.mark.parametrize(
    ("method", "options", "calls", "completion"),
    [
        ("pointwise", {"max_passage_tokens": 64}, 5, 5),  # label log-probs
        ("setwise", {"max_passage_tokens": 64}, 5, 5),  # label log-probs after " Passage:"
        ("pointwise-qlm", {"calibrated": True}, 6, 0),  # continuation log-probs, + baseline
        ("icr", {}, 2, 0),  # an attention scan per query (and the N/A query)
        ("first", {"max_words": 48}, 1, 1),  # one generated token's log-probs
    ],
)
async def test_dry_run_counts_prompt_tokens_exactly_on_the_local_model(
    local_backend, dl19, method, options, calls, completion
) -> None:
    """Each kind of call the dry run answers counts the prompt the real call would read:
    the assistant prefix, the scored continuation and the scanned queries included."""
    reranker = Reranker(method, local_backend, **options)
    docs = dl19[2].documents(5)
    predicted = await reranker.aestimate(dl19[2].query, docs)
    actual = await reranker.arerank(dl19[2].query, docs)
    assert predicted.calls == actual.usage.calls == calls
    assert predicted.prompt_tokens == actual.usage.prompt_tokens
    assert predicted.completion_tokens == actual.usage.completion_tokens == completion


def test_price_table_costs_and_fallback(tmp_path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"big": {"input": 2.5, "output": 10}, "*": {"input": 1, "output": 2}})
    )
    table = PriceTable.load(path)
    usage = Usage(calls=3, prompt_tokens=1_000_000, completion_tokens=500_000)
    assert table.cost("big", usage) == pytest.approx(2.5 + 5.0)
    assert table.cost("other", usage) == pytest.approx(1.0 + 1.0)
    assert PriceTable({"big": Price(1, 1)}).cost("other", usage) is None


@pytest.mark.parametrize(
    "content",
    [
        '{"m": {"input": 1}}',
        '["not", "a", "table"]',
        "{broken",
        '{"m": {"input": "x", "output": 1}}',
        '{"m": {"input": -0.15, "output": 0.6}}',  # a credit per token: a typo, not a price
        '{"m": {"input": NaN, "output": 0.6}}',  # Python's json reads NaN; every cost was NaN
        '{"m": {"input": 0.15, "output": Infinity}}',
    ],
)
def test_malformed_price_table_is_a_clear_error(tmp_path, content) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(InputError, match="price table"):
        PriceTable.load(path)


def test_cli_dry_run_prices_a_run_without_contacting_the_server(tmp_path, capsys) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-x": {"input": 2.0, "output": 8.0}}))
    code = main(
        [
            "eval",
            "--dry-run",
            "--backend",
            "openai",
            "--model",
            "gpt-x",
            "--api-key",
            "unused",
            "--base-url",
            "http://127.0.0.1:9/v1",  # nothing listens there: a real call would fail
            "--data",
            str(DL19 / "bm25-top100.jsonl"),
            "--qrels",
            str(DL19 / "qrels.txt"),
            "--method",
            "prp-allpair",
            "--depth",
            "4",
            "--queries",
            "2",
            "--prices",
            str(prices),
        ]
    )
    assert code == 0
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["dry_run"] is True
    assert prediction["calls"] == 2 * 4 * 3 and prediction["calls_per_query"] == [12, 12]
    assert prediction["calls_are_exact"] is True
    assert prediction["calls_fewest"] == prediction["calls_most"] == prediction["calls"]
    expected = (prediction["prompt_tokens"] * 2.0 + prediction["max_completion_tokens"] * 8.0) / 1e6
    assert prediction["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert prediction["cost_usd"] > 0


def test_cli_dry_run_gives_the_call_range_of_answer_dependent_methods(tmp_path, capsys) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-x": {"input": 2.0, "output": 8.0}}))
    args = ["eval", "--dry-run", "--backend", "openai", "--model", "gpt-x", "--api-key", "unused"]
    args += ["--base-url", "http://127.0.0.1:9/v1", "--data", str(DL19 / "bm25-top100.jsonl")]
    args += ["--qrels", str(DL19 / "qrels.txt"), "--method", "prp-heapsort", "--depth", "12"]
    args += ["--queries", "2", "--prices", str(prices), "--option", "top_k=5"]
    assert main(args) == 0
    prediction = json.loads(capsys.readouterr().out)
    backend = OpenAIBackend("gpt-x", base_url="http://127.0.0.1:9/v1", api_key="unused")
    fewest, most = Reranker("prp-heapsort", backend, top_k=5).call_bounds(["text"] * 12)
    assert prediction["calls_are_exact"] is False
    assert (prediction["calls_fewest"], prediction["calls_most"]) == (2 * fewest, 2 * most)
    assert 2 * fewest <= prediction["calls"] <= 2 * most
    assert prediction["prompt_tokens_at_most_calls"] > prediction["prompt_tokens"]
    assert prediction["cost_usd_at_most_calls"] > prediction["cost_usd"] > 0
    assert "calls_fewest" in prediction["note"]


def test_eval_report_carries_a_cost_estimate(tmp_path, capsys, monkeypatch) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"*": {"input": 3.0, "output": 15.0}}))
    monkeypatch.setenv("RANKWISE_PRICES", str(prices))
    report_path = tmp_path / "report.json"
    args = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--qrels", str(DL19 / "qrels.txt")]
    args += [
        "--method",
        "pointwise",
        "--depth",
        "3",
        "--queries",
        "1",
        "--report",
        str(report_path),
    ]
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    expected = (report["prompt_tokens"] * 3.0 + report["completion_tokens"] * 15.0) / 1e6
    assert report["cost_usd"] == pytest.approx(expected, abs=1e-6) and report["cost_usd"] > 0
    (query,) = report["per_query"]  # usage and cost per query as well as in total
    assert query["calls"] == report["calls"] == 3
    assert query["prompt_tokens"] == report["prompt_tokens"]
    assert query["cost_usd"] == pytest.approx(report["cost_usd"], abs=1e-6)


async def test_dry_run_counts_what_the_response_cache_already_holds(stub, tmp_path) -> None:
    """With a cache, a real rerank pays only for the answers the cache lacks, but the dry
    run predicted every call, as if there were no cache: a warm rerun was priced in full."""
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url, backoff=0.01, timeout=5)
    path = tmp_path / "cache.sqlite"
    reranker = Reranker("pointwise", backend, cache=path)
    docs = relevance_docs([0.3, 0.9, 0.1, 0.6])
    paid = await reranker.arerank("q", docs)
    assert paid.usage.calls == 4 and len(reranker.cache) == 4
    sent = len(stub.requests)
    warm = await reranker.aestimate("q", docs)
    assert (warm.calls, warm.cache_hits, warm.prompt_tokens) == (0, 4, 0)
    more = [*docs, {"id": "d4", "text": "passage 4 relevance 0.500"}]
    partly = await reranker.aestimate("q", more)
    cold = await Reranker("pointwise", backend).aestimate("q", more)
    assert (partly.calls, partly.cache_hits) == (1, 4)
    assert partly.prompt_tokens == cold.prompt_tokens / 5  # one prompt of five, all alike
    assert len(stub.requests) == sent  # a dry run sends nothing
    assert len(reranker.cache) == 4  # and writes nothing: its answers are not the model's
    actual = await reranker.arerank("q", more)
    assert (actual.usage.calls, actual.usage.cache_hits) == (1, 4)
    await backend.aclose()


def test_cli_dry_run_reports_the_cache_hits_of_a_warm_rerun(stub, tmp_path, capsys) -> None:
    stub.handler = oracle
    args = ["eval", "--backend", "openai", "--model", "oracle", "--base-url", stub.base_url]
    args += ["--data", str(DL19 / "bm25-top100.jsonl"), "--qrels", str(DL19 / "qrels.txt")]
    args += ["--method", "pointwise", "--depth", "3", "--queries", "2"]
    args += ["--cache", str(tmp_path / "cache.sqlite")]
    assert main([*args, "--dry-run"]) == 0
    cold = json.loads(capsys.readouterr().out)
    assert (cold["calls"], cold["cache_hits"]) == (6, 0) and stub.requests == []
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    warm = json.loads(capsys.readouterr().out)
    assert (warm["calls"], warm["cache_hits"], warm["prompt_tokens"]) == (0, 6, 0)
    assert "already in the response cache" in warm["note"]
    assert len(stub.requests) == 6


@pytest.mark.parametrize("given", ["option", "env"])
def test_a_dry_run_creates_no_cache_file(stub, tmp_path, capsys, monkeypatch, given) -> None:
    """A dry run writes nothing, but with ``--cache PATH`` (or ``RANKWISE_CACHE``) naming a
    file not yet there, it left an empty sqlite file behind."""
    stub.handler = oracle
    path = tmp_path / "cache.sqlite"
    args = ["eval", "--backend", "openai", "--model", "oracle", "--base-url", stub.base_url]
    args += ["--data", str(DL19 / "bm25-top100.jsonl"), "--qrels", str(DL19 / "qrels.txt")]
    args += ["--method", "pointwise", "--depth", "3", "--queries", "2"]
    if given == "env":
        monkeypatch.setenv("RANKWISE_CACHE", str(path))
    else:
        args += ["--cache", str(path)]
    assert main([*args, "--dry-run"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert (prediction["calls"], prediction["cache_hits"]) == (6, 0)
    assert list(tmp_path.iterdir()) == [] and stub.requests == []


def test_cache_false_turns_the_cache_off_with_rankwise_cache_set(tmp_path, monkeypatch) -> None:
    """There was no way to rerank without the cache that ``RANKWISE_CACHE`` names: None,
    the default, reads the variable."""
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache.sqlite"))
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    assert Reranker("pointwise", backend).cache is not None
    assert Reranker("pointwise", backend, cache=False).cache is None
    with pytest.raises(InputError, match="cache must be a file path"):
        Reranker("pointwise", backend, cache=True)


@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_cli_dry_run_prices_only_the_queries_the_qrels_judge(
    stub, tmp_path, capsys, command
) -> None:
    """``eval`` and ``calibrate`` rerank only the queries their qrels judge, and
    ``--queries N`` takes the first N of those; the dry run priced every query in the file,
    so it predicted calls the real run never makes."""
    stub.handler = oracle
    records = dl19_lines(4)
    unjudged = records[0] | {"qid": "no-judgments"}
    data = tmp_path / "queries.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in [unjudged, *records[1:]]))
    args = [command, "--backend", "openai", "--model", "oracle", "--base-url", stub.base_url]
    args += ["--data", str(data), "--qrels", str(DL19 / "qrels.txt")]
    args += ["--method", "pointwise", "--depth", "3"]
    args += ["--out" if command == "calibrate" else "--report", str(tmp_path / "out.json")]
    assert main([*args, "--dry-run"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert (prediction["queries"], prediction["calls_per_query"]) == (3, [3, 3, 3])
    assert stub.requests == []
    assert main(args) == 0
    asked = " ".join(request["messages"][-1]["content"] for request in stub.requests)
    assert unjudged["query"] not in asked  # never reranked
    assert len(stub.requests) == prediction["calls"]


@pytest.mark.parametrize(
    ("command", "extra"), [("calibrate", ["--out"]), ("eval", ["--abstention", "cv", "--report"])]
)
@pytest.mark.parametrize(
    ("method", "queries", "refusal"),
    [("pointwise", "2", "this run has 2"), ("listwise", "4", "gives rank-only scores")],
)
def test_cli_dry_run_refuses_what_the_run_refuses(
    tmp_path, capsys, command, extra, method, queries, refusal
) -> None:
    """A calibration, or an ``eval --abstention cv``, needs three (four) judged queries and a
    method that scores; its run refuses anything less before any call, but its dry run predicted the cost of
    such a run all the same."""
    args = [command, "--backend", "openai", "--model", "gpt-x", "--api-key", "unused"]
    args += ["--base-url", "http://127.0.0.1:9/v1", "--data", str(DL19 / "bm25-top100.jsonl")]
    args += ["--qrels", str(DL19 / "qrels.txt"), "--method", method, "--depth", "3"]
    args += ["--queries", queries, *extra, str(tmp_path / "out.json")]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert refusal in error
    assert main([*args, "--dry-run"]) == 2
    assert capsys.readouterr().err == error


@pytest.mark.parametrize("method", ["pointwise-qlm", "pointwise"])
def test_a_local_dry_run_refuses_a_query_too_long_for_the_context(tmp_path, capsys, method):
    """The local model refuses a prompt that runs past its context, but the dry run priced
    it as if it fitted: it promised a run that then failed at that query."""
    (record,) = dl19_lines(1)
    record["query"] = "flea " * 9000  # past SmolLM2's 8192 tokens
    data = tmp_path / "queries.jsonl"
    data.write_text(json.dumps(record) + "\n")
    args = ["rerank", "--data", str(data), "--depth", "2", "--method", method]
    args += ["--output", str(tmp_path / "run.trec")]
    assert main([*args, "--dry-run"]) == 2
    refusal = capsys.readouterr().err
    assert f"query {record['qid']!r} ({data}:1) failed: " in refusal
    assert "past SmolLM2-135M-Instruct's 8192-token context" in refusal
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines()[0] == refusal.splitlines()[0]


def test_a_price_table_named_under_home_is_read(tmp_path, monkeypatch) -> None:
    """``RANKWISE_PRICES=~/prices.json``, as an env file or a container sets it (no shell
    expands the ``~`` there), was refused as unreadable, where ``RANKWISE_CACHE=~/...``
    is expanded."""
    (tmp_path / "prices.json").write_text(json.dumps({"m": {"input": 1.0, "output": 2.0}}))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RANKWISE_PRICES", "~/prices.json")
    table = PriceTable.from_env()
    assert table is not None and table.price("m") == Price(1.0, 2.0)


def test_a_price_table_that_is_not_utf8_is_refused_by_name(tmp_path) -> None:
    """A table saved in a Windows code page ended in a UnicodeDecodeError traceback."""
    path = tmp_path / "prices.json"
    path.write_bytes('{"m\u00e9": {"input": 1, "output": 2}}'.encode("latin-1"))
    with pytest.raises(InputError, match=f"could not read the price table {path}"):
        PriceTable.load(path)
