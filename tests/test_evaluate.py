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


def test_gzipped_and_utf16_files_read_as_plain_utf8(tmp_path) -> None:
    """A gzipped queries or qrels file (as TREC and MS MARCO data often ship), or one saved
    as UTF-16 (what Windows PowerShell's ``>`` writes), ended in a UnicodeDecodeError
    traceback."""
    import gzip

    from rankwise.evaluate import load_qrels, load_queries
    from tests.conftest import DL19

    plain_queries = load_queries(DL19 / "bm25-top100.jsonl", 3)
    text = (DL19 / "bm25-top100.jsonl").read_text(encoding="utf-8")
    lines = "".join(text.splitlines(keepends=True)[:3])
    qrels_text = "q1 0 d1 2\nq1 0 d2 0\n"
    for name, write in [
        ("gz", lambda path, data: path.write_bytes(gzip.compress(data.encode("utf-8")))),
        ("utf16", lambda path, data: path.write_text(data, encoding="utf-16")),
    ]:
        queries, qrels = tmp_path / f"q-{name}", tmp_path / f"qrels-{name}"
        write(queries, lines)
        write(qrels, qrels_text)
        read = load_queries(queries)
        assert [(r.qid, r.query, r.candidates) for r in read] == [
            (r.qid, r.query, r.candidates) for r in plain_queries
        ]
        assert load_qrels(qrels) == {"q1": {"d1": 2, "d2": 0}}


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path) -> None:
    """A file saved in a Windows code page (a curly quote as byte 0x93) ended in a
    UnicodeDecodeError traceback that named neither the file nor the line."""
    import pytest

    from rankwise import InputError
    from rankwise.evaluate import load_qrels, load_queries

    queries = tmp_path / "queries.jsonl"
    good = '{"qid": "q1", "query": "fleas", "candidates": []}\n'
    queries.write_bytes(
        good.encode() + '{"qid": "q2", "query": "\u201cfleas\u201d"}\n'.encode("cp1252")
    )
    with pytest.raises(InputError, match=rf"{queries}:2: not UTF-8 text .*save the file as UTF-8"):
        load_queries(queries)
    qrels = tmp_path / "qrels.txt"
    qrels.write_bytes("q1 0 d\xe9 1\n".encode("latin-1"))
    with pytest.raises(InputError, match=rf"{qrels}:1: not UTF-8 text"):
        load_qrels(qrels)


def test_beir_qrels_read_as_trec_qrels(tmp_path) -> None:
    """BEIR ships its qrels as TSV, three columns under a header line; they were refused
    ("expected 'qid 0 docid rel'"), though nothing in them is ambiguous."""
    import pytest

    from rankwise import InputError
    from rankwise.evaluate import load_qrels

    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td1\t1\n")
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 2\nq1 0 d2 0\nq2 0 d1 1\n")
    assert load_qrels(beir) == load_qrels(trec) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1}}
    later = tmp_path / "later.tsv"  # a line that is not a judgement, past the first line
    later.write_text("q1\td1\t2\nquery-id\tcorpus-id\tscore\n")
    with pytest.raises(InputError, match=rf"{later}:2: the relevance 'score' is not a whole"):
        load_qrels(later)
