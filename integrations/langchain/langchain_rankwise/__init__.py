"""LangChain integration for rankwise: a compressor, a retriever and agent tools."""

from langchain_rankwise.compressor import RankwiseRerank
from langchain_rankwise.retriever import RankwiseRetriever
from langchain_rankwise.tools import rankwise_tool

__all__ = ["RankwiseRerank", "RankwiseRetriever", "rankwise_tool"]
