"""The ``rankwise`` command: ``demo``, ``rerank`` and ``eval``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TextIO

from rankwise import __version__
from rankwise.backends.base import API_CONCURRENCY, API_MAX_CONTEXT, API_TIMEOUT, Backend
from rankwise.backends.dry_run import DryRunBackend
from rankwise.cache import cache_path
from rankwise.costs import PriceTable
from rankwise.errors import InputError, RankwiseError
from rankwise.evaluate import (
    STDIN,
    Qrels,
    QueryRecord,
    check_trec_ids,
    load_qrels,
    load_queries,
    mean,
    ndcg_at_k,
    shown_path,
    write_trec_run,
)
from rankwise.methods import AUTO, RankingMethod, method_names, scoring_method_names
from rankwise.reranker import Reranker
from rankwise.types import RankedList, Usage

MIN_LABELLED_QUERIES = 3
"""Fewest judged queries ``calibrate`` accepts: a calibrator fits on at least two."""

MIN_CV_QUERIES = 4
"""Fewest judged queries ``eval --abstention cv`` accepts: each split fits a calibrator on at
least two reference queries and holds out two test queries (one has no nAUC)."""

DEMO_METHOD = "pointwise-qlm"
DEMO_QUERIES = 5
"""All the queries of the DL19 sample shipped with the package."""


def _ranged(
    convert: Callable[[str], float], accepts: Callable[[float], bool], requirement: str
) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, and refuse a value ``accepts`` rejects."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text}")
        return value

    return parse


_count = _ranged(int, lambda value: value >= 1, "a whole number of at least 1")
_seconds = _ranged(float, lambda value: value > 0, "a number of seconds above 0")
_share = _ranged(float, lambda value: 0 <= value < 1, "a number in [0, 1)")


def _file(value: str) -> str:
    """A file option's path with a leading ``~`` expanded: the shell leaves the one in
    ``--out=~/cal.json`` as it is."""
    return os.path.expanduser(value)


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", choices=["local", "openai"], default="local")
    group.add_argument(
        "--model",
        default=None,
        help="local: hub id, folder, .gguf or 'default' (SmolLM2-135M); openai: model name",
    )
    group.add_argument(
        "--base-url", default=None, help="openai: OpenAI-compatible URL, e.g. .../v1"
    )
    group.add_argument("--api-key", default=None, help="openai: defaults to $OPENAI_API_KEY")
    group.add_argument(
        "--concurrency",
        type=_count,
        default=None,
        help=f"openai: API requests in flight (default {API_CONCURRENCY})",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        help=f"openai: seconds per API request (default {API_TIMEOUT:g})",
    )
    group.add_argument(
        "--stream-logprobs",
        action="store_true",
        default=None,
        help="openai: stream log-prob requests (same answers; llama-cpp-python's server "
        "then skips the log-probs of the prompt, which it otherwise computes)",
    )
    group.add_argument(
        "--no-logprobs",
        action="store_true",
        default=None,
        help="openai: the server gives no log-probs (LM Studio, older Ollama), so 'auto' "
        "picks listwise",
    )
    group.add_argument(
        "--max-context",
        type=_count,
        default=None,
        help=f"openai: the served model's context in tokens, which prompts are fitted to "
        f"(default {API_MAX_CONTEXT}); for a self-hosted model, somewhat below the server's",
    )
    group.add_argument(
        "--request-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="openai: a field for every request's body, e.g. --request-option "
        "reasoning_effort=minimal (values read as JSON)",
    )
    group.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="local (default float32)",
    )
    group.add_argument(
        "--device", default=None, help="local: torch device, e.g. cuda or mps (default cpu)"
    )


API_ONLY_OPTIONS = (
    "base_url",
    "api_key",
    "concurrency",
    "timeout",
    "stream_logprobs",
    "no_logprobs",
    "max_context",
    "request_option",
)
LOCAL_ONLY_OPTIONS = ("dtype", "device")


def _check_backend_options(args: argparse.Namespace) -> None:
    """Refuse a backend option given for the other backend, rather than ignore it."""
    other = LOCAL_ONLY_OPTIONS if args.backend == "openai" else API_ONLY_OPTIONS
    given = [f"--{name.replace('_', '-')}" for name in other if getattr(args, name) is not None]
    if given:
        owner = "--backend local" if args.backend == "openai" else "--backend openai"
        raise RankwiseError(
            f"{', '.join(given)} only applies to {owner}, and this run uses "
            f"--backend {args.backend}; drop {'it' if len(given) == 1 else 'them'}"
            + (
                " (the local backend batches prompts instead of sending requests)"
                if args.backend == "local"
                else ""
            )
        )


def _add_run_options(parser: argparse.ArgumentParser, *, data_required: bool = True) -> None:
    parser.add_argument(
        "--data",
        type=_file,
        required=data_required,
        help="queries JSONL (may be gzipped); '-' reads standard input",
    )
    parser.add_argument(
        "--method",
        default=AUTO,
        choices=[AUTO, *method_names()],
        help="ranking method; 'auto' (the default) picks one for the backend: pointwise-qlm "
        "on local models, pointwise on APIs with log-probs, else listwise",
    )
    parser.add_argument("--depth", type=_count, default=100, help="candidates reranked per query")
    parser.add_argument(
        "--queries",
        type=_count,
        default=None,
        help="only the first N queries (eval, calibrate: of those the qrels judge)",
    )
    parser.add_argument(
        "--parallel-queries", type=_count, default=4, help="queries reranked at the same time"
    )
    parser.add_argument(
        "--cache", default=None, help="sqlite response cache (default: $RANKWISE_CACHE, off)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="predict LLM calls, tokens and cost without calling the model",
    )
    parser.add_argument(
        "--prices",
        default=None,
        help="JSON price table, USD per 1M tokens by model, for cost estimates "
        "(default: $RANKWISE_PRICES)",
    )
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, e.g. -o window=10 -o calibrated=true (values read as JSON)",
    )
    _add_backend_options(parser)


def _add_qrels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--qrels", type=_file, required=True, help="TREC or BEIR qrels; '-' reads standard input"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankwise", description="LLM reranking.")
    parser.add_argument("--version", action="version", version=f"rankwise {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="rerank a few TREC DL19 queries with the local model")
    _add_run_options(demo, data_required=False)
    demo.set_defaults(method=DEMO_METHOD, depth=20, queries=DEMO_QUERIES, handler=_demo)
    demo.add_argument("--qrels", type=_file, default=None)

    rerank = commands.add_parser("rerank", help="rerank a JSONL file and write a run")
    _add_run_options(rerank)
    rerank.add_argument(
        "--output",
        type=_file,
        required=True,
        help="run.jsonl (one JSON object per query) or a TREC run (any other name: run.trec; "
        "- writes it to standard output)",
    )
    rerank.set_defaults(handler=_rerank)

    evaluate = commands.add_parser("eval", help="rerank and score against qrels")
    _add_run_options(evaluate)
    _add_qrels_option(evaluate)
    evaluate.add_argument("--report", type=_file, default=None, help="write the report JSON here")
    evaluate.add_argument(
        "--abstention",
        type=_file,
        default=None,
        help="a calibrator JSON from `rankwise calibrate`, or 'cv' for repeated 80/20 splits",
    )
    evaluate.add_argument(
        "--plot", type=_file, default=None, help="draw the risk-coverage curve (PNG)"
    )
    evaluate.set_defaults(handler=_eval)

    calibrate = commands.add_parser("calibrate", help="fit an abstention calibrator on qrels")
    _add_run_options(calibrate)
    _add_qrels_option(calibrate)
    calibrate.add_argument("--out", type=_file, required=True, help="calibrator JSON to write")
    calibrate.add_argument(
        "--abstention-rate",
        type=_share,
        default=0.2,
        help="share of reference queries to abstain on",
    )
    calibrate.add_argument(
        "--top", type=_count, default=10, help="scores per list the calibrator reads"
    )
    calibrate.set_defaults(handler=_calibrate)
    return parser


def key_values(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--option``, ``--request-option``) to a dict; values are
    JSON when they parse."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RankwiseError(f"option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def make_backend(args: argparse.Namespace) -> Backend:
    """Build the backend the command-line options describe (checked by :func:`check_run`)."""
    if args.backend == "openai":
        from rankwise.backends.openai import OpenAIBackend

        if not args.model:
            raise RankwiseError("--backend openai needs --model (the served model's name)")
        return OpenAIBackend(
            args.model,
            base_url=args.base_url,
            api_key=args.api_key,
            concurrency=args.concurrency or API_CONCURRENCY,
            timeout=args.timeout or API_TIMEOUT,
            logprobs=not args.no_logprobs,
            stream_logprobs=bool(args.stream_logprobs),
            max_context=args.max_context or API_MAX_CONTEXT,
            request_options=key_values(args.request_option or []),
        )
    from rankwise.backends.transformers import TransformersBackend

    return TransformersBackend(
        args.model or "default", dtype=args.dtype or "float32", device=args.device
    )


async def rerank_all(
    reranker: Reranker,
    records: Sequence[QueryRecord],
    depth: int,
    parallel: int,
    *,
    finished: list[str] | None = None,
) -> list[RankedList]:
    """Rerank every query, ``parallel`` at a time, with a progress bar on stderr; the qid of
    each query reranked is added to ``finished`` as it ends."""
    from tqdm import tqdm

    if parallel < 1:
        raise InputError(f"parallel must be at least 1, got {parallel}")

    gate = asyncio.Semaphore(parallel)
    progress = tqdm(
        total=len(records),
        desc=f"reranking ({reranker.method.name})",
        unit="query",
        file=sys.stderr,
        disable=None,
    )

    done = [] if finished is None else finished

    async def one(record: QueryRecord) -> RankedList:
        async with gate:
            try:
                result = await reranker.arerank(record.query, record.documents(depth))
            except RankwiseError as error:
                raise _query_failed(record, error, len(done), len(records), reranker) from error
        done.append(record.qid)
        progress.update(1)
        return result

    try:
        return list(await asyncio.gather(*(one(record) for record in records)))
    finally:
        progress.close()


class QueryFailedError(RankwiseError):
    """A query of a command's batch failed; the message names it, and the cause is chained."""


