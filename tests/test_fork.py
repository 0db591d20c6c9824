"""A reranker used before ``fork`` still works in the child: ``multiprocessing`` on Linux,
gunicorn ``--preload`` and Celery's workers fork a process that may already have reranked.
The child inherits the parent's objects but not its threads, and the synchronous API's event
loop, and a local model's worker, each run on a thread of their own: the child's first
rerank waited forever on a thread that was not there."""

from __future__ import annotations

import json
import os
import signal

import pytest

from rankwise import OpenAIBackend, Reranker
from tests.oracle import oracle, relevance_docs

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

DOCS = relevance_docs([0.1, 0.9, 0.5])
CHILD_PATIENCE_S = 60


def rerank_in_a_forked_child(reranker: Reranker) -> list[str]:
    """The ids ``reranker.rerank`` gives in a forked child, or an AssertionError if the
    child fails or does not finish within :data:`CHILD_PATIENCE_S`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            signal.alarm(CHILD_PATIENCE_S)  # a hung child is killed, and the test fails
            ids = reranker.rerank("q", DOCS).ids
            os.write(write_end, json.dumps(ids).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        f"the forked child did not finish its rerank (wait status {status}; "
        f"{signal.SIGALRM.value} in the low bits: killed after {CHILD_PATIENCE_S} s)"
    )
    return json.loads(answer)


def test_the_sync_api_works_in_a_child_forked_after_it_was_used(stub) -> None:
    stub.handler = oracle
    reranker = Reranker("pointwise", OpenAIBackend("oracle", base_url=stub.base_url, api_key="k"))
    assert reranker.rerank("q", DOCS).ids == ["d1", "d2", "d0"]  # the loop's thread starts
    assert rerank_in_a_forked_child(reranker) == ["d1", "d2", "d0"]
    assert reranker.rerank("q", DOCS).ids == ["d1", "d2", "d0"]  # the parent's still works


def test_a_local_model_works_in_a_child_forked_after_it_ran(local_backend) -> None:
    reranker = Reranker("pointwise", local_backend)
    in_parent = reranker.rerank("q", DOCS).ids  # the model's worker thread starts
    assert sorted(in_parent) == ["d0", "d1", "d2"]
    assert rerank_in_a_forked_child(reranker) == in_parent
