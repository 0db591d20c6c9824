"""The persistent response cache: a repeated run makes no LLM call; keys separate requests."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import threading

import pytest

from rankwise import InputError, OpenAIBackend, Reranker
from rankwise.backends.base import Generation
from rankwise.cache import ResponseCache
from rankwise.cli import main
from tests.conftest import DL19
from tests.oracle import oracle, relevance_docs
from tests.stub_server import Reply, completion, user_text


async def test_second_identical_rerank_makes_no_call(stub, tmp_path) -> None:
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url)
    docs = relevance_docs([0.3, 0.9, 0.1, 0.6])
    cache = tmp_path / "cache.sqlite"
    first = await Reranker("pointwise", backend, cache=cache).arerank("q", docs)
    assert first.usage.calls == 4 and first.usage.cache_hits == 0
    second = await Reranker("pointwise", backend, cache=cache).arerank("q", docs)
    assert second.usage.calls == 0 and second.usage.cache_hits == 4
    assert second.ids == first.ids
    assert [i.score for i in second.items] == [i.score for i in first.items]
    assert len(stub.requests) == 4
    other = await Reranker("pointwise", backend, cache=cache).arerank("another query", docs)
    assert other.usage.calls == 4  # a different prompt is a different key


async def test_an_entry_that_no_longer_fits_is_a_miss_and_is_replaced(stub, tmp_path) -> None:
    """A cache kept across an upgrade may hold responses with other fields; they raised a
    TypeError at the lookup. Now such an entry is asked again and overwritten."""
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url)
    docs = relevance_docs([0.3, 0.9, 0.1])
    path = tmp_path / "cache.sqlite"
    first = await Reranker("pointwise", backend, cache=path).arerank("q", docs)
    cache = ResponseCache(path)
    keys = [row[0] for row in cache._connection.execute("SELECT key FROM responses")]
    assert len(keys) == 3
    stale = [json.dumps({"logprobs": {}, "tokens_in": 5}), "not json", "[1, 2]"]
    for key, value in zip(keys, stale, strict=True):
        cache._connection.execute("UPDATE responses SET value = ? WHERE key = ?", (value, key))
    again = await Reranker("pointwise", backend, cache=cache).arerank("q", docs)
    assert again.usage.calls == 3 and again.usage.cache_hits == 0
    assert again.ids == first.ids
    assert [i.score for i in again.items] == [i.score for i in first.items]
    third = await Reranker("pointwise", backend, cache=cache).arerank("q", docs)
    assert third.usage.calls == 0 and third.usage.cache_hits == 3  # replaced, readable again
    assert len(stub.requests) == 6


async def test_concurrent_writers_in_one_process(tmp_path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")

    async def write(i: int) -> None:
        await asyncio.sleep(0)
        key = cache.key("k", "m", "generate", {"i": i})
        cache.put(key, "k", "m", "generate", Generation(text=str(i), prompt_tokens=i))

    await asyncio.gather(*(asyncio.to_thread(lambda i=i: asyncio.run(write(i))) for i in range(50)))
    assert len(cache) == 50
    hit = cache.get(cache.key("k", "m", "generate", {"i": 7}), Generation)
    assert hit == Generation(text="7", prompt_tokens=7)


def test_cli_second_eval_reports_cache_hits_and_zero_calls(tmp_path, capsys) -> None:
    args = [
        "eval",
        "--data",
        str(DL19 / "bm25-top100.jsonl"),
        "--qrels",
        str(DL19 / "qrels.txt"),
        "--method",
        "pointwise-qlm",
        "--depth",
        "4",
        "--queries",
        "1",
        "--cache",
        str(tmp_path / "cache.sqlite"),
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["calls"] == 4 and second["calls"] == 0 and second["cache_hits"] == 4
    assert second["ndcg@10"] == first["ndcg@10"]


async def test_the_local_model_in_another_dtype_does_not_read_its_answers(
    local_backend, tmp_path
) -> None:
    """bfloat16 and float32 scores differ (they reorder near-ties); the key held only the
    model's name, so a bfloat16 run read the float32 answers and reported them as its own."""
    from rankwise.backends.transformers import TransformersBackend

    docs = ["Fleas live up to a year.", "Concrete is cheap.", "A flea's life cycle."]
    cache = tmp_path / "cache.sqlite"
    fp32 = await Reranker("pointwise", local_backend, cache=cache).arerank("flea life", docs)
    assert fp32.usage.calls == 3
    bf16_backend = TransformersBackend("default", dtype="bfloat16")
    try:
        assert bf16_backend.cache_identity != local_backend.cache_identity
        bf16 = await Reranker("pointwise", bf16_backend, cache=cache).arerank("flea life", docs)
        assert bf16.usage.calls == 3 and bf16.usage.cache_hits == 0
        again = await Reranker("pointwise", bf16_backend, cache=cache).arerank("flea life", docs)
        assert again.usage.cache_hits == 3
        assert [i.score for i in again.items] == [i.score for i in bf16.items]
    finally:
        await bf16_backend.aclose()