class InterruptedRunError(RankwiseError):
    """The user stopped a command's batch (Ctrl-C); the message says how far it got."""


def _query_failed(
    record: QueryRecord, error: RankwiseError, done: int, total: int, reranker: Reranker
) -> QueryFailedError:
    """The error of a batch that ``record`` ended: which query, what failed, and what became
    of the calls already paid for."""
    return QueryFailedError(
        f"{_naming(record, error)}\n{done} of the {total} queries were reranked before it; "
        + _kept_answers(reranker)
    )


def _kept_answers(reranker: Reranker) -> str:
    """What became of the answers of queries reranked before a batch stopped."""
    if reranker.cache is not None:
        return "their answers are in the response cache, so a rerun pays only for the rest"
    return "pass --cache PATH so that a rerun does not pay for their answers again"


def _naming(record: QueryRecord, error: RankwiseError) -> str:
    """``error``'s message, after the query it stopped and where that query was read."""
    where = f" ({record.where})" if record.where else ""
    return f"query {record.qid!r}{where} failed: {error}"


@dataclass(frozen=True)
class RunSetup:
    """What a command checked before any model loads or call is paid for."""

    options: dict[str, Any]
    """The ``-o KEY=VALUE`` method options."""
    prices: PriceTable | None
    """The price table of ``--prices`` or ``RANKWISE_PRICES``, if any."""
    scores_for: str | None = None
    """What reads the run's scores (a calibrator, say), so a rank-only method is refused."""


