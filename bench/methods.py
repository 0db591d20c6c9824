"""Every rankwise method on TREC DL19 with the embedded SmolLM2 model, side by side in one run,
plus llm-rankers 0.0.2 (the reference implementation of pointwise, PRP heapsort and setwise)
on the same queries, model and truncation.

    python bench/methods.py --queries 5 --depth 20
    pip install --no-deps llm-rankers==0.0.2   # for the reference comparison

Writes bench/results/methods.json: nDCG@10, calls, tokens and seconds per query per method.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import time
from typing import Any

from _common import dl19, machine, median, write_json

from rankwise import Reranker
from rankwise.backends.model_files import converted_model_dir, default_gguf_path
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import QueryRecord, mean, ndcg_at_k
from rankwise.methods import method_names

PASSAGE_TOKENS = 128  # llm-rankers' run.py default, applied to every system here


async def run_rankwise(
    backend: TransformersBackend,
    method: str,
    records: list[QueryRecord],
    qrels: dict[str, dict[str, int]],
    depth: int,
    **options: Any,
) -> dict[str, Any]:
    reranker = Reranker(method, backend, **options)
    ndcgs, seconds, calls, prompt, completion, fallbacks = [], [], [], [], [], 0
    tops = []
    for record in records:
        started = time.perf_counter()
        ranked = await reranker.arerank(record.query, record.documents(depth))
        seconds.append(time.perf_counter() - started)
        tops.append(ranked.ids[:10])
        ndcgs.append(ndcg_at_k(ranked.ids, qrels[record.qid]))
        calls.append(ranked.usage.calls)
        prompt.append(ranked.usage.prompt_tokens)
        completion.append(ranked.usage.completion_tokens)
        fallbacks += len(ranked.trace.fallbacks)
    return {
        "system": "rankwise",
        "method": method,
        "options": options,
        "depth": depth,
        "ndcg@10": round(mean(ndcgs), 4),
        "per_query_ndcg@10": [round(x, 4) for x in ndcgs],
        "calls_per_query": round(mean(calls), 1),
        "prompt_tokens_per_query": round(mean(prompt), 1),
        "completion_tokens_per_query": round(mean(completion), 1),
        "seconds_per_query": round(mean(seconds), 2),
        "median_seconds_per_query": round(median(seconds), 2),
        "fallbacks": fallbacks,
        "top10": tops,
    }


def reference_pointwise(backend: TransformersBackend, records, qrels, depth) -> dict[str, Any]:
    """The published yes/no prompt scored straight with transformers, one prompt at a time:
    llm-rankers' pointwise code is T5-only, so this is the minimal reference for a causal
    chat model (chat template, P(Yes) from the Yes/No first-token logits)."""
    import torch

    tokenizer, model = backend.tokenizer, backend.model
    yes = tokenizer.encode("Yes", add_special_tokens=False)[0]
    no = tokenizer.encode("No", add_special_tokens=False)[0]
    template = (
        "Passage: {text}\nQuery: {query}\nDoes the passage answer the query? Answer 'Yes' or 'No'"
    )
    ndcgs, seconds, tops = [], [], []
    for record in records:
        started = time.perf_counter()
        scores = []
        for doc in record.documents(depth):
            text = backend.truncate(doc["text"], PASSAGE_TOKENS)
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": template.format(text=text, query=record.query)}],
                tokenize=False,
                add_generation_prompt=True,
            )
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            with torch.inference_mode():
                logits = model(input_ids=ids).logits[0, -1]
            pair = torch.softmax(logits[[yes, no]], dim=0)
            scores.append((float(pair[0]), doc["id"]))
        order = [docid for _, docid in sorted(scores, key=lambda s: -s[0])]
        seconds.append(time.perf_counter() - started)
        tops.append(order[:10])
        ndcgs.append(ndcg_at_k(order, qrels[record.qid]))
    return {
        "system": "reference (published prompt, plain transformers, unbatched)",
        "method": "pointwise",
        "depth": depth,
        "ndcg@10": round(mean(ndcgs), 4),
        "per_query_ndcg@10": [round(x, 4) for x in ndcgs],
        "calls_per_query": depth,
        "seconds_per_query": round(mean(seconds), 2),
        "median_seconds_per_query": round(median(seconds), 2),
        "top10": tops,
    }


def llm_rankers(method: str, backend, records, qrels, depth) -> dict[str, Any]:
    """llm-rankers 0.0.2 on the same converted SmolLM2 folder (its llama code path)."""
    from llmrankers.pairwise import PairwiseLlmRanker
    from llmrankers.rankers import SearchResult
    from llmrankers.setwise import SetwiseLlmRanker

    folder = str(converted_model_dir(default_gguf_path()))
    if method == "prp-heapsort":
        ranker = PairwiseLlmRanker(folder, None, "cpu", method="heapsort", k=10)
    else:
        ranker = SetwiseLlmRanker(folder, None, "cpu", num_child=3, k=10, method="heapsort")
    ndcgs, seconds, compares, errors, tops = [], [], [], 0, []
    for record in records:
        docs = [
            SearchResult(
                docid=d["id"], score=d["score"], text=backend.truncate(d["text"], PASSAGE_TOKENS)
            )
            for d in record.documents(depth)
        ]
        started = time.perf_counter()
        try:
            results = ranker.rerank(record.query, docs)
        except Exception as error:
            errors += 1
            print(f"  llm-rankers {method} failed on {record.qid}: {type(error).__name__}: {error}")
            results = docs
        seconds.append(time.perf_counter() - started)
        compares.append(ranker.total_compare)
        ndcgs.append(ndcg_at_k([r.docid for r in results], qrels[record.qid]))
        tops.append([r.docid for r in results][:10])
    per_comparison = 2 if method == "prp-heapsort" else 1
    return {
        "system": "llm-rankers 0.0.2",
        "method": method,
        "options": {"mode": "generate", "ties": "published"},
        "depth": depth,
        "ndcg@10": round(mean(ndcgs), 4),
        "per_query_ndcg@10": [round(x, 4) for x in ndcgs],
        "calls_per_query": round(per_comparison * mean(compares), 1),
        "seconds_per_query": round(mean(seconds), 2),
        "median_seconds_per_query": round(median(seconds), 2),
        "errors": errors,
        "top10": tops,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument(
        "--allpair-depth",
        type=int,
        default=10,
        help="PRP all-pairs costs N(N-1) prompts; run it shallower",
    )
    parser.add_argument("--methods", nargs="*", default=method_names())
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()

    records, qrels = dl19(args.queries)
    records = [r for r in records if r.qid in qrels]
    backend = TransformersBackend("default")
    rows: list[dict[str, Any]] = []

    def show(row: dict[str, Any]) -> None:
        rows.append(row)
        print(
            f"{row['system'][:28]:28} {row['method']:14} {row.get('options', '')!s:24} "
            f"depth {row['depth']:3}  nDCG@10 {row['ndcg@10']:.4f}  "
            f"calls {row['calls_per_query']:7}  s/query {row['seconds_per_query']:7}",
            flush=True,
        )

    for depth in sorted({args.depth, args.allpair_depth}):
        bm25 = mean(
            [ndcg_at_k([d["id"] for d in r.documents(depth)], qrels[r.qid]) for r in records]
        )
        show(
            {
                "system": "BM25 (input order)",
                "method": "bm25",
                "depth": depth,
                "ndcg@10": round(bm25, 4),
                "calls_per_query": 0,
                "seconds_per_query": 0,
            }
        )
    for method in args.methods:
        depth = args.allpair_depth if method == "prp-allpair" else args.depth
        options: dict[str, Any] = {}
        if method in (
            "pointwise",
            "pointwise-qlm",
            "prp-allpair",
            "prp-heapsort",
            "prp-sliding",
            "setwise",
        ):
            options["max_passage_tokens"] = PASSAGE_TOKENS
        show(await run_rankwise(backend, method, records, qrels, depth, **options))
    if not args.no_reference:
        show(reference_pointwise(backend, records, qrels, args.depth))
        for method in ("prp-heapsort", "setwise"):
            opts = {"max_passage_tokens": PASSAGE_TOKENS, "mode": "generate", "ties": "published"}
            show(await run_rankwise(backend, method, records, qrels, args.depth, **opts))
            if importlib.util.find_spec("llmrankers") is None:
                print("llm-rankers is not installed: pip install --no-deps llm-rankers==0.0.2")
                continue
            show(llm_rankers(method, backend, records, qrels, args.depth))
    agreement = []
    for method in ("pointwise", "prp-heapsort", "setwise"):
        ours = next(
            (r for r in rows[::-1] if r["system"] == "rankwise" and r["method"] == method), None
        )
        theirs = next(
            (
                r
                for r in rows
                if r["system"] != "rankwise" and r["method"] == method and "top10" in r
            ),
            None,
        )
        if ours and theirs:
            same = sum(a == b for a, b in zip(ours["top10"], theirs["top10"], strict=True))
            agreement.append(
                {
                    "method": method,
                    "reference": theirs["system"],
                    "ndcg_difference": round(abs(ours["ndcg@10"] - theirs["ndcg@10"]), 4),
                    "identical_top10_queries": same,
                    "queries": len(records),
                }
            )
            print(
                f"agreement {method}: |ΔnDCG| {agreement[-1]['ndcg_difference']}, "
                f"identical top-10 on {same}/{len(records)} queries"
            )
    payload = {
        "benchmark": "methods",
        "model": backend.model_name,
        "dtype": "float32",
        "queries": len(records),
        "qids": [r.qid for r in records],
        "machine": machine(),
        "rows": rows,
        "agreement_with_reference": agreement,
    }
    print(f"wrote {write_json('methods', payload)}")
    assert not any(math.isnan(row["ndcg@10"]) for row in rows)


if __name__ == "__main__":
    asyncio.run(main())