def test_a_local_folder_model_is_keyed_by_its_path_and_its_weights(tmp_path) -> None:
    """Two folders named ``model`` (or one model trained again in place) shared answers."""
    import os

    from rankwise.backends.transformers import _model_source

    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    for folder in (first, second):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
    assert _model_source(str(first)) != _model_source(str(second))
    before = _model_source(str(first))
    weights = first / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert _model_source(str(first)) != before  # retrained in place: new answers
    assert _model_source(str(first)) == _model_source(str(first))  # stable otherwise
    assert _model_source("default") == "" and _model_source("org/hub-model") == ""


def _hold_write_lock(path) -> sqlite3.Connection:
    """Another connection (another process's, for sqlite) in the middle of a write."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_new_cache_opens_while_another_process_sets_it_up(tmp_path) -> None:
    """Several processes starting on one new cache file: while one held its write lock,
    setting WAL mode failed at once with 'database is locked' (sqlite does not wait there),
    so one process in about 80 died with an InputError. Opening now waits for the lock."""
    path = tmp_path / "cache.sqlite"
    holder = _hold_write_lock(path)
    threading.Timer(0.3, holder.commit).start()
    cache = ResponseCache(path)  # waits until the other write is done
    assert holder.in_transaction is False
    key = cache.key("k", "m", "generate", {})
    cache.put(key, "k", "m", "generate", Generation(text="a", prompt_tokens=1))
    assert cache.get(key, Generation) == Generation(text="a", prompt_tokens=1)
    holder.close()
    cache.close()


def test_a_cache_held_locked_for_long_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("rankwise.cache.OPEN_PATIENCE_S", 0.2)
    holder = _hold_write_lock(tmp_path / "cache.sqlite")
    with pytest.raises(InputError, match=r"another connection has held it locked for 0.2 s"):
        ResponseCache(tmp_path / "cache.sqlite")
    holder.close()


def test_several_processes_share_one_new_cache(tmp_path) -> None:
    """Processes that open one new cache at the same moment and write to it all land."""
    path = tmp_path / "cache.sqlite"
    script = (
        "import sys\n"
        "from rankwise.backends.base import Generation\n"
        "from rankwise.cache import ResponseCache\n"
        "cache = ResponseCache(sys.argv[1])\n"
        "for i in range(100):\n"
        "    key = cache.key('k', 'm', 'generate', {'worker': sys.argv[2], 'i': i})\n"
        "    cache.put(key, 'k', 'm', 'generate', Generation(text=sys.argv[2], prompt_tokens=i))\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), str(n)]) for n in range(4)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    cache = ResponseCache(path)
    assert len(cache) == 400
    assert cache.get(cache.key("k", "m", "generate", {"worker": "3", "i": 99}), Generation) == (
        Generation(text="3", prompt_tokens=99)
    )


async def test_a_cache_that_cannot_be_written_does_not_fail_the_rerank(stub, tmp_path) -> None:
    """Another process holding the file's write lock made every store raise
    sqlite3.OperationalError out of the rerank, whose calls were already paid for."""
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url)
    docs = relevance_docs([0.3, 0.9, 0.1, 0.6])
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    cache._connection.execute("PRAGMA busy_timeout = 50")  # sqlite waits 5 s by default
    expected = await Reranker("pointwise", backend).arerank("q", docs)
    holder = _hold_write_lock(path)
    locked = await Reranker("pointwise", backend, cache=cache).arerank("q", docs)
    assert locked.ids == expected.ids
    assert [i.score for i in locked.items] == [i.score for i in expected.items]
    assert locked.usage.calls == 4 and locked.usage.cache_hits == 0
    events = [e.message for e in locked.trace.events if "response cache" in e.message]
    assert len(events) == 1  # the first failed store turns the cache off for this rerank
    assert "cannot write to the response cache" in events[0] and "database is locked" in events[0]
    holder.rollback()
    holder.close()
    stored = await Reranker("pointwise", backend, cache=cache).arerank("q", docs)
    assert stored.usage.calls == 4 and not stored.trace.events  # nothing was stored before
    again = await Reranker("pointwise", backend, cache=cache).arerank("q", docs)
    assert again.usage.calls == 0 and again.usage.cache_hits == 4


async def test_a_closed_cache_is_opened_again_for_a_new_reranker(stub, tmp_path) -> None:
    """Rerankers share one open cache per path. Once its user closed it, every later
    Reranker(cache=path) got the closed one, and each of its reranks ran without a cache."""
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url)
    docs = relevance_docs([0.3, 0.9, 0.1])
    path = tmp_path / "cache.sqlite"
    first = Reranker("pointwise", backend, cache=path)
    assert (await first.arerank("q", docs)).usage.calls == 3
    first.cache.close()
    stale = await first.arerank("q", docs)  # the closed cache: answered without it
    assert stale.usage.calls == 3 and stale.usage.cache_hits == 0
    assert [e.message for e in stale.trace.events if "Cannot operate" in e.message]
    again = await Reranker("pointwise", backend, cache=path).arerank("q", docs)
    assert again.usage.calls == 0 and again.usage.cache_hits == 3 and not again.trace.events


def _labels_below_five_others(request: dict) -> Reply:
    """A yes/no answer whose labels rank sixth and seventh among the alternatives; the
    server lists as many alternatives as the request asks for, as OpenAI's does."""
    relevance = float(re.search(r"relevance (\d\.\d+)", user_text(request))[1])
    ranked = {"Maybe": -0.5, "Sure": -0.6, "I": -0.7, "The": -0.8, "Based": -0.9}
    ranked |= {"Yes": -1.0 - (1 - relevance), "No": -1.0 - relevance}
    body = completion("Maybe", top_logprobs=ranked)
    listed = body["choices"][0]["logprobs"]["content"][0]
    listed["top_logprobs"] = listed["top_logprobs"][: request["top_logprobs"]]
    return Reply(body=body)


