"""Evaluation on TREC-style data: JSONL queries with candidates, qrels, nDCG/MRR/recall."""

from __future__ import annotations

import gzip
import io
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from rankwise._checks import is_real
from rankwise.errors import InputError

Qrels = dict[str, dict[str, int]]


@dataclass
class QueryRecord:
    """One query with its first-stage candidates, in first-stage order."""

    qid: str
    query: str
    candidates: list[dict[str, Any]]
    where: str = ""
    """Where the query was read (``path:line``), for messages."""

    def documents(self, depth: int | None = None) -> list[dict[str, Any]]:
        """Candidates as rankwise documents (``id``, ``text``, ``score``), cut to ``depth``
        (all of them when ``None``)."""
        if depth is not None and depth < 1:
            raise InputError(f"depth must be at least 1 (or None for all), got {depth}")
        chosen = self.candidates if depth is None else self.candidates[:depth]
        return [{"id": str(c["docid"]), "text": c["text"], "score": c.get("score")} for c in chosen]


STDIN = "-"
"""The path that names standard input, as on the command line (``--data -``)."""


def shown_path(path: str | Path) -> str:
    """``path`` as messages name it: ``<stdin>`` for :data:`STDIN`."""
    return "<stdin>" if str(path) == STDIN else str(path)


def _open_binary(path: str | Path) -> BinaryIO:
    """``path`` opened for reading bytes, or standard input read whole for :data:`STDIN`
    (a pipe cannot be read again to tell its encoding)."""
    if str(path) == STDIN:
        return io.BytesIO(sys.stdin.buffer.read())
    return open(path, "rb")


def _numbered_lines(path: str | Path, what: str) -> Iterator[tuple[int, str]]:
    """``path``'s lines (standard input's for :data:`STDIN`), numbered from 1, as text:
    UTF-8 (a byte order mark, as Windows editors write, is skipped), gzip-compressed UTF-8,
    or UTF-16 with its byte order mark (what Windows PowerShell's ``>`` writes). An
    :class:`InputError` names the file, and the line, that cannot be read or is not such
    text."""
    name = shown_path(path)
    try:
        with _open_binary(path) as raw:
            start = raw.read(2)
            raw.seek(0)
            if start in (b"\xff\xfe", b"\xfe\xff"):
                yield from enumerate(io.TextIOWrapper(raw, encoding="utf-16"), start=1)
                return
            lines = gzip.GzipFile(fileobj=raw) if start == b"\x1f\x8b" else raw
            for number, line in enumerate(lines, start=1):
                try:
                    yield number, line.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as error:
                    raise InputError(
                        f"{name}:{number}: not UTF-8 text ({error}); save the file as UTF-8"
                    ) from None
    except (OSError, EOFError) as error:  # a damaged gzip file is an OSError too
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"cannot read the {what} {name!r}: {reason}") from error
    except UnicodeError as error:
        raise InputError(
            f"the {what} {name!r} is not UTF-16 text as its start says ({error})"
        ) from None


def load_queries(path: str | Path, limit: int | None = None) -> list[QueryRecord]:
    """Read ``{"qid", "query", "candidates": [{"docid", "text", "score"}]}`` lines (from
    standard input for ``"-"``): the first ``limit`` queries, or all of them when ``limit``
    is ``None``."""
    if limit is not None and limit < 1:
        raise InputError(f"limit must be at least 1 (or None for every query), got {limit}")
    name = shown_path(path)
    records: list[QueryRecord] = []
    lines_by_qid: dict[str, int] = {}
    with closing(_numbered_lines(path, "queries file")) as lines:
        for number, line in lines:
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                _check_query(raw, f"{name}:{number}")
                record = QueryRecord(
                    str(raw["qid"]), raw["query"], raw["candidates"], f"{name}:{number}"
                )
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise InputError(
                    f"{name}:{number}: expected a JSON object with qid, query and candidates "
                    f"({error})"
                ) from error
            if record.qid in lines_by_qid:
                raise InputError(
                    f"{name}:{number}: qid {record.qid!r} is also on line "
                    f"{lines_by_qid[record.qid]}; give each query its own qid, or merge its "
                    "candidates into one line"
                )
            lines_by_qid[record.qid] = number
            _check_candidates(record.candidates, f"{name}:{number}")
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
    return records


def _check_query(raw: Mapping[str, Any], where: str) -> None:
    """The qid is a string or a whole number, the query a text with words in it and the
    candidates a list: a blank query otherwise failed only at its own rerank, after the
    queries before it had been paid for, and a ``null`` one was ranked as the text 'None'."""
    qid, query, candidates = raw["qid"], raw["query"], raw["candidates"]
    if isinstance(qid, bool) or not isinstance(qid, str | int) or not str(qid).strip():
        raise InputError(f'{where}: the qid {qid!r} is not a name; give a string such as "q1"')
    if not isinstance(query, str) or not query.strip():
        raise InputError(
            f"{where}: qid {str(qid)!r} has the query {query!r}; give the question as text"
        )
    if not isinstance(candidates, list):
        raise InputError(
            f"{where}: qid {str(qid)!r} has candidates of type {type(candidates).__name__}; "
            "give a list of objects (an empty list is fine)"
        )