def check_run(args: argparse.Namespace) -> RunSetup:
    """Refuse what a run could only fail on after loading the model or paying for calls:
    bad backend options, a method option it does not take, an unreadable price table, and,
    when something reads the scores (:func:`_scores_reader`), a method whose scores are
    only ranks.
    """
    scores_for = _scores_reader(args)
    _check_backend_options(args)
    options = key_values(args.option)
    prices = _price_table(args)
    if args.backend == "local":
        # Built on the model's name, a Reranker checks the method, its options and prompts
        # against what a local model can do in milliseconds; loading takes seconds.
        method = Reranker(args.method, args.model or "default", **options).method
        _check_scores(method, scores_for)
    return RunSetup(options, prices, scores_for)


def _scores_reader(args: argparse.Namespace) -> str | None:
    """What reads the scores of the command's run, if anything: a calibrator (``calibrate``)
    or ``eval --abstention``."""
    if args.command == "calibrate":
        return "a calibrator"
    if args.command == "eval" and args.abstention:
        return "--abstention"
    return None


def _check_scores(method: RankingMethod, scores_for: str | None) -> None:
    if scores_for and method.score_kind == "rank":
        raise InputError(
            f"{scores_for} reads the scores, and method {method.name!r} gives rank-only "
            "scores, whose confidence is the same for every query; use a method that "
            f"scores ({', '.join(scoring_method_names())})"
        )