async def test_asking_for_more_alternatives_does_not_read_answers_asked_with_fewer(
    stub, tmp_path
) -> None:
    """A server lists only ``top_logprobs`` alternatives, so a label outside the top 5 is
    missing from an answer asked with 5 and present with 10. The key held the prompt and
    the labels but not how many alternatives were asked for, so a user who raised
    ``top_logprobs`` to find the labels was given the answers without them again."""
    stub.handler = _labels_below_five_others
    docs = relevance_docs([0.3, 0.9, 0.1])
    cache = tmp_path / "cache.sqlite"
    few = OpenAIBackend("m", base_url=stub.base_url, top_logprobs=5)
    blind = await Reranker("pointwise", few, cache=cache).arerank("q", docs)
    assert blind.usage.calls == 3
    fallbacks = [e for e in blind.trace.events if e.kind == "fallback"]
    assert len(fallbacks) == 3  # neither label was listed: scored from the text
    more = OpenAIBackend("m", base_url=stub.base_url, top_logprobs=10)
    expected = await Reranker("pointwise", more).arerank("q", docs)
    assert expected.ids == ["d1", "d0", "d2"] and not expected.trace.events
    seen = await Reranker("pointwise", more, cache=cache).arerank("q", docs)
    assert seen.usage.calls == 3 and seen.usage.cache_hits == 0
    assert seen.ids == expected.ids
    assert [i.score for i in seen.items] == [i.score for i in expected.items]
    again = await Reranker("pointwise", more, cache=cache).arerank("q", docs)
    assert again.usage.cache_hits == 3 and again.ids == expected.ids
    asked_fewer = await Reranker("pointwise", few, cache=cache).arerank("q", docs)
    assert asked_fewer.usage.cache_hits == 3 and asked_fewer.ids == blind.ids


@pytest.mark.parametrize("given", ["instance", "env"])
async def test_a_cache_path_under_a_tilde_is_opened_in_the_home_folder(
    stub, tmp_path, monkeypatch, given
) -> None:
    """``ResponseCache("~/c.sqlite")`` made a folder named ``~`` in the working directory
    and kept the answers there, where nothing else would look for them."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    stub.handler = oracle
    backend = OpenAIBackend("oracle", base_url=stub.base_url, api_key="unused")
    if given == "env":
        monkeypatch.setenv("RANKWISE_CACHE", "~/c.sqlite")
        reranker = Reranker("pointwise", backend)
    else:
        reranker = Reranker("pointwise", backend, cache=ResponseCache("~/c.sqlite"))
    await reranker.arerank("q", relevance_docs([0.3, 0.9, 0.1]))
    assert (home / "c.sqlite").exists() and list(work.iterdir()) == []
    assert len(ResponseCache(home / "c.sqlite")) == 3
