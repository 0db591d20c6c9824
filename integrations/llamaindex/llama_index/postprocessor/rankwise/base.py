"""RankwiseRerank: a LlamaIndex node postprocessor backed by a rankwise method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rankwise._sync import run_sync
from rankwise.abstain import Abstention, Calibrator
from rankwise.adapters import AdapterReranker, CandidateKeys
from rankwise.adapters import check_parts as check_adapter_parts
from rankwise.errors import InputError
from rankwise.reranker import Reranker
from rankwise.types import Candidate, RankedList

dispatcher = get_dispatcher(__name__)


def nodes_to_candidates(
    nodes: Sequence[NodeWithScore], keys: CandidateKeys | None = None
) -> tuple[list[Candidate], dict[str, NodeWithScore]]:
    """Candidates keyed by node id (a node given twice is ranked twice, its second copy as
    ``id#2``), with the node's text as the model sees it, and the map back to the nodes.
    Pass the same ``keys`` for every list of one retrieval, so that a key names one node."""
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    assigned = (keys or CandidateKeys()).assign(
        zip((n.node.node_id for n in nodes), texts, strict=True)
    )
    candidates = [Candidate(id=key, text=text) for key, text in zip(assigned, texts, strict=True)]
    return candidates, dict(zip(assigned, nodes, strict=True))


def selected_nodes(
    ranked: RankedList, originals: Mapping[str, NodeWithScore]
) -> list[NodeWithScore]:
    """The selected nodes, each with ``score`` set to the rankwise score."""
    return [NodeWithScore(node=originals[i.id].node, score=i.score) for i in ranked.selected]


class RankwiseRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with an LLM.

    ``NodeWithScore.score`` becomes the method's score. Pass ``backend=`` (a rankwise
    backend or local model name) or ``llm=`` (a LlamaIndex LLM, or ``"settings"`` for
    ``Settings.llm``); with neither, the embedded local model is used.

    Example::

        rerank = RankwiseRerank(method="pointwise-qlm", top_n=3)
        engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = Field(default=3, description="Nodes to keep.")
    method: str = Field(
        default="auto",
        description="rankwise method name; 'auto' picks one for the backend (query "
        "likelihood on local models, pointwise with log-probs, else listwise).",
    )
    backend: Any = Field(default=None, description="A rankwise backend or local model name.")
    llm: Any = Field(default=None, description="A LlamaIndex LLM, or 'settings'.")
    llm_logprobs: bool = Field(default=False, description="The LLM returns log-probs.")
    score_threshold: float | None = Field(default=None, description="Minimum score to keep.")
    abstain: Abstention | Calibrator | None = Field(
        default=None,
        description="An Abstention rule or a fitted Calibrator; when it fires, no node is kept.",
    )
    method_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the method (max_passage_tokens=64) and of the Reranker "
        "(cache, deadline, max_calls, max_tokens, prompts).",
    )

    _rerankers: AdapterReranker = PrivateAttr(default_factory=AdapterReranker)
    _last: RankedList | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "RankwiseRerank"

    def __init__(self, **fields: Any) -> None:
        """Bad fields raise here (see :meth:`AdapterReranker.check`)."""
        super().__init__(**fields)
        self._rerankers.check(self)

    @property
    def reranker(self) -> Reranker:
        """The rankwise Reranker these fields describe, built again after a field changes
        (the loaded model is kept while ``backend``/``llm`` stay the same)."""
        return self._rerankers.get(self)

    @property
    def last_result(self) -> RankedList | None:
        """The full ranked list of the latest call: every node, usage and trace."""
        return self._last

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise InputError("RankwiseRerank needs the query: pass query_bundle or query_str")
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n or len(nodes),
                model_name=f"rankwise:{self.reranker.method.name}",
            )
        )
        candidates, originals = nodes_to_candidates(nodes)
        ranked = await self.reranker.arerank(query_bundle.query_str, candidates)
        self._last = ranked
        chosen = selected_nodes(ranked, originals)
        dispatcher.event(ReRankEndEvent(nodes=chosen))
        return chosen

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return run_sync(self._apostprocess_nodes(nodes, query_bundle))


def check_parts(reranker: object, retriever: object | None) -> None:
    """Refuse a ``reranker`` that is not a :class:`RankwiseRerank`, and a ``retriever``
    (where one is given) that is not a LlamaIndex retriever."""
    check_adapter_parts(
        reranker,
        retriever,
        framework="LlamaIndex",
        reranker_kind=RankwiseRerank,
        reranker_role="postprocessor",
        retriever_kind=BaseRetriever,
        retriever_example="index.as_retriever(similarity_top_k=20)",
    )