def _run(
    args: argparse.Namespace, setup: RunSetup, records: list[QueryRecord]
) -> tuple[list[RankedList], float]:
    backend = make_backend(args)
    reranker = Reranker(args.method, backend, cache=args.cache, **setup.options)
    args.method = reranker.method.name  # what "auto" stands for, in reports and run tags

    finished: list[str] = []

    async def work() -> list[RankedList]:
        try:
            _check_scores(reranker.method, setup.scores_for)  # an API's "auto" is known now
            return await rerank_all(
                reranker, records, args.depth, args.parallel_queries, finished=finished
            )
        finally:
            await backend.aclose()

    started = time.perf_counter()
    try:
        results = asyncio.run(work())
    except KeyboardInterrupt:
        raise InterruptedRunError(
            f"interrupted after {len(finished)} of the {len(records)} queries; "
            + _kept_answers(reranker)
        ) from None
    return results, time.perf_counter() - started


def _total_usage(results: Sequence[RankedList]) -> Usage:
    return Usage.sum([result.usage for result in results])


def build_report(
    args: argparse.Namespace,
    records: Sequence[QueryRecord],
    results: Sequence[RankedList],
    qrels: dict[str, dict[str, int]],
    seconds: float,
    setup: RunSetup,
) -> dict[str, Any]:
    """The eval report: the keys DESIGN.md promises, plus per-query detail."""
    judged = [(r, res) for r, res in zip(records, results, strict=True) if r.qid in qrels]
    before = [
        ndcg_at_k([d["id"] for d in r.documents(args.depth)], qrels[r.qid]) for r, _ in judged
    ]
    after = [ndcg_at_k(res.ids, qrels[r.qid]) for r, res in judged]
    usage = _total_usage(results)
    prices = setup.prices
    return {
        "method": args.method,
        "options": setup.options,
        "model": results[0].model if results else args.model,
        "backend": args.backend,
        "queries": len(judged),
        "depth": args.depth,
        "ndcg@10": round(mean(after), 4),
        "input_ndcg@10": round(mean(before), 4),
        "queries_improved": sum(a > b for b, a in zip(before, after, strict=True)),
        "queries_worsened": sum(a < b for b, a in zip(before, after, strict=True)),
        "calls": usage.calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cache_hits": usage.cache_hits,
        "reused_answers": usage.reused_answers,
        "retries": usage.retries,
        "fallbacks": sum(len(res.trace.fallbacks) for res in results),
        **_cost_entry(prices, results[0].model if results else args.model, usage),
        "seconds": round(seconds, 3),
        "seconds_per_query": round(seconds / max(1, len(results)), 3),
        "per_query": [
            {
                "qid": r.qid,
                "input_ndcg@10": round(b, 4),
                "ndcg@10": round(a, 4),
                "calls": res.usage.calls,
                "prompt_tokens": res.usage.prompt_tokens,
                "completion_tokens": res.usage.completion_tokens,
                "cache_hits": res.usage.cache_hits,
                "reused_answers": res.usage.reused_answers,
                "seconds": round(res.usage.seconds, 3),
                **_cost_entry(prices, res.model, res.usage, warn=False),
            }
            for (r, res), b, a in zip(judged, before, after, strict=True)
        ],
    }


def _price_table(args: argparse.Namespace) -> PriceTable | None:
    return PriceTable.load(args.prices) if args.prices else PriceTable.from_env()


def _cost_entry(
    table: PriceTable | None, model: str | None, usage: Usage, *, warn: bool = True
) -> dict[str, Any]:
    """``{"cost_usd": ...}`` when a price table lists the model, else nothing."""
    if table is None:
        return {}
    cost = table.cost(model or "", usage)
    if cost is None:
        if not warn:
            return {}
        print(
            f"rankwise: the price table has no entry for {model!r} (and no '*'); no cost estimate",
            file=sys.stderr,
        )
        return {}
    return {"cost_usd": round(cost, 6)}


def _existing_cache(given: str | None) -> Path | Literal[False]:
    """The cache a dry run reads: the one ``--cache`` or ``RANKWISE_CACHE`` names, if that
    file is there; else none, as a dry run writes nothing, and opening creates the file."""
    path = cache_path(given)
    return path if path is not None and path.is_file() else False


