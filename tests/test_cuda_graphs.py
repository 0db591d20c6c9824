"""Padded passes in graph buckets: the bucket shapes, the bucketed passes on the real
embedded model (run plainly on a CPU, replayed as CUDA graphs where a GPU is present), and
the fall-back when a capture fails."""

from __future__ import annotations

import math

import pytest

from rankwise import Reranker
from rankwise.backends.cuda_graphs import (
    KEEP_STEP,
    MAX_TOKENS,
    MAX_WIDTH,
    WIDTH_STEP,
    GraphedForward,
    GraphShape,
    graph_shape,
)


@pytest.mark.parametrize(
    ("rows", "width", "keep", "expected"),
    [
        (1, 1, 1, GraphShape(1, WIDTH_STEP, 1)),
        (3, 200, 1, GraphShape(4, 224, 1)),
        (12, 224, 1, GraphShape(12, 224, 1)),
        (9, 225, 1, GraphShape(12, 256, 1)),  # rows never pass max_batch (12 here)
        (5, 100, 11, GraphShape(8, 128, KEEP_STEP)),
        (5, 20, 20, GraphShape(8, 32, 32)),
        (2, 20, 17, GraphShape(2, 32, 32)),  # keep rounded up, never wider than the bucket
        (2, 1000, 1, GraphShape(2, 1024, 1)),
        (1, MAX_WIDTH, 1, GraphShape(1, MAX_WIDTH, 1)),
    ],
)
def test_a_batch_runs_in_the_smallest_bucket_that_holds_it(rows, width, keep, expected) -> None:
    shape = graph_shape(rows, width, keep, max_rows=12)
    assert shape == expected
    assert shape.rows >= rows and shape.width >= width and shape.keep >= keep
    assert shape.width % WIDTH_STEP == 0 and shape.keep <= shape.width


