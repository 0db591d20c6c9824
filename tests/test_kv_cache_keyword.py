"""The local backend passes and reads key/value caches under the name the installed
``transformers`` uses (``cache`` from 5.24, ``past_key_values`` before), with no warnings."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rankwise import Reranker  # noqa: E402
from rankwise.backends.kv_cache import (  # noqa: E402
    NEW_KEYWORD,
    OLD_KEYWORD,
    cache_keyword,
    returned_cache,
)


def _tiny_llama() -> object:
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


class _OldStyleModel:
    """A forward pass with the pre-5.24 keyword, as older ``transformers`` models have."""

    def forward(self, input_ids, past_key_values=None, use_cache=False):
        return {"logits": input_ids, "past_key_values": past_key_values}


class _NewStyleModel:
    """A forward pass with the 5.24 keyword."""

    def forward(self, input_ids, cache=None, use_cache=False, **kwargs):
        return {"logits": input_ids, "cache": cache}


def test_keyword_follows_the_forward_signature() -> None:
    assert cache_keyword(_OldStyleModel()) == OLD_KEYWORD
    assert cache_keyword(_NewStyleModel()) == NEW_KEYWORD


def test_returned_cache_reads_either_field() -> None:
    assert returned_cache({"logits": 1, "past_key_values": "old"}) == "old"
    assert returned_cache({"logits": 1, "cache": "new"}) == "new"
    assert returned_cache({"logits": 1}) is None


def test_a_cache_passed_back_continues_the_sequence_exactly() -> None:
    """Prefix, then the rest from its cache, gives the logits of the whole sequence: the
    cache really went in under the keyword (a keyword the model ignored would restart at
    position 0 and give other logits)."""
    model = _tiny_llama()
    ids = torch.tensor([[3, 9, 12, 5, 40, 7]])
    keyword = cache_keyword(model)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        whole = model(input_ids=ids).logits[0, -1]
        first = model(input_ids=ids[:, :4], use_cache=True)
        cache = returned_cache(first)
        assert cache is not None and cache.get_seq_length() == 4
        rest = model(
            input_ids=ids[:, 4:],
            position_ids=torch.arange(4, 6).unsqueeze(0),
            use_cache=True,
            **{keyword: cache},
        ).logits[0, -1]
    assert torch.allclose(whole, rest, atol=1e-5)


def test_local_reranks_that_reuse_caches_raise_no_deprecation_warning(local_backend, dl19) -> None:
    """Pointwise (stored prefixes), PRP heapsort (shared prefixes, one by one from the store)
    and ICR (one context cache, several query passes) go through every place the backend
    hands a cache to the model."""
    record = dl19[0]
    documents = record.documents(6)
    reused_before = local_backend.stats.reused_tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for method in ("pointwise", "prp-heapsort", "icr"):
            local_backend.clear_prefix_cache()
            ranked = Reranker(method, local_backend, top_n=3).rerank(record.query, documents)
            assert sorted(item.id for item in ranked.items) == sorted(d["id"] for d in documents)
    assert local_backend.stats.reused_tokens > reused_before
