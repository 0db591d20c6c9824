"""Padded forward passes replayed as CUDA graphs.

On a GPU a small model's forward pass is bound by kernel launches rather than arithmetic:
with the embedded model's shapes on an H100 (float32), one 192-token prompt took 36 ms as
plain ``model(...)`` and 5.6 ms as a replayed CUDA graph, a batch of 4 x 256 tokens 24 vs
11 ms, and 16 x 192 tokens 36 vs 25 ms. The methods that call the model one small batch at
a time (setwise, PRP heapsort and sliding, FIRST) gain the most.

A graph replays fixed shapes, so a batch is padded up to a *bucket*: the rows to the next
power of two (at most the backend's ``max_batch``), the width to a multiple of
:data:`WIDTH_STEP` tokens, and the positions whose logits are kept to a multiple of
:data:`KEEP_STEP`. Extra rows repeat the first prompt and are dropped; extra width is left
padding, masked as usual. A bucket is captured on its second use (:data:`CAPTURE_AFTER`), so
that a shape seen once (one long FIRST window, say) never pays for a capture: that call runs
as a plain pass at the batch's own size (no bucket padding), and the capture, on the next
use, runs the pass once plainly to warm the libraries up and is then recorded, which costs
about one more pass's host time. Graphs are kept, least recently used out first, up to
:data:`MAX_GRAPHS` buckets and a memory budget (each graph holds its own activations): a
tenth of the device's memory, at most :data:`MAX_GRAPH_MEMORY` bytes. A bucket that would
take more than a quarter of the budget runs as a plain pass. A capture that fails (a model
whose forward pass reads values back to the host, say) turns graphs off for the backend with
a warning; passes then run as plain ``model(...)`` calls.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

logger = logging.getLogger(__name__)

WIDTH_STEP = 32
"""Bucket widths are multiples of this many tokens."""

KEEP_STEP = 16
"""Kept logits (other than the last position's alone) come in multiples of this many."""

MAX_WIDTH = 8192
"""Wider batches run as plain passes."""

MAX_TOKENS = 16_384
"""Bucket shapes of more positions (rows x width) run as plain passes: there the arithmetic,
not launching kernels, takes the time."""

MAX_GRAPHS = 32
"""Buckets kept captured at once (each holds its own activation memory)."""

MAX_GRAPH_MEMORY = 2 * 2**30
"""Most bytes the captured graphs of one backend hold (and a tenth of the device's memory)."""

CAPTURE_AFTER = 2
"""The use of a bucket on which it is captured (earlier uses run as plain passes)."""

MAX_SEEN = 4096
"""Bucket uses counted before capture; the count is forgotten at once when it is full."""


class GraphShape(NamedTuple):
    """The fixed shape of one captured pass."""

    rows: int
    width: int
    keep: int


def graph_shape(rows: int, width: int, keep: int, *, max_rows: int) -> GraphShape | None:
    """The bucket that a batch of ``rows`` prompts padded to ``width`` tokens, keeping the
    logits of its last ``keep`` positions, runs in; ``None`` where it runs as a plain pass."""
    if not 0 < rows <= max_rows or not 0 < keep <= width or width > MAX_WIDTH:
        return None
    bucket_rows = min(1 << (rows - 1).bit_length(), max_rows)
    bucket_width = -(-width // WIDTH_STEP) * WIDTH_STEP
    if bucket_rows * bucket_width > MAX_TOKENS:
        return None
    bucket_keep = 1 if keep == 1 else min(-(-keep // KEEP_STEP) * KEEP_STEP, bucket_width)
    return GraphShape(bucket_rows, bucket_width, bucket_keep)


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph, or None where passes are not captured
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    logits: torch.Tensor | None = None
    bytes: int = 0


class GraphedForward:
    """A model's padded forward pass, one CUDA graph per :class:`GraphShape`.

    Call it from one thread only (the backend's model thread). ``capture=False`` runs the
    same bucketed passes without graphs, which checks the bucketing on any device.
    """

    def __init__(
        self,
        model: Any,
        device: torch.device,
        *,
        max_rows: int,
        capture: bool = True,
        capture_after: int = CAPTURE_AFTER,
    ) -> None:
        self._model = model
        self._device = device
        self.max_rows = max_rows
        self.capture = capture
        self.capture_after = capture_after
        self._seen: dict[GraphShape, int] = {}
        self.enabled = True
        self._captured: OrderedDict[GraphShape, _Captured] = OrderedDict()
        self._too_large: set[GraphShape] = set()
        self.max_bytes = MAX_GRAPH_MEMORY
        if capture and device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            self.max_bytes = min(MAX_GRAPH_MEMORY, total // 10)
        self.captures = 0
        self.replays = 0

    def shape_for(self, rows: int, width: int, keep: int) -> GraphShape | None:
        """The bucket for a batch, or ``None`` where it runs as a plain pass."""
        if not self.enabled:
            return None
        shape = graph_shape(rows, width, keep, max_rows=self.max_rows)
        return None if shape in self._too_large else shape

    @property
    def bytes(self) -> int:
        """Device memory held by the captured graphs."""
        return sum(captured.bytes for captured in self._captured.values())

    def admit(self, shape: GraphShape) -> bool:
        """Count one use of ``shape``: whether this use runs through :meth:`run` (replayed,
        or captured now). ``False`` on a bucket's first uses: run that batch as a plain pass
        at its own size, with no bucket padding."""
        if shape in self._captured:
            return True
        seen = self._seen.get(shape, 0) + 1
        if seen < self.capture_after:
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
            self._seen[shape] = seen
            return False
        self._seen.pop(shape, None)
        return True

    def run(
        self,
        shape: GraphShape,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor | None:
        """Logits ``(shape.rows, shape.keep, vocabulary)`` for inputs of exactly ``shape``
        (admitted by :meth:`admit`): the bucket's graph replayed, or captured now. ``None``
        where the capture failed, which turns graphs off: run a plain pass then. A replayed
        graph's tensor is overwritten by its next replay: copy what must outlive it."""
        captured = self._captured.get(shape)
        if captured is None:
            return self._capture(shape, input_ids, attention_mask, position_ids)
        self._captured.move_to_end(shape)
        captured.input_ids.copy_(input_ids)
        captured.attention_mask.copy_(attention_mask)
        captured.position_ids.copy_(position_ids)
        if captured.graph is None:
            captured.logits = self._forward(captured, shape.keep)
        else:
            captured.graph.replay()
        self.replays += 1
        assert captured.logits is not None
        return captured.logits

    def clear(self) -> None:
        """Release every captured graph and its memory."""
        self._captured.clear()

    def __len__(self) -> int:
        return len(self._captured)

    def _forward(self, captured: _Captured, keep: int) -> torch.Tensor:
        output = self._model(
            input_ids=captured.input_ids,
            attention_mask=captured.attention_mask,
            position_ids=captured.position_ids,
            logits_to_keep=keep,
            use_cache=False,
        )
        return output.logits

    def _capture(
        self,
        shape: GraphShape,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor | None:
        """Capture the bucket with these inputs in its buffers; the logits of this call."""
        captured = _Captured(
            graph=None,
            input_ids=input_ids.to(self._device, copy=True),
            attention_mask=attention_mask.to(self._device, copy=True),
            position_ids=position_ids.to(self._device, copy=True),
        )
        if not self.capture:
            logits = captured.logits = self._forward(captured, shape.keep)
        else:
            try:
                logits = self._record(captured, shape.keep)
            except Exception as error:  # any failure means: run plainly
                self.enabled = False
                self._captured.clear()
                logger.warning("CUDA graphs are off for this model: capture failed (%s)", error)
                if self._device.type == "cuda":
                    torch.cuda.synchronize(self._device)
                return None
            if captured.bytes > self.max_bytes // 4:
                self._too_large.add(shape)
                return logits
        while self._captured and (
            len(self._captured) >= MAX_GRAPHS or self.bytes + captured.bytes > self.max_bytes
        ):
            self._captured.popitem(last=False)
        self._captured[shape] = captured
        self.captures += 1
        return logits

    def _record(self, captured: _Captured, keep: int) -> torch.Tensor:
        """Run the pass once plainly (its logits are returned: the answer for this call, and
        the warm-up that lets libraries set up their workspaces), then capture it into
        ``captured`` (graph, output, and the bytes its memory pool took)."""
        logits = self._forward(captured, keep)
        torch.cuda.synchronize(self._device)
        torch.cuda.empty_cache()  # as the capture does first: `before` is then what stays
        before = torch.cuda.memory_reserved(self._device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            captured.logits = self._forward(captured, keep)
        captured.graph = graph
        captured.bytes = torch.cuda.memory_reserved(self._device) - before
        return logits