def _check_candidates(candidates: list[Any], where: str) -> None:
    """Each candidate is an object with a docid of its own, a text and an optional score:
    checked as the file is read, so that no model call is spent before a bad line fails."""
    example = '{"docid": "D1", "text": "...", "score": 1.5}'
    seen: dict[str, int] = {}
    for position, candidate in enumerate(candidates):
        if not isinstance(candidate, Mapping) or "docid" not in candidate:
            raise InputError(
                f"{where}: candidate {position} has no docid; each candidate is an object "
                f"such as {example}"
            )
        docid = str(candidate["docid"])
        if docid in seen:
            raise InputError(
                f"{where}: candidates {seen[docid]} and {position} share the docid {docid!r}; "
                "drop the repeat, since a run lists each document once per query"
            )
        seen[docid] = position
        if not isinstance(candidate.get("text"), str):
            raise InputError(
                f"{where}: candidate {position} (docid {docid!r}) has no text string; each "
                f"candidate is an object such as {example}"
            )
        score = candidate.get("score")
        if score is not None and not is_real(score):
            raise InputError(
                f"{where}: candidate {position} (docid {docid!r}) has the score {score!r}; "
                "give a number, or leave the score out"
            )


def load_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels (``qid iteration docid relevance`` per line), or BEIR's
    (``query-id corpus-id score``, tab-separated under a header line); from standard input
    for ``"-"``."""
    name = shown_path(path)
    qrels: Qrels = defaultdict(dict)
    with closing(_numbered_lines(path, "qrels file")) as lines:
        for number, line in lines:
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 3 and number == 1 and not parts[2].lstrip("-").isdigit():
                continue  # BEIR's header line
            if len(parts) not in (3, 4):
                raise InputError(
                    f"{name}:{number}: expected 'qid 0 docid rel' (TREC) or "
                    f"'qid docid rel' (BEIR), got {line!r}"
                )
            qid, docid, relevance = parts[0], parts[-2], parts[-1]
            try:
                qrels[qid][docid] = int(relevance)
            except ValueError:
                raise InputError(
                    f"{name}:{number}: the relevance {relevance!r} is not a whole number "
                    "(expected 'qid 0 docid rel')"
                ) from None
    return dict(qrels)


def ndcg_at_k(ranking: Sequence[str], judgements: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k as trec_eval's ``ndcg_cut`` computes it: linear gain, log2(rank + 1) discount,
    the ideal ranking built from every judged document of the query."""
    gains = [max(0, judgements.get(docid, 0)) for docid in ranking[:k]]
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    ideal = sorted((max(0, rel) for rel in judgements.values()), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def reciprocal_rank(ranking: Sequence[str], judgements: Mapping[str, int], k: int = 10) -> float:
    """1/rank of the first relevant document within the top ``k`` (0 if none)."""
    for rank, docid in enumerate(ranking[:k], start=1):
        if judgements.get(docid, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranking: Sequence[str], judgements: Mapping[str, int], k: int = 10) -> float:
    """Share of the query's relevant documents found in the top ``k``."""
    relevant = {docid for docid, rel in judgements.items() if rel > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (0 for no values)."""
    return sum(values) / len(values) if values else 0.0


def check_trec_ids(rows: Iterable[tuple[str, Iterable[str]]]) -> None:
    """Refuse a qid or docid that a TREC run cannot hold: its fields are split at
    whitespace, so ``a b`` would be read as two fields and shift the rank and score."""
    for qid, docids in rows:
        for what, name in [("qid", qid)] + [("docid", docid) for docid in docids]:
            if not name or any(character.isspace() for character in name):
                where = "" if what == "qid" else f" (query {qid!r})"
                raise InputError(
                    f"the {what} {name!r}{where} is empty or holds whitespace, which a TREC "
                    "run cannot hold (its fields are split at whitespace); write the run as "
                    "JSON Lines (--output run.jsonl) or give ids without spaces"
                )


def write_trec_run(
    rows: Iterable[tuple[str, list[str]]], path: str | Path | TextIO, tag: str
) -> None:
    """Write a TREC run to a file, or to an open text stream such as ``sys.stdout``. Scores
    are ``N - rank + 1`` so trec_eval keeps rankwise's order. Ids a TREC run cannot hold are
    refused before anything is written (:func:`check_trec_ids`)."""
    rows = list(rows)
    check_trec_ids(rows)
    lines = (
        f"{qid} Q0 {docid} {rank} {len(docids) - rank + 1} {tag}\n"
        for qid, docids in rows
        for rank, docid in enumerate(docids, start=1)
    )
    if isinstance(path, str | Path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
    else:
        path.writelines(lines)
