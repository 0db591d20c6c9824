"""The rankwise command, run in-process on real DL19 data with the real local model."""

from __future__ import annotations

import json
import re

import pytest

from rankwise import InputError
from rankwise.abstain import Calibrator
from rankwise.cli import _printable, main
from rankwise.evaluate import load_qrels, load_queries, ndcg_at_k, write_trec_run
from tests.conftest import DL19, dl19_lines
from tests.oracle import oracle
from tests.stub_server import Reply, user_text

REPORT_KEYS = {
    "method",
    "model",
    "queries",
    "depth",
    "ndcg@10",
    "input_ndcg@10",
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "seconds",
}


def test_eval_writes_a_report_with_real_usage(tmp_path, capsys) -> None:
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
            "6",
            "--queries",
            "2",
            "--report",
            str(report_path),
        ]
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    assert REPORT_KEYS <= set(report)
    assert report["queries"] == 2 and report["depth"] == 6
    assert report["calls"] == 12 and report["prompt_tokens"] > 12 * 50
    assert report["completion_tokens"] == 12
    assert 0.0 <= report["ndcg@10"] <= 1.0 and report["seconds"] > 0
    rows = report["per_query"]
    # the first stage is judged on the same depth-6 lists the reranker was given
    records = load_queries(DL19 / "bm25-top100.jsonl", 2)
    qrels = load_qrels(DL19 / "qrels.txt")
    first_stage = [ndcg_at_k([d["id"] for d in r.documents(6)], qrels[r.qid]) for r in records]
    assert [row["input_ndcg@10"] for row in rows] == [round(v, 4) for v in first_stage]
    assert report["queries_improved"] == sum(r["ndcg@10"] > r["input_ndcg@10"] for r in rows)
    assert report["queries_worsened"] == sum(r["ndcg@10"] < r["input_ndcg@10"] for r in rows)
    assert json.loads(capsys.readouterr().out)["calls"] == 12


def test_eval_reranks_only_the_queries_the_qrels_judge(tmp_path, capsys) -> None:
    """A query without judgments was reranked, its calls paid, then left out of every
    number; --queries 2 could so give a report of fewer than two queries."""
    records = dl19_lines(3)
    judged_qid = records[1]["qid"]
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(
        "".join(
            line
            for line in (DL19 / "qrels.txt").open()
            if line.split()[0] in (judged_qid, records[2]["qid"])
        )
    )
    data = ["--data", str(DL19 / "bm25-top100.jsonl"), "--qrels", str(qrels)]
    report_path = tmp_path / "r.json"
    args = [*data, "--depth", "3", "--queries", "1", "--report", str(report_path)]
    assert main(["eval", *args, "--method", "pointwise-qlm"]) == 0
    report = json.loads(report_path.read_text())
    assert [row["qid"] for row in report["per_query"]] == [judged_qid]  # not records[0]
    assert report["calls"] == 3  # one judged query at depth 3, nothing spent on the other
    assert "41 of the 43 queries" in capsys.readouterr().err
    qrels.write_text("nope 0 d1 1\n")
    assert main(["eval", *args]) == 2
    assert "none of the 43 queries" in capsys.readouterr().err


def test_rerank_refuses_a_json_output_name_and_reads_the_suffix_in_any_case(tmp_path, capsys):
    """--output run.json was written as a TREC run (text, not JSON), and RUN.JSONL too."""
    args = ["rerank", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "1"]
    args += ["--depth", "2", "--method", "pointwise-qlm"]
    assert main([*args, "--output", str(tmp_path / "run.json")]) == 2
    assert "name it .jsonl" in capsys.readouterr().err
    assert not (tmp_path / "run.json").exists()
    assert main([*args, "--output", str(tmp_path / "RUN.JSONL")]) == 0
    line = json.loads((tmp_path / "RUN.JSONL").read_text().splitlines()[0])
    assert len(line["items"]) == 2


