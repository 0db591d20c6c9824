from __future__ import annotations

import math

from rankwise.evaluate import mean, ndcg_at_k, recall_at_k, reciprocal_rank


def test_bm25_order_on_dl19_matches_trec_eval(dl19, dl19_qrels) -> None:
    scores = [
        ndcg_at_k([str(c["docid"]) for c in record.candidates], dl19_qrels[record.qid])
        for record in dl19
        if record.qid in dl19_qrels
    ]
    assert len(scores) == 43
    assert round(mean(scores), 4) == 0.5058


def test_ndcg_by_hand() -> None:
    judged = {"a": 3, "b": 1, "c": 0, "z": 2}
    dcg = 1 / math.log2(2) + 3 / math.log2(3)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert math.isclose(ndcg_at_k(["b", "a", "c"], judged), dcg / idcg)
    assert ndcg_at_k(["z", "a"], {}) == 0.0
    assert reciprocal_rank(["c", "b"], judged) == 0.5
    assert recall_at_k(["a"], judged) == 1 / 3
    assert recall_at_k(["c", "b", "a"], judged, k=2) == 1 / 3  # "a" is below the cut
    assert reciprocal_rank(["c", "b"], judged, k=1) == 0.0


def test_files_saved_with_a_byte_order_mark_read_as_without(tmp_path) -> None:
    """Windows editors often start UTF-8 files with a byte order mark. In qrels it became
    part of the first qid, so that judgement was filed under a query that does not exist,
    without a word; a queries file failed at line 1, and a price table could not be read."""
    from rankwise.costs import PriceTable
    from rankwise.evaluate import load_qrels, load_queries

    bom = "\ufeff"
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(f"{bom}q1 0 d1 2\nq1 0 d2 0\n", encoding="utf-8")
    assert load_qrels(qrels) == {"q1": {"d1": 2, "d2": 0}}
    queries = tmp_path / "queries.jsonl"
    line = '{"qid": "q1", "query": "fleas", "candidates": [{"docid": "d1", "text": "t"}]}'
    queries.write_text(bom + line + "\n", encoding="utf-8")
    assert [r.qid for r in load_queries(queries)] == ["q1"]
    prices = tmp_path / "prices.json"
    prices.write_text(bom + '{"m": {"input": 1, "output": 2}}', encoding="utf-8")
    assert PriceTable.load(prices).price("m").output == 2
