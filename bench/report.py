"""Render the README's tables from the code and the committed benchmark JSON.

    python bench/report.py          # rewrites the marked sections of README.md

Sections between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` are replaced; nothing in
them is typed by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rankwise.methods import METHODS, build_method

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCH_README = ROOT / "bench" / "README.md"
RESULTS = ROOT / "bench" / "results"

NEEDS = {
    "chat": "generation",
    "logprobs": "first-token log-probs",
    "prompt_logprobs": "prompt log-probs (local)",
    "attention": "attention weights (local)",
}
VARIABLE_CALLS = {
    "prp-heapsort": "≈2·(N + k·log₂N), sequential",
    "setwise": "≈N/c + k·log_c N, sequential",
}


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _met(flag: bool) -> str:
    return "met" if flag else "**missed**"


def method_table() -> str:
    rows = ["| method | LLM calls for N=100 | needs | score |", "|---|---|---|---|"]
    for name in METHODS:
        method = build_method(name)
        calls = method.expected_calls(100)
        if calls is None and name not in VARIABLE_CALLS:
            fewest, most = method.call_bounds(100)
            shown = f"{fewest} to {most}, sequential"
        else:
            shown = VARIABLE_CALLS.get(name, f"{calls}")
        needs = ", ".join(NEEDS[need] for need in method.requires)
        kind = {
            "probability": "P(relevant) in [0, 1], thresholdable",
            "log_likelihood": "log-likelihood (order within a query)",
            "wins": "wins + ½·ties (Borda count)",
            "rank": "1/rank (order only)",
            "attention": "calibrated attention (order within a query)",
        }[method.score_kind]
        rows.append(f"| `{name}` | {shown} | {needs} | {kind} |")
    return "\n".join(rows)


def quality_table() -> str:
    data = _load("methods")
    if not data:
        return "_Run `python bench/methods.py` to fill this table._"
    rows = [
        f"TREC DL19, {data['queries']} queries, {data['model']} ({data['dtype']}), "
        f"{data['machine']['cores']} CPU cores; from `bench/results/methods.json`.",
        "",
        "| system | method | options | depth | nDCG@10 | calls/query | s/query | fallbacks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        options = ", ".join(
            f"{k}={v}" for k, v in (row.get("options") or {}).items() if k != "max_passage_tokens"
        )
        rows.append(
            f"| {row['system']} | {row['method']} | {options} | {row['depth']} | "
            f"{row['ndcg@10']:.4f} | {row['calls_per_query']} | {row['seconds_per_query']} | "
            f"{row.get('fallbacks', '')} |"
        )
    rows += [
        "",
        "A row equal to BM25 means the model's answers carried no usable preference: PRP "
        "answers that disagree between the two orders are ties, and ties keep the first-stage "
        "order. Fallbacks count answers that named no passage or no permutation.",
    ]
    for item in data.get("agreement_with_reference", []):
        rows.append("")
        rows.append(
            f"- `{item['method']}` vs {item['reference']}: |ΔnDCG@10| = "
            f"{item['ndcg_difference']}, identical top-10 on "
            f"{item['identical_top10_queries']}/{item['queries']} queries."
        )
    return "\n".join(rows)


def all_queries_table() -> str:
    data = _load("quality_dl19")
    if not data:
        return "_Run `python bench/quality_dl19.py` to fill this table._"
    rows = [
        f"All {data['queries']} TREC DL19 queries, BM25 top-{data['depth']}, {data['model']} "
        "(float32 unless named), the Reranker's default options, 2 CPU cores; from "
        "`bench/results/quality_dl19.json`. A blend fuses the model's order with BM25's by "
        f"weighted RRF (k = {data['rrf_k']}; the weight is BM25's share).",
        "",
        "| system | nDCG@10 | better than BM25 | worse | s/query | top-10 as in float32 |",
        "|---|---|---|---|---|---|",
    ]
    for row in data["systems"]:
        same = row.get("same_top10_as_float32")
        rows.append(
            f"| {row['system']} | {row['ndcg@10']:.4f} | {row.get('better_than_bm25', '')} | "
            f"{row.get('worse_than_bm25', '')} | {row.get('median_seconds_per_query', '')} | "
            + ("" if same is None else f"{same}/{data['queries']}")
            + " |"
        )
    return "\n".join(rows)


def quality_vs_cost_table() -> str:
    data = _load("quality_vs_cost")
    if not data:
        return "_Run `python bench/quality_vs_cost.py` to fill this table._"
    rows = [
        f"All {data['queries']} TREC DL19 queries, `{data['method']}` (what `auto` picks on a "
        f"local model), {data['model']} ({data['dtype']}), {data['machine']['cores']} CPU cores, "
        "every combination run "
        "on each query in turn; from `bench/results/quality_vs_cost.json`. BM25: "
        f"{data['bm25_ndcg@10']:.4f}.",
        "",
        "| `max_passage_tokens` | depth | nDCG@10 | better than BM25 | worse | s/query (median) |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(data["rows"], key=lambda r: (r["max_passage_tokens"], r["depth"])):
        rows.append(
            f"| {row['max_passage_tokens']} | {row['depth']} | {row['ndcg@10']:.4f} | "
            f"{row['better_than_bm25']} | {row['worse_than_bm25']} | "
            f"{row['median_seconds_per_query']} |"
        )
    deeper = _load("quality_vs_cost_depth100")
    if deeper:
        shallow, deep = sorted(deeper["rows"], key=lambda r: r["depth"])
        rows += [
            "",
            f"A second run (`--depths {shallow['depth']},{deep['depth']} --passage-tokens "
            f"{deep['max_passage_tokens']} --name quality_vs_cost_depth100`): depth "
            f"{deep['depth']} {deep['ndcg@10']:.4f} ({deep['better_than_bm25']} better, "
            f"{deep['worse_than_bm25']} worse) at {deep['median_seconds_per_query']} s/query, "
            f"against depth {shallow['depth']} {shallow['ndcg@10']:.4f} at "
            f"{shallow['median_seconds_per_query']} s/query in the same run.",
        ]
    return "\n".join(rows)


def local_table() -> str:
    data = _load("local_backend")
    if not data:
        return "_Run `python bench/local_backend.py` to fill this table._"
    load = data["load"]
    lines = [
        f"- Load: {load['cold_gguf_conversion_s']} s the first time (GGUF → safetensors), "
        f"{load['cached_median_s']} s from the cache.",
    ]
    for run in data["pointwise"]:
        lines.append(
            f"- `pointwise`, depth {run['depth']}, {run['dtype']}: "
            f"{run['median_seconds_per_query']} s/query (median of {run['queries']}), "
            f"nDCG@10 {run['ndcg@10']}."
        )
    for agreement in data["bf16_vs_fp32"]:
        lines.append(
            f"- bf16 vs fp32 at depth {agreement['depth']}: Kendall τ {agreement['kendall_tau']}, "
            f"identical top-10 on {agreement['identical_top10']}/{agreement['queries']} queries, "
            f"bf16 {agreement['speedup_bf16']}× as fast."
        )
    return "\n".join(lines)


def performance_table() -> str:
    """The four performance benchmarks against their targets, from their JSON."""
    rows = [
        "| benchmark | measured (medians, side by side in one run) | target | result |",
        "|---|---|---|---|",
    ]
    for name, where in (
        ("local_throughput", ""),
        ("local_throughput_no_amx", "cpu"),
        ("local_throughput_cuda", "cuda"),
    ):
        local = _load(name)
        if local:
            rows.extend(_local_rows(local, _device_label(local, where)))
    packing = _load("packing")
    if packing:
        for m in packing["methods"]:
            rows.append(
                f"| packing: `{m['method']}` depth {m['depth']} ({m['queries']} q) | packed "
                f"{m['median_packed_s_per_query']} s/q vs padded "
                f"{m['median_padded_s_per_query']} s/q: **{m['median_speedup']}×** (padding "
                f"{m['median_padded_padding']:.0%} of the padded positions); identical rankings "
                f"{m['identical_rankings']}/{m['queries']} | (no target) | — |"
            )
        long = packing.get("long_prompts")
        if long:
            seconds = long["median_seconds_per_round"]
            rows.append(
                f"| packing: `first`, {long['parallel']} queries at once, window "
                f"{long['window']} ({long['rounds']} rounds) | rankwise {seconds['rankwise']} s "
                f"vs all in one row with an explicit mask {seconds['one row, explicit mask']} s "
                f"(**{long['speedup_vs_one_row_explicit_mask']}×**) vs padded "
                f"{seconds['padded']} s (**{long['speedup_vs_padded']}×**); same rankings "
                f"{long['same_rankings']} | (no target) | — |"
            )
    graphs = _load("cuda_graphs_cuda")
    if graphs:
        rows.extend(_graph_rows(graphs, _device_label(graphs, "cuda")))
    for name, where in (("compute_ceiling", ""), ("compute_ceiling_no_amx", "cpu")):
        ceiling = _load(name)
        if ceiling:
            rows.extend(_ceiling_rows(ceiling, _device_label(ceiling, where)))
    host = _load("host_work")
    if host:
        rows.extend(_host_rows(host))
    store = _load("prefix_store")
    if store:
        for m in store["methods"]:
            rows.append(
                f"| prefix_store: `{m['method']}` depth {m['depth']} ({m['queries']} q, "
                f"{m['median_calls']:.0f} calls) | prefixes kept across calls "
                f"{m['median_on_s_per_query']} s/q vs without {m['median_off_s_per_query']} s/q:"
                f" **{m['median_speedup']}×**, {m['computed_token_share']:.0%} of the positions "
                f"computed, identical rankings {m['identical_rankings']}/{m['queries']} | "
                "(no target) | — |"
            )
    for name, where in (
        ("first_vs_generate", ""),
        ("first_vs_generate_bfloat16", ""),
        ("first_vs_generate_cuda", "cuda"),
    ):
        first = _load(name)
        if first:
            rows.extend(_first_rows(first, _device_label(first, where)))
    generation = _load("generation")
    if generation:
        rows.extend(_generation_rows(generation))
    for name in ("reused_answers", "reused_answers_judge", "reused_answers_api"):
        reused = _load(name)
        if reused:
            rows.extend(_reused_rows(reused))
    api = _load("api_concurrency")
    if api:
        for r in api["rows"]:
            rows.append(
                f"| api_concurrency: `{r['method']}` over {r['candidates']} ({r['calls']} calls, "
                f"{api['latency_s'] * 1000:.0f} ms each) | {r['rankwise_seconds']} s vs ideal "
                f"{r['ideal_seconds']} s: **{r['ratio_to_ideal']}×**"
                + (
                    f" (whole waves of {api['concurrency']}: {r['whole_waves_seconds']} s)"
                    if "whole_waves_seconds" in r and r["whole_waves_seconds"] != r["ideal_seconds"]
                    else ""
                )
                + "; one call at a time "
                f"{r['one_at_a_time_seconds']} s | ≤ 1.3× ideal | "
                f"{_met(r['ratio_to_ideal'] <= 1.3)} |"
            )
    libs = _load("vs_libraries")
    if libs:
        for v in libs["verdicts"]:
            paired = v.get("median_paired_speedup")
            rows.append(
                f"| vs_libraries: {v['library']} | {v['library_ndcg@10']} nDCG@10, "
                f"{v['library_median_s']} s/q vs {v['rankwise_fastest_at_least_as_good']} "
                f"{v['rankwise_median_s']} s/q"
                + (f" (paired, same query and round: **{paired}×**)" if paired else "")
                + f" | as good and faster | {_met(v['at_least_as_good_and_faster'])} |"
            )
    return "\n".join(rows)


def libraries_table() -> str:
    """Every system of bench/vs_libraries.py with its quality, calls, time or error."""
    libs = _load("vs_libraries")
    if not libs:
        return "_Run `./run bench vs_libraries` to fill this table._"
    repeats = libs.get("repeats", 1)
    rows = [
        f"TREC DL19, {libs['queries']} queries, BM25 top-{libs['depth']}, "
        f"{libs['words_per_passage']} words per passage, {libs['model']}"
        + (f"; measured{_device_label(libs, 'cpu')}" if "machine" in libs else "")
        + (
            f"; every query ranked by each system in turn (rotating order) {repeats} times, "
            "the server's prompt cache cleared before each, times the median of all runs."
            if repeats > 1
            else "."
        ),
        "",
        "| system | version | nDCG@10 | calls/query | median s/query | returned | failed queries |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in libs["rows"]:
        if "error" in r:
            rows.append(
                f"| {r['system']} | {r.get('version')} | cannot run: {r['error']} | | | | |"
            )
            continue
        returned = r.get("returned_per_query")
        rows.append(
            f"| {r['system']} | {r.get('version') or ''} | {r['ndcg@10']:.4f} | "
            f"{r['calls_per_query']} | {r.get('median_seconds_per_query', 0)} | "
            f"{min(returned) if returned else ''}–{max(returned) if returned else ''} | "
            f"{r.get('failed_queries', 0)} |"
        )
    rows.append("")
    for r in libs["rows"]:
        for error in r.get("errors", [])[:1]:
            rows.append(
                f"- {r['system']}, first failure ({error['qid']}): `{error['error'][:300]}`"
            )
        returned = r.get("returned_per_query") or []
        if not r.get("errors") and returned and min(returned) < libs["depth"]:
            answer = " ".join(r.get("first_query_last_answer", "").split())[:200]
            rows.append(
                f"- {r['system']} returned fewer documents than it was given (it keeps only "
                f"what it can parse from the answer); the model's answer on the first query: "
                f"`{answer}`"
            )
    return "\n".join(rows)


def _device_label(data: dict[str, Any], where: str) -> str:
    """`` on NVIDIA H100 80GB HBM3`` for a GPU run, `` on AMD EPYC (no AMX)`` for a second
    CPU's run, nothing for the main CPU file."""
    if not where:
        return ""
    machine = data["machine"]
    if where == "cpu":
        amx = any(feature.startswith("amx") for feature in machine["cpu_features"])
        return f" on {machine['cpu_model']}{'' if amx else ' (no AMX)'}"
    return f" on {machine['gpu']}"