def test_rerank_writes_a_trec_run_with_every_document(tmp_path) -> None:
    output = tmp_path / "run.trec"
    code = main(
        [
            "rerank",
            "--data",
            str(DL19 / "bm25-top100.jsonl"),
            "--method",
            "pointwise-qlm",
            "--depth",
            "5",
            "--queries",
            "2",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    rows = [line.split() for line in output.read_text().splitlines()]
    assert len(rows) == 10
    for qid in {row[0] for row in rows}:
        ranks = [int(row[3]) for row in rows if row[0] == qid]
        assert ranks == [1, 2, 3, 4, 5]
        scores = [float(row[4]) for row in rows if row[0] == qid]
        assert scores == sorted(scores, reverse=True)
        assert len({row[2] for row in rows if row[0] == qid}) == 5


def test_demo_prints_before_and_after(capsys) -> None:
    assert main(["demo", "--queries", "2", "--depth", "5"]) == 0
    out = capsys.readouterr().out
    assert "BM25 nDCG@10" in out and "reranked nDCG@10" in out and "mean" in out
    assert "pointwise-qlm" in out
    table = [
        line.split() for line in out.splitlines() if re.fullmatch(r"\s*\d+( +[\d.]+){2}", line)
    ]
    assert len(table) == 2  # one row per query, each with BM25 and reranked nDCG@10
    better = sum(float(after) > float(before) for _, before, after in table)
    worse = sum(float(after) < float(before) for _, before, after in table)
    assert f"reranking helped {better} of 2 queries and hurt {worse}" in out


def test_demo_on_other_data_does_not_borrow_the_sample_judgments(tmp_path, capsys) -> None:
    """Given --data without --qrels, the demo judged it with the sample's qrels and printed
    a mean nDCG@10 of 0.0000 over no query, under 'TREC DL 2019' and 'BM25' headings."""
    data = tmp_path / "own.jsonl"
    line = {"qid": "q1", "query": "fleas", "candidates": [{"docid": "a", "text": "cats"}]}
    data.write_text(
        json.dumps(
            {
                **line,
                "candidates": [*line["candidates"], {"docid": "b", "text": "fleas live a year"}],
            }
        )
        + "\n"
    )
    assert main(["demo", "--data", str(data), "--depth", "2"]) == 0
    out = capsys.readouterr().out
    assert "queries from own.jsonl" in out and "TREC DL 2019" not in out
    assert "input top-5" in out and "BM25" not in out
    assert "no judgments for these queries" in out and "mean" not in out


def test_demo_prints_passages_without_control_characters(tmp_path, capsys) -> None:
    """MS MARCO text holds UTF-8 read as Latin-1 (756 DL19 passages), whose C1 control
    characters went to the terminal as they were and pulled that row's column out of line."""
    texts = {
        "mojibake": "Bluetooth is \u00e2\x80\x9cfairly\u00e2\x80\x9d secure, like WiFi.",
        "escape": "Red \x1b[31mflea\x1b[0m\tcollars\nlast a year",
        "plain": "fleas live for about a year on one host",
    }
    record = {
        "qid": "q\x1b]0;title\x07",
        "query": "how long do fleas\r live",
        "candidates": [{"docid": docid, "text": text} for docid, text in texts.items()],
    }
    data = tmp_path / "own.jsonl"
    data.write_text(json.dumps(record) + "\n")
    assert main(["demo", "--data", str(data), "--depth", "3"]) == 0
    out = capsys.readouterr().out
    assert not [char for char in out if char != "\n" and not char.isprintable()]
    assert "Bluetooth is \u201cfairly\u201d" in out
    assert "Red  [31mflea [0m collars la" in out
    assert "how long do fleas  live" in out
    rows = [line for line in out.splitlines() if line.startswith("  [rel ")]
    assert len(rows) == 3
    assert len({row.index(" | ") for row in rows}) == 1  # one column edge for every row


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        (
            "Bluetooth is \u00e2\x80\x9cfairly\u00e2\x80\x9d secure",
            "Bluetooth is \u201cfairly\u201d secure",
        ),
        # Mojibake without a C1 character (129 DL19 passages hold only such marks).
        (
            "Velcro\u00c2\u00ae straps, 20\u00c2\u00b0C, cr\u00c3\u00a8me",
            "Velcro\u00ae straps, 20\u00b0C, cr\u00e8me",
        ),
        # Latin-1 by intent prints as it is; so does text with characters beyond Latin-1,
        # which was never read as Latin-1 as a whole.
        (
            "caf\u00e9 au lait, \u00bd price, \u00a9 2019",
            "caf\u00e9 au lait, \u00bd price, \u00a9 2019",
        ),
        ("\u00c3\u00a9t\u00c3\u00a9 \u2014 summer", "\u00c3\u00a9t\u00c3\u00a9 \u2014 summer"),
        # Mojibake that lost bytes does not decode: only its control characters go.
        ("\u00e2\x98 What equipment", "\u00e2  What equipment"),
    ],
)
def test_printed_text_repairs_mojibake_and_keeps_latin1_text(text: str, printed: str) -> None:
    assert _printable(text) == printed


