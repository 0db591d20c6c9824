"""Models whose layers attend only to a window of recent tokens (Gemma 2 and 3, Mistral,
Qwen 2 with its window on), through the local backend: a small Gemma 3 built here with
random weights, a window of 128 tokens and the embedded model's tokenizer."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rankwise import CapabilityError, Reranker
from rankwise.prompts import Message

WINDOW = 128


@pytest.fixture(scope="module")
def windowed(local_backend, tmp_path_factory):
    """A TransformersBackend over a two-layer Gemma 3, one layer windowed, one global."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rankwise.backends.transformers import TransformersBackend

    config = AutoConfig.for_model(
        "gemma3_text",
        vocab_size=len(local_backend.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"],
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gemma3-window")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    local_backend.tokenizer.save_pretrained(folder)
    return TransformersBackend(str(folder))


def test_the_window_is_read_from_the_models_layers(windowed, local_backend) -> None:
    from rankwise.backends.kv_cache import sliding_window

    assert sliding_window(windowed.model) == WINDOW
    assert sliding_window(local_backend.model) is None  # SmolLM2 attends to everything


async def test_batched_label_logprobs_past_the_window_equal_the_models_own(windowed) -> None:
    """Prompts that share a long prefix run it once, and their own tokens after it as a
    padded batch: padding then stood between the prefix and a shorter prompt's tokens, so
    a windowed layer saw fewer of the prefix's tokens than the prompt alone lets it see,
    and the label log-probs of the shorter prompts were off by up to 0.03."""
    passages = [f"word{i} " * (50 + 25 * i) for i in range(6)]
    prompts = [
        [Message("user", f"Passage: {text}\nQuery: fleas\nRelevant? Answer Yes or No.")]
        for text in passages
    ]
    assert all(len(windowed.prompt_ids(prompt)) > WINDOW for prompt in prompts)
    together = await asyncio.gather(*(windowed.label_logprobs(p, ["Yes", "No"]) for p in prompts))
    for prompt, answer in zip(prompts, together, strict=True):
        with torch.inference_mode():
            ids = torch.tensor([windowed.prompt_ids(prompt)])
            own = windowed.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
        for label in ("Yes", "No"):
            expected = own[windowed.label_token_id(label, windowed.chat_prompt(prompt))].item()
            assert answer.logprobs[label] == pytest.approx(expected, abs=1e-4)


async def test_icr_past_the_window_is_refused_and_within_it_runs(windowed) -> None:
    """ICR reads how every layer attends to every passage. Past the window, a windowed
    layer's attention covers only the latest tokens, and the scan failed with a RuntimeError
    (that layer's attention is shorter than the context; on a second query, transformers
    refuses to cut such a layer's cache back)."""
    long = ["fleas live up to a year on a cat " * 12, "concrete is cheap " * 12]
    with pytest.raises(CapabilityError, match=f"only the last {WINDOW} tokens"):
        await Reranker("icr", windowed).arerank("how long do fleas live", long)
    short = ["fleas", "cats", "dogs"]
    ranked = await Reranker("icr", windowed, max_passage_tokens=4).arerank("fleas?", short)
    assert sorted(ranked.ids) == ["0", "1", "2"]
