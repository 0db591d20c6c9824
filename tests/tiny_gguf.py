"""A small real GGUF model for tests of the conversion path, written from the embedded one.

Loading the embedded 135M model from its GGUF file takes 20 to 30 s, most of it spent
reading its 49,152-token vocabulary and mapping its 30 layers. The tests of the converted-
model cache (locking, damaged copies, unwritable folders) need a GGUF file that goes through
the same code, not that model's weights. This one keeps the embedded model's architecture,
metadata, chat template and the first tokens of its vocabulary (with the merges that build
them, so the tokenizer is a true prefix of the real one), and has 2 layers of random
weights, quantised to Q8_0 so that loading it de-quantises as the real file does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np

VOCAB = 1024
HIDDEN = 64
FEED_FORWARD = 128
HEADS = 4
KV_HEADS = 2
LAYERS = 2
TINY_OVERRIDES: dict[str, int] = {
    "llama.block_count": LAYERS,
    "llama.embedding_length": HIDDEN,
    "llama.feed_forward_length": FEED_FORWARD,
    "llama.attention.head_count": HEADS,
    "llama.attention.head_count_kv": KV_HEADS,
    "llama.rope.dimension_count": HIDDEN // HEADS,
    "llama.vocab_size": VOCAB,
}
_DERIVED = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture"}


def tiny_parameter_count() -> int:
    """Parameters of the model this module writes (embeddings tied to the output)."""
    return sum(math.prod(shape) for _, shape in _tensor_shapes())


def write_tiny_gguf(source: Path, target: Path, seed: int = 0) -> Path:
    """Write the small model to ``target`` (a ``.gguf`` path) from the GGUF file ``source``."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(str(target), arch="llama")
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()[:VOCAB]
    kept = set(tokens)
    for key, field in reader.fields.items():
        if key in _DERIVED:
            continue
        value = _tiny_value(key, field.contents(), kept)
        element = field.types[-1]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=element)
        else:
            writer.add_key_value(key, value, element)
    rng = np.random.default_rng(seed)
    for name, shape in _tensor_shapes():
        data, kind = _weights(shape, rng)
        writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _tiny_value(key: str, value: Any, kept: set[str]) -> Any:
    if key in TINY_OVERRIDES:
        return TINY_OVERRIDES[key]
    if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
        return value[:VOCAB]
    if key == "tokenizer.ggml.merges":
        return [m for m in value if set(m.split(" ")) <= kept and m.replace(" ", "") in kept]
    return value


def _tensor_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and numpy shapes (rows, columns) of the small llama model."""
    head = HIDDEN // HEADS
    shapes = [("token_embd.weight", (VOCAB, HIDDEN)), ("output_norm.weight", (HIDDEN,))]
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        shapes += [
            (f"{block}.attn_norm.weight", (HIDDEN,)),
            (f"{block}.ffn_norm.weight", (HIDDEN,)),
            (f"{block}.attn_q.weight", (HIDDEN, HIDDEN)),
            (f"{block}.attn_k.weight", (KV_HEADS * head, HIDDEN)),
            (f"{block}.attn_v.weight", (KV_HEADS * head, HIDDEN)),
            (f"{block}.attn_output.weight", (HIDDEN, HIDDEN)),
            (f"{block}.ffn_gate.weight", (FEED_FORWARD, HIDDEN)),
            (f"{block}.ffn_up.weight", (FEED_FORWARD, HIDDEN)),
            (f"{block}.ffn_down.weight", (HIDDEN, FEED_FORWARD)),
        ]
    return shapes


def _weights(
    shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """A tensor's data and its GGUF type: norms in float32 (ones), matrices random and
    quantised to Q8_0 (the writer reads their shape from the quantised bytes)."""
    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32), gguf.GGMLQuantizationType.F32
    values = rng.normal(0.0, 0.05, size=shape).astype(np.float32)
    kind = gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.quantize(values, kind), kind
