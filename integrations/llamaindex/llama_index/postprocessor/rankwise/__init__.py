"""LlamaIndex integration for rankwise."""

from llama_index.postprocessor.rankwise.base import RankwiseRerank
from llama_index.postprocessor.rankwise.retriever import RankwiseRetriever
from llama_index.postprocessor.rankwise.tools import rankwise_function_tool

__all__ = ["RankwiseRerank", "RankwiseRetriever", "rankwise_function_tool"]