def test_unreachable_server_is_a_clean_error(capsys) -> None:
    code = main(
        [
            "eval",
            "--data",
            str(DL19 / "bm25-top100.jsonl"),
            "--qrels",
            str(DL19 / "qrels.txt"),
            "--backend",
            "openai",
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--depth",
            "3",
            "--queries",
            "1",
        ]
    )
    assert code == 2
    assert "could not reach http://127.0.0.1:9/v1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "flag", "what"),
    [
        ("rerank", "--output", "output file"),
        ("calibrate", "--out", "calibrator file"),
        ("eval", "--report", "report file"),
    ],
)
def test_an_output_path_that_cannot_be_written_fails_before_any_call(
    stub, tmp_path, capsys, command, flag, what
) -> None:
    """The run went through every model call, then died with a FileNotFoundError traceback
    when it came to write the result."""
    from tests.oracle import oracle

    stub.handler = oracle
    common = [command, "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "3"]
    common += ["--depth", "3", "--backend", "openai", "--model", "oracle"]
    common += ["--base-url", stub.base_url, "--api-key", "unused", "--method", "pointwise"]
    if command != "rerank":
        common += ["--qrels", str(DL19 / "qrels.txt")]
    for path, reason in [
        (tmp_path / "missing" / "out.json", "is in a folder that does not exist"),
        (tmp_path, "is a folder; name a file in it"),
    ]:
        assert main([*common, flag, str(path)]) == 2
        assert f"the {what} '{path}' {reason}" in capsys.readouterr().err
    assert stub.requests == []  # refused before any model call
    written = tmp_path / ("run.jsonl" if command == "rerank" else "out.json")
    assert main([*common, flag, str(written)]) == 0
    assert written.stat().st_size > 0 and len(stub.requests) == 9


def test_eval_refuses_an_abstention_or_plot_it_could_not_finish_before_any_call(
    stub, tmp_path, capsys
) -> None:
    """A bad calibrator file failed after every model call; --plot without --abstention
    was ignored without a word."""
    from tests.oracle import oracle

    stub.handler = oracle
    common = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "2"]
    common += ["--qrels", str(DL19 / "qrels.txt"), "--depth", "3", "--backend", "openai"]
    common += ["--model", "oracle", "--base-url", stub.base_url, "--api-key", "unused"]
    common += ["--method", "pointwise"]
    not_a_calibrator = tmp_path / "prices.json"
    not_a_calibrator.write_text('{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}')
    assert main([*common, "--abstention", str(not_a_calibrator)]) == 2
    assert "cannot read a calibrator from" in capsys.readouterr().err
    assert main([*common, "--plot", str(tmp_path / "curve.png")]) == 2
    assert "--plot draws the risk-coverage curve of --abstention" in capsys.readouterr().err
    # a picture format matplotlib cannot write failed with a ValueError traceback at the end
    plot = ["--abstention", "cv", "--queries", "4", "--plot", str(tmp_path / "curve.xyz")]
    assert main([*common, *plot]) == 2
    err = capsys.readouterr().err
    assert "--plot 'curve.xyz': matplotlib cannot write .xyz pictures" in err and ".png" in err
    assert stub.requests == []
    assert not (tmp_path / "curve.png").exists()