def _local_rows(local: dict[str, Any], where: str) -> list[str]:
    rows = []
    for m in local["methods"]:
        dtype = m["dtype"]
        exact = m["median_batched_no_prefix_store_s_per_query"]
        reuse = m.get("median_batched_prefix_reuse_s_per_query")  # GPU runs only
        with_reuse = f", with the CPU's prefix reuse {reuse} s/q" if reuse is not None else ""
        padded = m.get("median_batched_padded_s_per_query")  # runs that pack
        packing = f"padded instead of packed {padded} s/q, " if padded is not None else ""
        repeats = f", median of {m['repeats']} runs each" if m["repeats"] > 1 else ""
        graphed = m.get("median_graphed_vs_raw")  # GPU runs with CUDA graphs
        exact_arm = "plain passes, no graphs" if graphed is not None else "padded with no kept"
        exact_arm += " prefixes" if graphed is None else ""
        rows.append(
            f"| local_throughput{where}: `{m['method']}` {dtype} depth "
            f"{m['depth']} ({m['queries']} q{repeats}) | "
            f"batched {m['median_batched_s_per_query']} s/q ({packing}{exact_arm} {exact} s/q, "
            f"no prefix reuse {m['median_batched_no_prefix_reuse_s_per_query']} s/q{with_reuse})"
            f" vs one prompt at a time {m['median_one_at_a_time_s_per_query']} s/q: "
            f"**{round(m['median_speedup'], 2)}×**; plain `model(...)` over the same batches vs "
            f"one prompt per call: {m['median_raw_speedup']}× "
            f"({m['median_raw_forward_s_per_query']} vs "
            f"{m['median_raw_one_at_a_time_s_per_query']} s/q); padding "
            f"{m['median_padding_waste']:.0%}, "
            f"{m['median_tokens_per_s']:.0f} prompt tokens/s, identical rankings "
            f"{m['identical_rankings']}/{m['queries']} | ≥ {m['speedup_target']}× | "
            f"{_met(m['speedup_target_met'])} |"
        )
        in_batches = m.get("median_batch_work_overhead")  # runs since it was measured
        split = (
            f"; the batch function alone over the same batches {in_batches:+.1%}, the rest is "
            "prompt work and scheduling"
            if in_batches is not None
            else ""
        )
        rows.append(
            f"| local_throughput{where}: `{m['method']}` {dtype} overhead | rankwise "
            f"{exact} s/q ({exact_arm}) vs raw forward of the same batches "
            f"{m['median_raw_forward_s_per_query']} s/q: **{m['median_overhead']:+.1%}**{split} | "
            f"≤ {m['overhead_target']:.0%} | {_met(m['overhead_target_met'])} |"
        )
        if graphed is not None:
            rows.append(
                f"| local_throughput{where}: `{m['method']}` {dtype}, the default with CUDA "
                f"graphs | {m['median_batched_s_per_query']} s/q vs plain `model(...)` over the "
                f"same batches {m['median_raw_forward_s_per_query']} s/q: **{graphed:+.1%}** | "
                "(no target) | — |"
            )
    return rows