def _dry_run(args: argparse.Namespace) -> int:
    """Predict calls, tokens and cost for the command's queries without calling the model."""
    args.data = args.data or _sample_data("dl19_sample.jsonl")
    records = _records_to_rerank(args)
    setup = check_run(args)
    backend = make_backend(args)
    cache = _existing_cache(args.cache)
    reranker = Reranker(args.method, backend, cache=cache, **setup.options)
    args.method = reranker.method.name

    async def estimate(record: QueryRecord) -> Usage:
        try:
            return await reranker.aestimate(record.query, record.documents(args.depth))
        except RankwiseError as error:
            raise QueryFailedError(_naming(record, error)) from error

    async def work() -> list[Usage]:
        try:
            _check_scores(reranker.method, setup.scores_for)  # an API's "auto" is known now
            return [await estimate(record) for record in records]
        finally:
            await backend.aclose()

    usages = asyncio.run(work())
    total = Usage.sum(usages)
    bounds = [reranker.call_bounds(r.documents(args.depth)) for r in records]
    fixed = all(b.exact for b in bounds)
    exact_tokens = DryRunBackend(backend).exact_prompt_tokens
    most = Usage.sum(_scaled(usage, b.most) for usage, b in zip(usages, bounds, strict=True))
    prices = setup.prices
    prediction = {
        "dry_run": True,
        "method": args.method,
        "model": backend.model_name,
        "backend": args.backend,
        "queries": len(records),
        "depth": args.depth,
        "calls": total.calls,
        "calls_per_query": [u.calls for u in usages],
        "cache_hits": total.cache_hits,
        "calls_are_exact": fixed,
        "calls_fewest": sum(b.fewest for b in bounds),
        "calls_most": sum(b.most for b in bounds),
        "prompt_tokens": total.prompt_tokens,
        "max_completion_tokens": total.completion_tokens,
        "prompt_tokens_are_exact": exact_tokens,
        **_cost_entry(prices, backend.model_name, total),
    }
    if not fixed:
        prediction["prompt_tokens_at_most_calls"] = most.prompt_tokens
        cost = _cost_entry(prices, backend.model_name, most, warn=False)
        if cost:
            prediction["cost_usd_at_most_calls"] = cost["cost_usd"]
    prediction["note"] = (
        (
            ""
            if fixed
            else "calls follow the path of a model that prefers no passage; the answers can "
            "make them anything from calls_fewest to calls_most, and the tokens and cost at "
            "the most calls scale with the calls (an estimate). "
        )
        + (
            "prompt tokens from the model's chat template. "
            if exact_tokens
            else "prompt tokens from the tokenizer plus 4 per message (an estimate). "
        )
        + "Completion tokens are the requested maxima (an upper bound)."
        + (
            f" {total.cache_hits} answers are already in the response cache and cost nothing; "
            "calls_fewest and calls_most count without the cache."
            if total.cache_hits
            else ""
        )
    )
    print(json.dumps(prediction, indent=2))
    return 0


def _scaled(usage: Usage, calls: int) -> Usage:
    """``usage`` scaled to ``calls`` calls of the same average size."""
    if not usage.calls:
        return Usage(calls=calls)
    ratio = calls / usage.calls
    return Usage(
        calls=calls,
        prompt_tokens=round(usage.prompt_tokens * ratio),
        completion_tokens=round(usage.completion_tokens * ratio),
    )