def test_unknown_method_is_refused_by_the_parser(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--data", "x", "--qrels", "y", "--method", "nope"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["data", "qrels"])
def test_a_missing_input_file_is_a_clean_error(tmp_path, capsys, missing) -> None:
    paths = {"data": str(DL19 / "bm25-top100.jsonl"), "qrels": str(DL19 / "qrels.txt")}
    paths[missing] = str(tmp_path / "absent.txt")
    args = ["eval", "--data", paths["data"], "--qrels", paths["qrels"], "--queries", "1"]
    args += ["--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]
    code = main(args)  # the files are read before any call, so nothing reaches the server
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot read the {'queries' if missing == 'data' else 'qrels'} file" in err
    assert "absent.txt" in err and "No such file" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--depth", "-5", "argument --depth: expected a whole number of at least 1, got -5"),
        ("--depth", "0", "argument --depth: expected a whole number of at least 1, got 0"),
        ("--queries", "0", "argument --queries: expected a whole number of at least 1, got 0"),
        (
            "--queries",
            "two",
            "argument --queries: expected a whole number of at least 1, got 'two'",
        ),
        (
            "--parallel-queries",
            "0",
            "argument --parallel-queries: expected a whole number of at least 1",
        ),
        (
            "--concurrency",
            "0",
            "argument --concurrency: expected a whole number of at least 1, got 0",
        ),
        ("--timeout", "-1", "argument --timeout: expected a number of seconds above 0, got -1"),
        ("--max-context", "0", "argument --max-context: expected a whole number of at least 1"),
    ],
)
def test_out_of_range_numbers_are_refused_by_the_parser(capsys, option, value, message) -> None:
    """A depth of -5 used to rerank all but the last five candidates, and --queries 0 one
    query: numbers that no run can use are refused before anything is read."""
    args = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--qrels", "y", option, value]
    with pytest.raises(SystemExit) as raised:
        main([*args, "--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("backend", "given", "message"),
    [
        (["--concurrency", "4"], "--concurrency", "only applies to --backend openai"),
        (["--timeout", "5", "--api-key", "k"], "--api-key, --timeout", "drop them"),
        (["--base-url", "http://127.0.0.1:9/v1"], "--base-url", "--backend local; drop it"),
        (["--stream-logprobs"], "--stream-logprobs", "--backend local; drop it"),
        (["--max-context", "4096"], "--max-context", "--backend local; drop it"),
        (["--request-option", "seed=1"], "--request-option", "--backend local; drop it"),
        (
            ["--backend", "openai", "--model", "m", "--dtype", "bfloat16"],
            "--dtype",
            "only applies to --backend local",
        ),
        (
            ["--backend", "openai", "--model", "m", "--device", "cuda"],
            "--device",
            "only applies to --backend local",
        ),
    ],
)
def test_an_option_of_the_other_backend_is_refused(tmp_path, capsys, backend, given, message):
    """--concurrency or --timeout on a local run, or --dtype on an API run, did nothing and
    said nothing; the run looked as though the option had been applied."""
    output = tmp_path / "run.trec"
    args = ["rerank", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "1"]
    assert main([*args, "--depth", "2", "--output", str(output), *backend]) == 2
    err = capsys.readouterr().err
    assert f"rankwise: error: {given} only applies" in err
    assert message in err
    assert not output.exists()


def test_the_local_model_runs_on_the_device_named(tmp_path, capsys) -> None:
    """The command line had no way to put a local model on a GPU: ``--backend local`` ran
    on the CPU whatever the machine had. The device named reaches the backend, which
    refuses one this machine lacks (no Linux machine has Apple's MPS) before loading."""
    output = tmp_path / "run.trec"
    args = ["rerank", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "1"]
    assert main([*args, "--depth", "2", "--output", str(output), "--device", "mps"]) == 2
    assert "device 'mps' is not available on this machine" in capsys.readouterr().err
    assert not output.exists()
    assert main([*args, "--depth", "2", "--output", str(output), "--device", "cpu"]) == 0
    assert len(output.read_text().splitlines()) == 2


def test_an_out_of_range_method_option_is_a_clean_error(capsys) -> None:
    args = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--qrels", str(DL19 / "qrels.txt")]
    args += ["--queries", "1", "--depth", "5", "--method", "listwise", "-o", "window=1"]
    args += ["--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]
    assert main(args) == 2
    assert "rankwise: error: listwise: window must be in [2," in capsys.readouterr().err


def test_calibrate_refuses_an_abstention_rate_of_one_or_more(capsys) -> None:
    args = ["calibrate", "--data", "x", "--qrels", "y", "--out", "z", "--abstention-rate", "1"]
    with pytest.raises(SystemExit):
        main(args)
    assert (
        "argument --abstention-rate: expected a number in [0, 1), got 1" in capsys.readouterr().err
    )


def _local_eval(tmp_path, *extra: str) -> list[str]:
    """An eval on a local model that does not exist: a check that ran after the load would
    report the missing model instead of what it checks."""
    args = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--qrels", str(DL19 / "qrels.txt")]
    return [*args, "--depth", "3", "--model", str(tmp_path / "no-such-model"), *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "listwise", "-o", "windw=5"], "bad options for method 'listwise': 'windw'"),
        (["--method", "listwise", "-o", "window=abc"], "window must be a whole number"),
        (["--prices", "absent-prices.json"], "could not read the price table absent-prices.json"),
        (["--abstention", "cv", "--queries", "3"], "needs at least 4; this run has 3"),
        (
            ["--abstention", "cv", "--queries", "4", "--method", "listwise"],
            "--abstention reads the scores, and method 'listwise' gives rank-only scores",
        ),
    ],
)
def test_eval_checks_options_prices_and_abstention_before_the_model_loads(
    tmp_path, capsys, extra, message
) -> None:
    """A misspelt option was refused only once the local model had loaded; an unreadable
    price table, too few queries for --abstention cv, or a method whose scores are only
    ranks, only after every query had been reranked."""
    assert main(_local_eval(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "no-such-model" not in err


def test_the_local_model_checks_above_do_fail_on_the_missing_model(tmp_path, capsys) -> None:
    assert main(_local_eval(tmp_path, "--queries", "1")) == 2
    assert "no-such-model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--queries", "2"], "calibration needs at least 3 judged queries; this run has 2"),
        (["--queries", "3", "--method", "first"], "a calibrator reads the scores, and method"),
    ],
)
def test_calibrate_checks_its_queries_and_method_before_the_model_loads(
    tmp_path, capsys, extra, message
) -> None:
    """Both were refused after every query had been reranked (a rank-only method not at
    all: it wrote a calibrator whose confidence is the same for every query)."""
    args = _local_eval(tmp_path, "--out", str(tmp_path / "c.json"), *extra)
    assert main(["calibrate", *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and "no-such-model" not in err
    assert not (tmp_path / "c.json").exists()


def test_an_api_eval_refuses_a_bad_price_table_or_rank_only_abstention_before_any_call(
    stub, tmp_path, capsys
) -> None:
    from tests.oracle import oracle

    stub.handler = oracle
    common = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "4"]
    common += ["--qrels", str(DL19 / "qrels.txt"), "--depth", "3", "--backend", "openai"]
    common += ["--model", "oracle", "--base-url", stub.base_url, "--api-key", "unused"]
    broken = tmp_path / "prices.json"
    broken.write_text('{"oracle": {"input": 1}}')
    assert main([*common, "--method", "pointwise", "--prices", str(broken)]) == 2
    assert "price table" in capsys.readouterr().err
    assert main([*common, "--method", "listwise", "--abstention", "cv"]) == 2
    assert "method 'listwise' gives rank-only scores" in capsys.readouterr().err
    assert stub.requests == []
    assert main([*common, "--method", "pointwise", "--abstention", "cv"]) == 0
    assert len(stub.requests) == 12


@pytest.mark.parametrize("method", ["pointwise", "first"])
def test_stream_logprobs_on_the_command_line_streams_and_scores_the_same(
    stub, tmp_path, method
) -> None:
    from tests.oracle import oracle
    from tests.stub_server import streamed_when_asked

    stub.handler = streamed_when_asked(oracle)
    common = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "2"]
    common += ["--qrels", str(DL19 / "qrels.txt"), "--depth", "6", "--backend", "openai"]
    common += ["--model", "oracle", "--base-url", stub.base_url, "--api-key", "unused"]
    common += ["--method", method]
    reports = {}
    for flag in ([], ["--stream-logprobs"]):
        stub.requests.clear()
        path = tmp_path / f"report{len(flag)}.json"
        assert main([*common, *flag, "--report", str(path)]) == 0
        assert {bool(r.get("stream")) for r in stub.requests} == {bool(flag)}
        reports[bool(flag)] = json.loads(path.read_text())
    whole, streamed_run = reports[False], reports[True]
    assert streamed_run["ndcg@10"] == whole["ndcg@10"] > 0.5  # the oracle ranks by the qrels
    assert streamed_run["calls"] == whole["calls"] > 0
    assert streamed_run["prompt_tokens"] == whole["prompt_tokens"]  # usage sent in the stream