def _graph_rows(data: dict[str, Any], where: str) -> list[str]:
    rows = []
    for m in data["methods"]:
        rows.append(
            f"| cuda_graphs{where}: `{m['method']}` depth {m['depth']} ({m['queries']} q, "
            f"median of {m['repeats']} runs each) | CUDA graphs {m['median_graphs_s_per_query']}"
            f" s/q vs plain passes {m['median_plain_s_per_query']} s/q: "
            f"**{m['median_speedup']}×**; each query's first run (captures included) "
            f"{m['median_graphs_cold_s_per_query']} vs {m['median_plain_cold_s_per_query']} s/q;"
            f" identical rankings {m['identical_rankings']}/{m['queries']}; {m['graphs_kept']} "
            f"graphs, {m['graph_memory_mb']:.0f} MB | (no target) | — |"
        )
    return rows


def _ceiling_rows(data: dict[str, Any], where: str) -> list[str]:
    rows = []
    for r in data["rows"]:
        rows.append(
            f"| compute_ceiling{where}: `{data['method']}` {r['dtype']} depth {data['depth']} "
            f"({data['queries']} q, {r['prompts']} prompts), plain `model(...)` | one prompt at "
            f"a time {r['one_at_a_time_gflops']} GFLOP/s ({r['one_at_a_time_share_of_peak']:.0%}"
            f" of the {r['peak_gflops']} GFLOP/s matrix-multiply peak), batches of "
            f"{data['batch']} {r['batched_gflops']} GFLOP/s: {r['batching_speedup']}×. Even "
            f"with every operation at peak, batching could gain at most **{r['ceiling']}×**; "
            f"with the element-wise work as measured ({1 - r['batched_matmul_share']:.0%} of a "
            f"batched pass), about {r['profiled_ceiling']}× | (bounds the ≥ 3× target) | — |"
        )
    return rows