def _check_writable(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or an :class:`InputError` if it could not be written, checked
    before any model call so that a typo in an output path does not cost the whole run."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        reason = "is a folder; name a file in it"
    elif not folder.is_dir():
        reason = f"is in a folder that does not exist ({str(folder)!r}); create it first"
    elif not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        reason = "cannot be written (no permission)"
    else:
        return path
    raise InputError(f"the {what} {str(path)!r} {reason}")


def _judged_records(args: argparse.Namespace) -> tuple[list[QueryRecord], Qrels]:
    """The queries the qrels judge, the first ``--queries`` of them, and the qrels. A query
    without judgments would cost its calls and count for nothing, so it is not reranked."""
    qrels = load_qrels(args.qrels)
    records = load_queries(args.data)
    judged = [record for record in records if record.qid in qrels]
    data, judgements = shown_path(args.data), shown_path(args.qrels)
    if not judged:
        raise InputError(
            f"none of the {len(records)} queries in {data!r} is judged in "
            f"{judgements!r}; check that both files use the same qids"
        )
    if len(judged) < len(records):
        print(
            f"rankwise: {len(records) - len(judged)} of the {len(records)} queries in "
            f"{data} are not judged in {judgements}; they are skipped, not reranked",
            file=sys.stderr,
        )
    return judged[: args.queries] if args.queries else judged, qrels


def _eval_records(args: argparse.Namespace) -> tuple[list[QueryRecord], Qrels]:
    """The queries ``eval`` reranks (:func:`_judged_records`), refused if too few for
    ``--abstention cv``."""
    records, qrels = _judged_records(args)
    if args.abstention == "cv" and len(records) < MIN_CV_QUERIES:
        raise InputError(
            f"--abstention cv splits the judged queries into reference and test sets, 5 "
            f"times, and needs at least {MIN_CV_QUERIES}; this run has {len(records)}"
            + (" (raise --queries)" if args.queries else "")
        )
    return records, qrels


def _calibration_records(args: argparse.Namespace) -> tuple[list[QueryRecord], Qrels]:
    """The queries ``calibrate`` reranks (:func:`_judged_records`), refused if too few."""
    records, qrels = _judged_records(args)
    if len(records) < MIN_LABELLED_QUERIES:
        raise InputError(
            f"calibration needs at least {MIN_LABELLED_QUERIES} judged queries; this run "
            f"has {len(records)}" + (" (raise --queries)" if args.queries else "")
        )
    return records, qrels


def _eval(args: argparse.Namespace) -> int:
    _check_eval_outputs(args)
    records, qrels = _eval_records(args)
    setup = check_run(args)
    results, seconds = _run(args, setup, records)
    report = build_report(args, records, results, qrels, seconds, setup)
    if args.abstention:
        report["abstention"] = abstention_report(args, records, results, qrels)
    summary = {k: v for k, v in report.items() if k != "per_query"}
    print(json.dumps(summary, indent=2))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def _check_eval_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any model call, what ``eval`` could only fail on at the end: a file it
    cannot write, a calibrator it cannot read, a plot it cannot draw or has nothing to draw."""
    for path, what in ((args.report, "report file"), (args.plot, "plot file")):
        if path:
            _check_writable(path, what)
    if args.plot and not args.abstention:
        raise InputError(
            "--plot draws the risk-coverage curve of --abstention; pass --abstention cv "
            "or a calibrator file as well"
        )
    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise InputError("--plot needs matplotlib: pip install 'rankwise[plot]'")
        _check_picture_format(args.plot)
    if args.abstention and args.abstention != "cv":
        from rankwise.abstain import Calibrator

        Calibrator.load(args.abstention)  # an unreadable file fails now, not after the run


def _check_picture_format(path: str) -> None:
    """Refuse a picture name whose format matplotlib cannot write (it draws the curve after
    the whole run); a name without a suffix is written as PNG."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise InputError(
            f"--plot {Path(path).name!r}: matplotlib cannot write .{suffix} pictures; name "
            f"the file with one of {', '.join('.' + name for name in sorted(formats))}"
        )


def _judged(records, results, qrels):  # type: ignore[no-untyped-def]
    """Each query's scores of the documents with text, and its nDCG@10; ``records`` are
    judged ones (``_judged_records``)."""
    pairs = list(zip(records, results, strict=True))
    scores = [res.judged_scores for _, res in pairs]
    metrics = [ndcg_at_k(res.ids, qrels[r.qid]) for r, res in pairs]
    return scores, metrics


def abstention_report(args, records, results, qrels) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """nAUC for a calibrator file, or for every confidence function under repeated splits."""
    from rankwise.abstain import Calibrator, cross_validated_nauc, risk_coverage

    scores, metrics = _judged(records, results, qrels)
    if args.abstention == "cv":
        report: dict[str, Any] = {
            "mode": "cv",
            "splits": 5,
            "test_share": 0.2,
            "nauc": cross_validated_nauc(scores, metrics),
        }
        curve = None
    else:
        calibrator = Calibrator.load(
            args.abstention, method=args.method, model=results[0].model if results else None
        )
        confidences = [calibrator.predict(s) for s in scores]
        curve = risk_coverage(confidences, metrics)
        answered = [
            m for c, m in zip(confidences, metrics, strict=True) if not calibrator.abstains_at(c)
        ]
        report = {
            "mode": "calibrator",
            "nauc": round(curve["nauc"], 4),
            "coverage": round(len(answered) / len(metrics), 4) if metrics else 0.0,
            "quality_at_coverage": round(mean(answered), 4),
            "quality_all": round(mean(metrics), 4),
        }
    if args.plot:
        from rankwise.plot import plot_risk_coverage

        label = "calibrator"
        if curve is None:  # cv: no calibrator is fitted on all queries; draw the top score's
            from rankwise.abstain import CONFIDENCE_FUNCTIONS

            curve = risk_coverage([CONFIDENCE_FUNCTIONS["max"](s) for s in scores], metrics)
            label = "top score, all queries"
        title = f"{args.method} on {Path(shown_path(args.data)).name}"
        plot_risk_coverage(curve, args.plot, title=title, label=label)
        report["plot"] = args.plot
    return report


