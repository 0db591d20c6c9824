"""Render the README's tables from the code and the committed benchmark JSON.

    python bench/report.py          # rewrites the marked sections of README.md

Sections between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` are replaced; nothing in
them is typed by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rankwise.methods import METHODS, build_method

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
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


def method_table() -> str:
    rows = ["| method | LLM calls for N=100 | needs | score |", "|---|---|---|---|"]
    for name in METHODS:
        method = build_method(name)
        calls = method.expected_calls(100)
        shown = VARIABLE_CALLS.get(name, f"{calls}" if calls is not None else "varies")
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
    path = RESULTS / "methods.json"
    if not path.is_file():
        return "_Run `python bench/methods.py` to fill this table._"
    data = json.loads(path.read_text())
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


def local_table() -> str:
    path = RESULTS / "local_backend.json"
    if not path.is_file():
        return "_Run `python bench/local_backend.py` to fill this table._"
    data = json.loads(path.read_text())
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


def replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {name} markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> None:
    text = README.read_text()
    text = replace(text, "methods-table", method_table())
    text = replace(text, "quality-table", quality_table())
    text = replace(text, "local-table", local_table())
    README.write_text(text)
    print("README.md tables updated")


if __name__ == "__main__":
    main()