def _host_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for m in data["methods"]:
        rows.append(
            f"| host_work: `{m['method']}` depth {m['depth']} ({m['queries']} q, "
            f"{m['median_prompts_per_query']:.0f} prompts/q) | rendering and tokenising per "
            f"prompt, every prompt whole {m['median_whole_ms_per_prompt']} ms vs remembered "
            f"layouts and pieces {m['median_remembered_ms_per_prompt']} ms: "
            f"**{m['median_speedup']}×**; same prompt tokens "
            f"{m['same_prompt_tokens']}/{m['queries']} | (no target) | — |"
        )
    model = data["pointwise_with_model"]
    rows.append(
        f"| host_work: `pointwise` with the model ({model['queries']} q) | host time per "
        f"prompt (wall time less forward passes) {model['median_whole_host_ms_per_prompt']} "
        f"ms vs {model['median_remembered_host_ms_per_prompt']} ms; identical rankings "
        f"{model['identical_rankings']}/{model['queries']} | (no target) | — |"
    )
    return rows


def _generation_rows(data: dict[str, Any]) -> list[str]:
    """The default prefill and decoding against a padded prefill and ``model.generate``."""
    rewriting, listwise = data["rewriting"], data["listwise_queries_at_once"]
    rows = []
    for label, part in (
        (
            f"generation: query rewriting, {len(rewriting['strategies'])} strategies in one "
            f"batch ({rewriting['questions']} q)",
            rewriting,
        ),
        (
            f"generation: `listwise`, {listwise['parallel']} queries at once, depth "
            f"{listwise['depth']} ({listwise['rounds']} rounds)",
            listwise,
        ),
    ):
        seconds = part["median_seconds"]
        if "speedup_vs_padded_prefill" not in part:  # written before the prefill arm
            rows.append(
                f"| {label} | finished prompts dropped from the batch "
                f"{seconds['drop finished prompts']} s vs `model.generate` "
                f"{seconds['model.generate']} s: **{part['speedup']}×**; same text "
                f"{part['same_output']} | (no target) | — |"
            )
            continue
        rows.append(
            f"| {label} | rankwise (packed prefill, finished prompts dropped) "
            f"{seconds['rankwise']} s vs padded prefill {seconds['padded prefill']} s "
            f"(**{part['speedup_vs_padded_prefill']}×**) vs `model.generate` "
            f"{seconds['model.generate']} s (**{part['speedup_vs_generate']}×**); same text "
            f"{part['same_output']} | (no target) | — |"
        )
    return rows