def _calibrate(args: argparse.Namespace) -> int:
    from rankwise.abstain import Calibrator

    _check_writable(args.out, "calibrator file")
    records, qrels = _calibration_records(args)
    setup = check_run(args)
    results, _ = _run(args, setup, records)
    scores, metrics = _judged(records, results, qrels)
    calibrator = Calibrator(n=args.top, method=args.method, model=results[0].model)
    calibrator.fit(scores, metrics, abstention_rate=args.abstention_rate)
    calibrator.save(args.out)
    threshold = calibrator.threshold
    rule = "never abstains" if threshold is None else f"threshold {threshold:.4f}"
    print(
        f"wrote {args.out}: fitted on {len(metrics)} queries, {rule} "
        f"(abstains on {args.abstention_rate:.0%} of them)"
    )
    return 0


def _records_to_rerank(args: argparse.Namespace) -> list[QueryRecord]:
    """The queries the command would rerank, as its dry run prices them: ``eval`` and
    ``calibrate`` rerank only those the qrels judge."""
    if args.command == "eval":
        return _eval_records(args)[0]
    if args.command == "calibrate":
        return _calibration_records(args)[0]
    return load_queries(args.data, args.queries)


def _rerank(args: argparse.Namespace) -> int:
    """Write the run: JSON Lines for a ``.jsonl`` name, else a TREC run; ``--output -``
    writes the TREC run to standard output, to pipe into trec_eval, and the summary to
    standard error."""
    output: Path | TextIO = sys.stdout
    if args.output != "-":
        output = _check_writable(args.output, "output file")
        if output.suffix.lower() == ".json":
            raise InputError(
                f"--output {args.output!r}: a run is written as JSON Lines (one object per "
                "query, name it .jsonl) or as a TREC run (.trec, .txt or any other name); a "
                ".json file would hold one of those under a name that says otherwise"
            )
    records = load_queries(args.data, args.queries)
    json_lines = output if isinstance(output, Path) and output.suffix.lower() == ".jsonl" else None
    if json_lines is None:  # a TREC run: its ids are checked before any call is paid for
        check_trec_ids((r.qid, (d["id"] for d in r.documents(args.depth))) for r in records)
    results, seconds = _run(args, check_run(args), records)
    pairs = list(zip(records, results, strict=True))
    if json_lines is not None:
        with json_lines.open("w", encoding="utf-8") as handle:
            for record, result in pairs:
                handle.write(json.dumps({"qid": record.qid, **result.model_dump()}) + "\n")
    else:
        rows = ((record.qid, result.ids) for record, result in pairs)
        write_trec_run(rows, output, tag=f"rankwise-{args.method}")
    usage = _total_usage(results)
    where, summary = (output, sys.stdout) if isinstance(output, Path) else ("-", sys.stderr)
    print(
        f"wrote {where}: {len(results)} queries, {usage.calls} LLM calls, {seconds:.1f} s",
        file=summary,
    )
    return 0


def _sample_data(name: str) -> str:
    """Path of a file of the DL19 sample shipped with the package."""
    return str(resources.files("rankwise") / "data" / name)