@pytest.mark.parametrize(
    ("rows", "width", "keep"),
    [
        (0, 10, 1),
        (13, 10, 1),
        (1, MAX_WIDTH + 1, 1),
        (4, MAX_TOKENS // 4 + 1, 1),
        (2, 10, 0),
        (2, 10, 11),
    ],
)
def test_a_batch_outside_every_bucket_runs_plainly(rows, width, keep) -> None:
    assert graph_shape(rows, width, keep, max_rows=12) is None


@pytest.fixture(scope="module")
def plain_backend():
    """Padded, no prefix reuse: every label batch goes through the bucketable pass."""
    from rankwise.backends.transformers import TransformersBackend

    return TransformersBackend("default", pack_prompts=False, min_shared_prefix=0)


async def _scores(backend, method: str, record, depth: int) -> dict[str, float]:
    docs = record.documents(depth)
    ranked = await Reranker(method, backend, max_passage_tokens=128).arerank(record.query, docs)
    assert sorted(ranked.ids) == sorted(d["id"] for d in docs)  # a permutation of the input
    return {item.id: item.score for item in ranked.items}


@pytest.mark.parametrize(("method", "depth"), [("pointwise", 7), ("pointwise-qlm", 5)])
async def test_bucketed_passes_score_as_plain_padded_passes(
    plain_backend, dl19, method, depth
) -> None:
    import torch

    record = dl19[1]
    plain_backend.graphs = None
    plain = await _scores(plain_backend, method, record, depth)
    graphs = GraphedForward(
        plain_backend.model, torch.device("cpu"), max_rows=16, capture=False, capture_after=1
    )
    plain_backend.graphs = graphs
    try:
        padded_before = plain_backend.stats.padded_tokens
        real_before = plain_backend.stats.real_tokens
        bucketed = await _scores(plain_backend, method, record, depth)
        padded = plain_backend.stats.padded_tokens - padded_before
        real = plain_backend.stats.real_tokens - real_before
    finally:
        plain_backend.graphs = None
    assert graphs.captures >= 1 and len(graphs) == graphs.captures
    assert padded % WIDTH_STEP == 0 and padded > real  # bucket rows and width were computed
    assert bucketed.keys() == plain.keys()
    for doc_id, score in plain.items():
        assert math.isclose(bucketed[doc_id], score, abs_tol=2e-3), doc_id


async def test_a_buckets_first_use_computes_only_the_batch_itself(plain_backend, dl19) -> None:
    """A bucket's first use runs as a plain pass padded only to the batch's longest prompt
    (the positions a run with no graphs computes); from its second use, the bucket's rows
    and width are computed, and the scores stay the same."""
    import torch

    record = dl19[3]

    async def padded_positions() -> tuple[int, dict[str, float]]:
        before = plain_backend.stats.padded_tokens
        scores = await _scores(plain_backend, "pointwise", record, 7)
        return plain_backend.stats.padded_tokens - before, scores

    plain_backend.graphs = None
    plain, plain_scores = await padded_positions()
    graphs = GraphedForward(plain_backend.model, torch.device("cpu"), max_rows=16, capture=False)
    plain_backend.graphs = graphs
    try:
        first, first_scores = await padded_positions()
        captured_first = graphs.captures
        second, second_scores = await padded_positions()
    finally:
        plain_backend.graphs = None
    assert first == plain and captured_first == 0
    assert second > plain and second % WIDTH_STEP == 0 and graphs.captures >= 1
    for scores in (first_scores, second_scores):
        for doc_id, score in plain_scores.items():
            assert math.isclose(scores[doc_id], score, abs_tol=2e-3), doc_id


async def test_a_failed_capture_turns_graphs_off_and_runs_plain_passes(plain_backend, dl19) -> None:
    import torch

    record = dl19[2]
    plain_backend.graphs = None
    plain = await _scores(plain_backend, "pointwise", record, 4)
    # A capture on a CPU fails (no CUDA stream), as one would for a model that reads values
    # back to the host inside its forward pass.
    graphs = GraphedForward(
        plain_backend.model, torch.device("cpu"), max_rows=16, capture=True, capture_after=1
    )
    plain_backend.graphs = graphs
    try:
        fallen_back = await _scores(plain_backend, "pointwise", record, 4)
        again = await _scores(plain_backend, "pointwise", record, 4)
    finally:
        plain_backend.graphs = None
    assert graphs.enabled is False and len(graphs) == 0 and graphs.replays == 0
    for scores in (fallen_back, again):
        for doc_id, score in plain.items():
            assert math.isclose(scores[doc_id], score, abs_tol=2e-3), doc_id


def test_a_bucket_is_captured_on_its_second_use_and_replayed_after(plain_backend) -> None:
    import torch

    graphs = GraphedForward(plain_backend.model, torch.device("cpu"), max_rows=4, capture=False)
    shape = graphs.shape_for(3, 20, 1)
    assert shape == GraphShape(4, WIDTH_STEP, 1)
    ids = torch.randint(0, 1000, (shape.rows, shape.width))
    mask = torch.ones_like(ids)
    positions = torch.arange(shape.width).repeat(shape.rows, 1)
    assert graphs.admit(shape) is False  # first use: a plain pass, by the caller
    assert len(graphs) == 0
    expected = plain_backend.model(input_ids=ids, logits_to_keep=1).logits
    assert graphs.admit(shape) is True
    captured = graphs.run(shape, ids, mask, positions)  # second: captured, answered
    assert len(graphs) == 1 and graphs.captures == 1 and graphs.replays == 0
    assert captured is not None and torch.allclose(captured, expected, atol=1e-4)
    other = torch.randint(0, 1000, (shape.rows, shape.width))
    assert graphs.admit(shape) is True
    replayed = graphs.run(shape, other, mask, positions)  # then replayed with new inputs
    assert graphs.replays == 1 and graphs.captures == 1
    expected = plain_backend.model(input_ids=other, logits_to_keep=1).logits
    assert replayed is not None and torch.allclose(replayed, expected, atol=1e-4)


def test_cuda_graphs_need_a_cuda_device() -> None:
    from rankwise.backends.transformers import TransformersBackend

    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        TransformersBackend("default", cuda_graphs=True)


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="CUDA graphs need a CUDA GPU"
)
@pytest.mark.parametrize(
    ("method", "depth"), [("pointwise", 20), ("pointwise-qlm", 10), ("setwise", 10)]
)
async def test_replayed_graphs_score_as_plain_passes_on_a_gpu(dl19, method, depth) -> None:
    from rankwise.backends.transformers import TransformersBackend

    graphed = TransformersBackend("default", device="cuda")
    plain = TransformersBackend("default", device="cuda", cuda_graphs=False)
    assert graphed.graphs is not None and plain.graphs is None
    for record in dl19[:2]:
        expected = await _scores(plain, method, record, depth)
        for _ in range(3):  # a plain pass, then captured, then replayed, for each bucket
            replayed = await _scores(graphed, method, record, depth)
            for doc_id, score in expected.items():
                assert math.isclose(replayed[doc_id], score, abs_tol=2e-3), doc_id
    assert graphed.graphs.enabled and graphed.graphs.captures >= 1
    assert graphed.graphs.replays >= 1