def _reused_rows(data: dict[str, Any]) -> list[str]:
    """Answers reused within a rerank against every prompt asked again."""
    judge = {
        "local": f"{data['model']} (local)",
        "api": f"{data['model']} over llama.cpp",
        "judge": "a judge answering from the NIST judgments (loopback stub)",
    }[data.get("backend", "local")]
    rows = []
    for method, row in data["methods"].items():
        reused, asked = row["arms"]["reused"], row["arms"]["asked again"]
        calls = [round(arm["calls_per_query"], 1) for arm in (reused, asked)]
        rows.append(
            f"| reused_answers: `{method}` depth {data['depth']} ({data['queries']} q), "
            f"{judge} | reused {reused['seconds_per_query']} s/q, "
            f"{calls[0]:g} calls vs asked again {asked['seconds_per_query']} "
            f"s/q, {calls[1]:g} calls: **{row['speedup']}×** time, "
            f"{row['calls_ratio']}× calls; same rankings {row['same_rankings']} | "
            "(no target) | — |"
        )
    return rows


def _first_rows(first: dict[str, Any], where: str) -> list[str]:
    f, g = first["methods"]["first"], first["methods"]["listwise"]
    if first["dtype"] != "float32":
        where += f" in {first['dtype']}"
    rows = [
        f"| first_vs_generate{where}: window {first['window']} ({first['queries']} q) | FIRST "
        f"{f['median_seconds_per_window']} s/window vs listwise generation "
        f"{g['median_seconds_per_window']} s/window: "
        f"**{first['speedup_first_over_listwise']}×**{_prompt_sizes(first)}; nDCG@10 "
        f"{f['ndcg@10']} vs {g['ndcg@10']} | ≥ {first['target']}× | "
        f"{_met(first['target_met'])} |"
    ]
    full = first["methods"].get("listwise (full permutation)")
    if full:
        rows.append(
            f"| first_vs_generate{where}: window {first['window']}, generation made to write a "
            f"full permutation (≥ {first['full_permutation_tokens']} tokens) | FIRST "
            f"{f['median_seconds_per_window']} s/window vs "
            f"{full['median_seconds_per_window']} s/window: "
            f"**{first['speedup_first_over_full_permutation']}×** | ≥ {first['target']}× | "
            f"{_met(first['target_met_against_full_permutation'])} |"
        )
    return rows


def replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {name} markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def _prompt_sizes(first: dict[str, Any]) -> str:
    """Prompt tokens per window of both arms, named, FIRST first as in the row's sentence."""
    f, g = first["methods"]["first"], first["methods"]["listwise"]
    return (
        f" (prompts: FIRST {f['median_prompt_tokens_per_window']:.0f} vs listwise "
        f"{g['median_prompt_tokens_per_window']:.0f} tokens, listwise "
        f"{first['listwise_over_first_prompt_tokens']}× as long; "
        f"{g['median_generated_tokens_per_query']:.0f} tokens generated)"
    )


def main() -> None:
    text = README.read_text()
    text = replace(text, "methods-table", method_table())
    text = replace(text, "quality-table", quality_table())
    text = replace(text, "dl19-table", all_queries_table())
    text = replace(text, "cost-table", quality_vs_cost_table())
    text = replace(text, "local-table", local_table())
    README.write_text(text)
    bench = BENCH_README.read_text()
    bench = replace(bench, "performance-table", performance_table())
    bench = replace(bench, "libraries-table", libraries_table())
    BENCH_README.write_text(bench)
    print("README.md and bench/README.md tables updated")


if __name__ == "__main__":
    main()