def _demo(args: argparse.Namespace) -> int:
    sample = args.data is None
    args.data = args.data or _sample_data("dl19_sample.jsonl")
    # The sample's judgments fit only the sample: other data is judged by --qrels or not at all.
    qrels_path = args.qrels or (_sample_data("dl19_sample_qrels.txt") if sample else None)
    records = load_queries(args.data, args.queries)
    qrels = load_qrels(qrels_path) if qrels_path else {}
    setup = check_run(args)
    source = "TREC DL 2019 queries (BM25)" if sample else f"queries from {Path(args.data).name}"
    first_stage = "BM25" if sample else "input"
    where = (
        "the local model (the first load converts it once)"
        if args.backend == "local"
        else f"{args.model or 'the served model'} over the API"
    )
    print(
        f"rankwise demo: reranking the top {args.depth} of {len(records)} {source} with "
        f"method {args.method!r} on {where}."
    )
    results, seconds = _run(args, setup, records)
    report = build_report(args, records, results, qrels, seconds, setup)
    for record, result in zip(records, results, strict=True):
        _print_query(record, result, qrels.get(record.qid, {}), args.depth, first_stage)
    print("\n" + "=" * 78)
    if report["queries"]:
        print(f"{'qid':>10}  {first_stage + ' nDCG@10':>13}  {'reranked nDCG@10':>17}")
        for row in report["per_query"]:
            qid = _printable(row["qid"])
            print(f"{qid:>10}  {row['input_ndcg@10']:>13.4f}  {row['ndcg@10']:>17.4f}")
        print(f"{'mean':>10}  {report['input_ndcg@10']:>13.4f}  {report['ndcg@10']:>17.4f}")
        print(
            f"reranking helped {report['queries_improved']} of {report['queries']} queries "
            f"and hurt {report['queries_worsened']}"
        )
    else:
        print("no judgments for these queries, so no nDCG@10; pass --qrels to score them")
    print(
        f"model {report['model']}, {report['calls']} LLM calls, "
        f"{report['prompt_tokens']} prompt tokens, {seconds:.1f} s"
    )
    return 0


def _print_query(
    record: QueryRecord, result: RankedList, judged: dict[str, int], depth: int, first_stage: str
) -> None:
    print(f"\nquery {_printable(record.qid)}: {_printable(record.query)}")
    before = record.documents(depth)[:5]
    print(f"  {first_stage + ' top-5':38} | reranked top-5")
    for old, new in zip(before, result.items[:5], strict=False):
        left = f"[rel {judged.get(old['id'], '-')}] {_printable(old['text'])[:30]:30}"
        right = f"[rel {judged.get(new.id, '-')}] {_printable(new.text)[:30]:30} ({new.score:.3f})"
        print(f"  {left} | {right}")


# A C1 control character, or a UTF-8 lead byte followed by a continuation byte, each read
# as a Latin-1 character: the marks of UTF-8 text that was decoded as Latin-1.
_MOJIBAKE = re.compile("[\x80-\x9f]|[\xc2-\xf4][\x80-\xbf]")


def _printable(text: str) -> str:
    r"""A passage or query made safe to print in one line of the demo's table.

    Passages scraped from the web (MS MARCO's among them) often hold UTF-8 that was read as
    Latin-1, such as ``â\x80\x9c`` for a curly quote or ``Â®`` for ``®``; where the whole
    text decodes back, the printed text shows the intended characters. Text that is Latin-1
    by intent (``café``) does not decode as UTF-8, so it prints as it is. Control characters
    (newlines, tabs, terminal escapes, the C1 range that such text is full of) become spaces,
    so that a passage can neither break the table's columns nor send commands to the
    terminal. Only what is printed changes; the text the model reads is left as it is.
    """
    if _MOJIBAKE.search(text):
        try:
            text = text.encode("latin-1").decode("utf-8")
        except UnicodeError:
            pass
    return "".join(" " if unicodedata.category(char) == "Cc" else char for char in text)


def _check_stdin(args: argparse.Namespace) -> None:
    """Standard input (``-``) can be read for one file option only."""
    reading = [
        option for option in ("data", "qrels") if str(getattr(args, option, None) or "") == STDIN
    ]
    if len(reading) > 1:
        raise InputError(
            "--data and --qrels cannot both read standard input ('-'); pass a path for one"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rankwise`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_stdin(args)
        if getattr(args, "dry_run", False):
            return _dry_run(args)
        return int(args.handler(args))
    except BrokenPipeError:
        # The reader of standard output left (``rankwise rerank --output - | head``): stop
        # quietly, as other commands in a pipeline do, without a traceback, and keep Python
        # from failing again as it flushes standard output on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command stopped by SIGPIPE
    except InterruptedRunError as error:
        print(f"rankwise: {error}", file=sys.stderr)
        return 130  # as a shell reports a command stopped by Ctrl-C
    except KeyboardInterrupt:
        print("rankwise: interrupted", file=sys.stderr)
        return 130
    except RankwiseError as error:
        print(f"rankwise: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
