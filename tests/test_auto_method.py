"""``method="auto"``, the default: the method that fits the backend, resolved before any
model loads, and named in every result and report."""

from __future__ import annotations

import json

import pytest

from rankwise import CapabilityError, InputError, OpenAIBackend, Reranker
from rankwise.abstain import Abstention, Calibrator
from rankwise.backends.base import Capabilities
from rankwise.cli import main
from rankwise.methods import default_method
from tests.conftest import DL19

LOOPBACK = "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    ("capabilities", "absolute", "expected"),
    [
        (Capabilities(logprobs=True, prompt_logprobs=True), False, "pointwise-qlm"),
        (Capabilities(chat=False, prompt_logprobs=True), False, "pointwise-qlm"),
        (Capabilities(logprobs=True, prompt_logprobs=True), True, "pointwise"),
        (Capabilities(logprobs=True), False, "pointwise"),
        (Capabilities(), False, "listwise"),
    ],
)
def test_default_method_follows_the_capabilities(
    capabilities: Capabilities, absolute: bool, expected: str
) -> None:
    assert default_method(capabilities, absolute_scores=absolute) == expected


def test_a_local_model_gets_query_likelihood_without_loading() -> None:
    reranker = Reranker(top_n=3)
    assert reranker.method.name == "pointwise-qlm"
    assert reranker._backend is None  # resolved from what any local model can do
    assert Reranker(backend="default").method.name == "pointwise-qlm"


def test_a_score_threshold_gets_absolute_scores() -> None:
    assert Reranker(score_threshold=0.5).method.name == "pointwise"


def test_api_backends_get_pointwise_with_logprobs_and_listwise_without() -> None:
    assert Reranker(backend=OpenAIBackend("m", base_url=LOOPBACK)).method.name == "pointwise"
    plain = OpenAIBackend("m", base_url=LOOPBACK, logprobs=False)
    assert Reranker(backend=plain).method.name == "listwise"


def test_what_auto_cannot_satisfy_is_an_error_that_says_auto_chose() -> None:
    plain = OpenAIBackend("m", base_url=LOOPBACK, logprobs=False)
    with pytest.raises(CapabilityError, match=r"needs logprobs.*'auto' chose 'pointwise'"):
        Reranker(backend=plain, score_threshold=0.5)
    with pytest.raises(CapabilityError, match=r"'auto' chose 'pointwise'.*Abstention rule"):
        Reranker(backend=plain, abstain=Abstention("max", 0.5))
    with pytest.raises(InputError, match=r"rank-only.*'auto' chose 'listwise'"):
        Reranker(backend=plain, abstain=Calibrator(n=3))
    with pytest.raises(CapabilityError) as named:
        Reranker("pointwise", plain)
    assert "auto" not in str(named.value)


def test_options_go_to_the_resolved_method() -> None:
    reranker = Reranker(max_passage_tokens=64)
    assert reranker.method.name == "pointwise-qlm"
    assert reranker.method.max_passage_tokens == 64


def test_auto_reranks_with_the_real_model_and_names_the_method(local_backend, dl19) -> None:
    record = dl19[0]
    documents = record.documents(6)
    ranked = Reranker(backend=local_backend).rerank(record.query, documents)
    assert ranked.method == "pointwise-qlm" and ranked.score_kind == "log_likelihood"
    assert sorted(ranked.ids) == sorted(d["id"] for d in documents)
    assert ranked.usage.calls == len(documents)


def test_framework_adapters_default_to_auto() -> None:
    from langchain_openai import ChatOpenAI
    from langchain_rankwise import RankwiseRerank as LangChainRerank
    from llama_index.postprocessor.rankwise import RankwiseRerank as LlamaIndexRerank

    assert LangChainRerank().reranker.method.name == "pointwise-qlm"
    assert LlamaIndexRerank().reranker.method.name == "pointwise-qlm"
    chat = ChatOpenAI(model="m", base_url=LOOPBACK, api_key="unused")
    assert LangChainRerank(llm=chat).reranker.method.name == "listwise"
    assert LangChainRerank(llm=chat, llm_logprobs=True).reranker.method.name == "pointwise"


def test_cli_eval_reports_the_method_auto_chose(tmp_path, capsys) -> None:
    report_path = tmp_path / "r.json"
    arguments = ["eval", "--data", str(DL19 / "bm25-top100.jsonl")]
    arguments += ["--qrels", str(DL19 / "qrels.txt"), "--depth", "4", "--queries", "1"]
    assert main([*arguments, "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["method"] == "pointwise-qlm" and report["calls"] == 4
    assert json.loads(capsys.readouterr().out)["method"] == "pointwise-qlm"