@pytest.mark.parametrize(("qid", "docid"), [("q1", "doc 7"), ("query one", "d1"), ("q1", "d\t1")])
def test_ids_a_trec_run_cannot_hold_are_refused_before_any_call(
    stub, tmp_path, capsys, qid, docid
) -> None:
    """A docid 'doc 7' was written as 'q1 Q0 doc 7 1 2 tag': seven fields, so trec_eval read
    '7' as the rank and '1' as the score, after every call was paid for."""
    data = tmp_path / "queries.jsonl"
    line = {"qid": qid, "query": "q", "candidates": [{"docid": docid, "text": "a"}]}
    data.write_text(json.dumps(line) + "\n", encoding="utf-8")
    args = ["rerank", "--data", str(data), "--method", "pointwise", "--backend", "openai"]
    args += ["--model", "m", "--base-url", stub.base_url]
    assert main([*args, "--output", str(tmp_path / "run.trec")]) == 2
    err = capsys.readouterr().err
    refused = ("qid", qid) if " " in qid else ("docid", docid)
    assert f"the {refused[0]} {refused[1]!r}" in err
    assert "write the run as JSON Lines (--output run.jsonl)" in err
    assert not (tmp_path / "run.trec").exists() and stub.requests == []
    with pytest.raises(InputError, match="TREC run cannot hold"):  # and from Python
        write_trec_run([("q0", ["d0"]), (qid, [docid])], tmp_path / "run.trec", tag="t")
    assert not (tmp_path / "run.trec").exists()  # refused before the first line is written
    stub.handler = oracle
    assert main([*args, "--output", str(tmp_path / "run.jsonl")]) == 0  # JSON Lines holds any id
    written = json.loads((tmp_path / "run.jsonl").read_text(encoding="utf-8"))
    assert written["qid"] == qid and [item["id"] for item in written["items"]] == [docid]


def test_eval_reports_every_fallback_of_the_run(stub, tmp_path) -> None:
    """A model whose answers cannot be read leaves the input order, and the report says how
    often: here every window of both queries."""
    from tests.stub_server import Reply, completion

    stub.handler = lambda request: Reply(body=completion("I cannot rank these passages."))
    path = tmp_path / "report.json"
    args = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "2"]
    args += ["--qrels", str(DL19 / "qrels.txt"), "--depth", "6", "--backend", "openai"]
    args += ["--model", "m", "--base-url", stub.base_url, "--api-key", "unused"]
    assert main([*args, "--method", "listwise", "--report", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["calls"] == 2 and report["fallbacks"] == 2
    assert report["ndcg@10"] == report["input_ndcg@10"]  # the input order, kept


def test_request_options_on_the_command_line_reach_every_request(stub, tmp_path, capsys) -> None:
    from tests.oracle import oracle

    stub.handler = oracle
    args = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "1"]
    args += ["--qrels", str(DL19 / "qrels.txt"), "--depth", "3", "--backend", "openai"]
    args += ["--model", "oracle", "--base-url", stub.base_url, "--method", "pointwise"]
    options = ["--request-option", "reasoning_effort=minimal"]
    options += ["--request-option", 'chat_template_kwargs={"enable_thinking": false}']
    assert main([*args, *options]) == 0
    assert len(stub.requests) == 3
    for request in stub.requests:
        assert request["reasoning_effort"] == "minimal"
        assert request["chat_template_kwargs"] == {"enable_thinking": False}
    capsys.readouterr()
    assert main([*args, "--request-option", "temperature=0.7"]) == 2
    assert "request_options sets temperature" in capsys.readouterr().err
    assert len(stub.requests) == 3


@pytest.mark.parametrize("cache", [False, True])
def test_a_query_that_fails_is_named_with_what_was_done_before_it(stub, tmp_path, capsys, cache):
    """One query of a batch that the model refused (a prompt too long for its context)
    ended the run with the model's message alone, naming no query: in a file of hundreds,
    nothing said which one to fix, or that the queries reranked before it were paid for."""
    records = dl19_lines(3)
    records[2]["query"] = "far too long " * 50

    def refuse_the_long_query(request):
        if "far too long" in user_text(request):
            error = {"message": "the request exceeds the available context size"}
            return Reply(status=400, body={"error": error | {"type": "exceed_context_size_error"}})
        return oracle(request)

    stub.handler = refuse_the_long_query
    data = tmp_path / "queries.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in records))
    output = tmp_path / "run.trec"
    args = ["rerank", "--data", str(data), "--depth", "2", "--output", str(output)]
    args += ["--backend", "openai", "--model", "m", "--base-url", stub.base_url]
    args += ["--method", "pointwise", "--parallel-queries", "1"]
    if cache:
        args += ["--cache", str(tmp_path / "cache.sqlite")]
    assert main(args) == 2
    error = capsys.readouterr().err
    qid = records[2]["qid"]
    assert f"rankwise: error: query {qid!r} ({data}:3) failed: " in error
    assert "exceeds the available context size" in error  # the model's own words
    assert "2 of the 3 queries were reranked before it" in error
    advice = "a rerun pays only for" if cache else "pass --cache PATH"
    assert advice in error
    assert not output.exists()


def test_paths_given_with_an_equals_sign_and_a_tilde_are_read_under_home(
    stub, tmp_path, monkeypatch, capsys
) -> None:
    """The shell expands ``--out ~/cal.json`` but not ``--out=~/cal.json``: every file option
    then looked in, or wrote to, a folder named ``~`` in the working directory, while
    ``--cache=~/...`` and ``--prices=~/...`` were read under the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps(record) + "\n" for record in dl19_lines(3)), encoding="utf-8"
    )
    (tmp_path / "qrels.txt").write_text((DL19 / "qrels.txt").read_text(), encoding="utf-8")
    stub.handler = oracle
    common = ["--data=~/q.jsonl", "--depth", "3", "--method", "pointwise", "--backend", "openai"]
    common += ["--model", "oracle", "--base-url", stub.base_url, "--api-key", "unused"]
    assert main(["calibrate", *common, "--qrels=~/qrels.txt", "--out=~/cal.json"]) == 0
    assert main(["eval", *common, "--qrels=~/qrels.txt", "--abstention=~/cal.json",
                 "--report=~/report.json"]) == 0  # fmt: skip
    assert main(["rerank", *common, "--output=~/run.trec"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "report.json").read_text())["queries"] == 3
    assert Calibrator.load(tmp_path / "cal.json").reference_size == 3
    assert len((tmp_path / "run.trec").read_text().splitlines()) == 9
    assert not (tmp_path / "~").exists()
    calibrator = Calibrator.load("~/cal.json")  # and from Python
    calibrator.save("~/copy.json")
    assert Calibrator.load(tmp_path / "copy.json") == calibrator


def test_an_interrupted_batch_says_what_was_done_without_a_traceback(stub, tmp_path) -> None:
    """Ctrl-C during a long run printed two screens of asyncio traceback and nothing about
    the queries already reranked, or that their answers were kept in the cache."""
    import signal
    import subprocess
    import sys
    import time

    def slow(request):
        reply = oracle(request)
        reply.delay = 0.3
        return reply

    stub.handler = slow
    data = tmp_path / "queries.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in dl19_lines(6)))
    output, cache = tmp_path / "run.trec", tmp_path / "cache.sqlite"
    args = [sys.executable, "-m", "rankwise.cli", "rerank", "--data", str(data)]
    args += ["--depth", "2", "--output", str(output), "--backend", "openai", "--model", "m"]
    args += ["--base-url", stub.base_url, "--api-key", "unused", "--method", "pointwise"]
    args += ["--parallel-queries", "1", "--cache", str(cache)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(stub.requests) < 5 and time.monotonic() < deadline:  # two queries done
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 130, error
    assert "Traceback" not in error
    done = re.search(r"rankwise: interrupted after (\d) of the 6 queries", error)
    assert done and 2 <= int(done.group(1)) < 6, error
    assert "their answers are in the response cache, so a rerun pays only for the rest" in error
    assert not output.exists()
    from rankwise.cache import ResponseCache

    assert len(ResponseCache(cache)) >= 4


def test_no_logprobs_on_the_command_line_picks_a_method_that_reads_text(
    stub, tmp_path, capsys, caplog
) -> None:
    """A server that gives no log-probs (LM Studio, older Ollama) was warned about with
    advice only Python could take ("pass OpenAIBackend(..., logprobs=False)"): the command
    line had no way to say so, and its "auto" went on picking pointwise."""
    from tests.stub_server import completion

    def no_logprobs(request):
        if "Does the passage answer the query" in user_text(request):
            return Reply(body=completion("Yes"))  # no log-probs, though asked for
        return oracle(request)

    stub.handler = no_logprobs
    report = tmp_path / "report.json"
    args = ["eval", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "1"]
    args += ["--qrels", str(DL19 / "qrels.txt"), "--depth", "3", "--backend", "openai"]
    args += ["--model", "m", "--base-url", stub.base_url, "--report", str(report)]
    with caplog.at_level("WARNING", logger="rankwise.backends.openai"):
        assert main(args) == 0
    assert json.loads(report.read_text())["method"] == "pointwise"
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "rankwise.backends.openai"]
    assert "(--no-logprobs on the command line)" in warning
    caplog.clear()
    stub.requests.clear()
    with caplog.at_level("WARNING", logger="rankwise.backends.openai"):
        assert main([*args, "--no-logprobs"]) == 0
    assert json.loads(report.read_text())["method"] == "listwise"
    assert not [r for r in caplog.records if r.name == "rankwise.backends.openai"]
    assert len(stub.requests) == 1 and "logprobs" not in stub.requests[0]
    capsys.readouterr()
    local = args[:9]  # data, queries, qrels and depth, with the local backend
    assert main([*local, "--no-logprobs"]) == 2  # the local backend: refused
    assert "--no-logprobs only applies to --backend openai" in capsys.readouterr().err


def test_an_output_of_a_dash_writes_the_run_to_standard_output(
    stub, tmp_path, monkeypatch, capsys
) -> None:
    """``--output -``, the usual way to pipe a run into trec_eval, wrote a file named ``-``
    in the working directory, and the summary line went to standard output with the run."""
    monkeypatch.chdir(tmp_path)
    stub.handler = oracle
    args = ["rerank", "--data", str(DL19 / "bm25-top100.jsonl"), "--queries", "2"]
    args += ["--depth", "3", "--backend", "openai", "--model", "m", "--base-url", stub.base_url]
    assert main([*args, "--method", "pointwise", "--output", "-"]) == 0
    captured = capsys.readouterr()
    rows = [line.split() for line in captured.out.splitlines()]
    assert len(rows) == 6 and all(len(row) == 6 and row[1] == "Q0" for row in rows)
    assert "wrote -: 2 queries" in captured.err
    assert list(tmp_path.iterdir()) == []
    assert main([*args, "--method", "pointwise", "--output", str(tmp_path / "run.trec")]) == 0
    assert (tmp_path / "run.trec").read_text().splitlines() == captured.out.splitlines()


def test_a_calibrator_that_never_abstains_is_strict_json(stub, tmp_path, capsys) -> None:
    """``calibrate --abstention-rate 0`` wrote ``"threshold": -Infinity``, which Python reads
    but jq, JavaScript and other strict JSON parsers refuse. It now writes ``null``, which
    still means "never abstain", and ``eval`` with it answers every query."""
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in dl19_lines(3)), encoding="utf-8")
    stub.handler = oracle
    common = ["--data", str(data), "--depth", "3", "--method", "pointwise", "--backend", "openai"]
    common += ["--model", "oracle", "--base-url", stub.base_url, "--api-key", "unused"]
    common += ["--qrels", str(DL19 / "qrels.txt")]
    out, report = tmp_path / "cal.json", tmp_path / "report.json"
    assert main(["calibrate", *common, "--out", str(out), "--abstention-rate", "0"]) == 0
    assert "never abstains (abstains on 0% of them)" in capsys.readouterr().out

    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    fields = json.loads(out.read_text(encoding="utf-8"), parse_constant=refuse)
    assert fields["threshold"] is None and fields["reference_size"] == 3
    assert main(["eval", *common, "--abstention", str(out), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["abstention"]["coverage"] == 1.0
    calibrator = Calibrator.load(out)
    assert calibrator.decide([-1e9, -1e9, -1e9]) == (False, calibrator.predict([-1e9] * 3))


def test_data_and_qrels_are_read_from_standard_input_given_as_a_dash(
    stub, tmp_path, monkeypatch, capsys
) -> None:
    """``zcat queries.jsonl.gz | rankwise rerank --data - --output -`` is how a pipeline
    feeds a command; '-' was taken as a file name ("cannot read the queries file '-'"),
    though ``--output -`` wrote to standard output."""
    import gzip
    import io
    import subprocess
    import sys

    stub.handler = oracle
    lines = "".join(json.dumps(record) + "\n" for record in dl19_lines(2)).encode()
    common = ["--depth", "3", "--method", "pointwise", "--backend", "openai", "--model"]
    common += ["oracle", "--base-url", stub.base_url, "--api-key", "unused"]
    command = [sys.executable, "-m", "rankwise.cli", "rerank", "--data", "-", "--output", "-"]
    piped = subprocess.run(
        [*command, *common], input=gzip.compress(lines), capture_output=True, timeout=120
    )
    assert piped.returncode == 0, piped.stderr.decode()
    data = tmp_path / "q.jsonl"
    data.write_bytes(lines)
    assert main(["rerank", "--data", str(data), "--output", str(tmp_path / "run"), *common]) == 0
    assert piped.stdout.decode().splitlines() == (tmp_path / "run").read_text().splitlines()

    def stdin_of(content: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))

    stdin_of((DL19 / "qrels.txt").read_bytes())
    report = tmp_path / "report.json"
    args = ["eval", "--data", str(data), "--qrels", "-", "--report", str(report), *common]
    assert main(args) == 0
    assert json.loads(report.read_text())["queries"] == 2
    capsys.readouterr()
    stdin_of(lines + b"{not json}\n")
    assert main(["rerank", "--data", "-", "--output", str(tmp_path / "run"), *common]) == 2
    assert "rankwise: error: <stdin>:3: expected a JSON object" in capsys.readouterr().err
    assert main(["eval", "--data", "-", "--qrels", "-", *common]) == 2
    assert "cannot both read standard input" in capsys.readouterr().err


def test_a_run_piped_into_a_reader_that_stops_early_ends_quietly(stub) -> None:
    """``rankwise rerank --output - | head -1`` ended in a BrokenPipeError traceback, with
    status 1, once the run outgrew the pipe's buffer and ``head`` had left."""
    import subprocess
    import sys

    stub.handler = oracle
    command = [sys.executable, "-m", "rankwise.cli", "rerank", "--output", "-", "--queries"]
    command += ["20", "--data", str(DL19 / "bm25-top100.jsonl"), "--depth", "100"]
    command += ["--method", "pointwise", "--backend", "openai", "--model", "oracle"]
    command += ["--base-url", stub.base_url, "--api-key", "unused"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = run.stdout.readline()  # 2,000 lines follow, more than a pipe holds
    run.stdout.close()  # the reader leaves, as head does
    _, errors = run.communicate(timeout=300)
    assert first.decode().split()[:2] == ["264014", "Q0"]
    assert run.returncode == 141 and b"Traceback" not in errors, errors.decode()[-2000:]


def test_the_command_says_its_version(capsys) -> None:
    """``rankwise --version``, what a bug report asks for first, was refused as a missing
    command."""
    import rankwise

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"rankwise {rankwise.__version__}"
