"""CUDA graphs of whole decoder layers (``train.cuda_graphs``): fewer kernel launches from Python a step.

Why: a QLoRA step of the Llama-3-8B shape with 4 short rows keeps the card busy about a fifth of the time; the rest
is the host issuing some 10,000 kernels through Python (bitsandbytes' dequantisation, peft's adapters, autocast's
casts: bench/NOTES.md, round 6 and 7). A captured graph replays a layer's forward (and, separately, its backward) as
one launch each.

How: ``torch.cuda.make_graphed_callables`` captures every decoder layer's forward and backward, once per step size.
Graphs need fixed shapes, so the packing collator pads each packed row up to one of a few sizes (``bucket_for``)
with one extra segment (labels ignored, its own attention span) and gives the sequence boundaries a fixed length
(``pad_packed``); the largest sequence length handed to the attention kernel is the bucket itself (an upper bound is
all the kernel needs). All captures share one memory pool: only one step runs at a time. Everything else (the
embeddings, the rotary tables, the head and the loss, evaluation, generation) stays eager: a layer called with
anything other than a packed training batch runs its own forward.

With gradient checkpointing (``checkpoint=True``) the layers are captured by loratui.train.graphs_ckpt instead: each
keeps only its input and is recomputed inside its graph, and the dispatcher checkpoints the layers itself (eagerly,
with torch's checkpoint, for any call the graphs do not take).
"""

from __future__ import annotations

import time

import torch

from loratui.train import graphs_ckpt

BUCKET = 256  # tokens: a packed step up to 4 x BUCKET is padded to a multiple of this
PAD_KEY = "loratui_pad"  # the padding tokens a padded batch holds (the trainer counts real tokens without them)


def bucket_for(tokens: int, bucket: int = BUCKET) -> int:
    """The step size ``tokens`` is padded to: a multiple of ``bucket`` up to 4 buckets, then the next of 1.5 x 2^k
    and 2^k buckets (each size holds its own graphs' inputs and outputs: few sizes, at most a third padding)."""
    if tokens <= 4 * bucket:
        return max(bucket, -(-tokens // bucket) * bucket)
    size = 4 * bucket
    while size < tokens:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def pad_packed(batch: dict, rows: int, bucket: int = BUCKET, pad_id: int = 0) -> dict:
    """Pad a packed batch (one row, ``cu_seq_lens_*`` from DataCollatorWithFlattening) in place to ``bucket_for``'s
    size, boundaries always ``rows + 2`` long (empty segments at the end), max lengths that size."""
    ids = batch["input_ids"]
    n = ids.shape[1]
    total = bucket_for(n + 1, bucket)  # at least one padding token: the segment is never empty
    pad = total - n
    cu = batch["cu_seq_lens_q"]
    if cu.numel() > rows + 1:
        raise ValueError(f"a packed batch of {cu.numel() - 1} rows, more than the {rows} the graphs were made for")
    batch["input_ids"] = torch.cat([ids, ids.new_full((1, pad), pad_id)], dim=1)
    if "labels" in batch:
        batch["labels"] = torch.cat([batch["labels"], batch["labels"].new_full((1, pad), -100)], dim=1)
    if "position_ids" in batch:
        pos = batch["position_ids"]
        batch["position_ids"] = torch.cat([pos, torch.arange(pad, dtype=pos.dtype).unsqueeze(0)], dim=1)
    fixed = torch.full((rows + 2,), total, dtype=cu.dtype)
    fixed[: cu.numel()] = cu
    batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = fixed
    batch["max_length_q"] = batch["max_length_k"] = total
    batch[PAD_KEY] = pad
    return batch


class _LayerCall(torch.nn.Module):
    """A decoder layer as a function of tensors only (what make_graphed_callables captures): its own forward,
    bypassing the dispatching one installed on the layer."""

    def __init__(self, layer, forward, max_length: int):
        super().__init__()
        self.layer, self._forward, self.max_length = layer, forward, max_length

    def forward(self, hidden, cos, sin, cu):
        out = self._forward(hidden, position_embeddings=(cos, sin), cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                            max_length_q=self.max_length, max_length_k=self.max_length)
        return out[0] if isinstance(out, tuple) else out


def pool_bytes(pool) -> int:
    """What the allocator holds for the graphs' memory pool (all its segments)."""
    try:
        segments = torch.cuda.memory.memory_snapshot()
    except Exception:  # noqa: BLE001 - a figure for the log only
        return 0
    return sum(s["total_size"] for s in segments if tuple(s.get("segment_pool_id", ())) == tuple(pool))


def decoder_layers(model) -> list:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


class LayerGraphs:
    """Every decoder layer's forward replaced by a dispatcher: packed training calls of a captured (or capturable)
    shape replay graphs, every other call runs the layer's own forward. ``capture`` is make_graphed_callables, or
    with ``checkpoint`` graphs_ckpt.cuda_capture (a test hands in a stand-in to check the plumbing on a CPU).
    ``max_tokens`` sizes the checkpointed graphs' shared buffers; ``log`` hears each capture's time and pool size."""

    def __init__(self, model, autocast_dtype=None, capture=None, notify=None, checkpoint: bool = False,
                 offload: bool = False, max_tokens: int = 0, log=None):
        self.layers = decoder_layers(model)
        if not self.layers:
            raise ValueError("no decoder layers found to capture")
        # checkpointed layers (loratui.train.graphs_ckpt): the dispatcher checkpoints them itself, graphs or not
        self.checkpoint = checkpoint
        self.offload = offload and checkpoint  # the checkpoints in host memory (graphs_ckpt.Offload)
        self.offloader = None
        self.rng = None  # graphs_ckpt.Rng, made with the first checkpointed capture
        self.max_tokens = max_tokens  # the largest step (checkpointed graphs size their shared buffers by it)
        self.shared = None
        self.log = log or (lambda message: None)
        if checkpoint:
            for layer in self.layers:
                layer.gradient_checkpointing = False
        self.params = [tuple(p for p in layer.parameters() if p.requires_grad) for layer in self.layers]
        self.forwards = [layer.forward for layer in self.layers]  # the layers' own (bound) forwards
        self.autocast_dtype = autocast_dtype
        self.capture = capture
        self.graphs: dict[tuple, tuple] = {}
        self.pool = None
        self.mempool = None  # torch.cuda.MemPool of the checkpointed graphs (their warm-ups allocate from it too)
        self.replays = 0
        self.failed: str | None = None  # why capturing failed: every layer runs its own forward from then on
        self.notify = notify or (lambda message: None)
        for i, layer in enumerate(self.layers):
            layer.forward = self._dispatcher(i)

    def remove(self) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)

    def _dispatcher(self, i: int):
        own = self.forwards[i]

        def forward(hidden_states, *args, position_embeddings=None, **kwargs):
            cu = kwargs.get("cu_seq_lens_q")
            training = torch.is_grad_enabled() and self.layers[i].training

            def eager():
                if self.checkpoint and training:
                    from torch.utils.checkpoint import checkpoint

                    return checkpoint(own, hidden_states, *args, position_embeddings=position_embeddings,
                                      use_reentrant=False, **kwargs)
                return own(hidden_states, *args, position_embeddings=position_embeddings, **kwargs)

            if (self.failed or cu is None or position_embeddings is None or not training
                    or kwargs.get("max_length_q") != hidden_states.shape[1]):
                return eager()
            key = (hidden_states.shape[1], cu.numel(), hidden_states.dtype)
            graphs = self.graphs.get(key) or self._capture(key, hidden_states, position_embeddings, cu)
            if graphs is None:  # capturing failed: this step and the rest run eager
                return eager()
            if i == 0:
                self.replays += 1
            if self.checkpoint:
                if i == 0:
                    graphs.load(*position_embeddings, cu)
                return graphs_ckpt.Replay.apply(graphs, i, self.rng, self.offloader, hidden_states.contiguous(),
                                    *self.params[i])
            cos, sin = position_embeddings
            return graphs[i](hidden_states, cos, sin, cu)

        return forward

    def _capture(self, key, hidden, position_embeddings, cu) -> tuple | None:
        """Every layer's graphs for this step size; None (and eager from now on) when capturing fails: a speed
        lever never ends a run."""
        try:
            return self._capture_all(key, hidden, position_embeddings, cu)
        except Exception as err:  # noqa: BLE001 - a kernel that cannot be captured, memory, a driver limit
            self.graphs.clear()
            self.pool = self.mempool = None
            self.failed = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            self.notify(f"CUDA graphs off for the rest of the run: capturing the layers failed ({self.failed}); "
                        "training goes on without them (train.cuda_graphs: off skips the attempt)")
            return None

    def _capture_all(self, key, hidden, position_embeddings, cu) -> tuple:
        tokens = key[0]
        calls = tuple(_LayerCall(layer, own, tokens) for layer, own in zip(self.layers, self.forwards))
        cos, sin = (t.detach() for t in position_embeddings)
        if self.checkpoint:
            return self._capture_checkpointed(key, calls, hidden, cos, sin, cu)
        samples = tuple((torch.randn_like(hidden, requires_grad=True), cos, sin, cu.clone()) for _ in calls)
        capture = self.capture
        if capture is None:
            capture = torch.cuda.make_graphed_callables
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            kwargs = {"pool": self.pool}
        else:
            kwargs = {}
        if self.autocast_dtype is not None and hidden.is_cuda:
            with torch.autocast("cuda", dtype=self.autocast_dtype, cache_enabled=False):
                graphed = capture(calls, samples, **kwargs)
        else:
            graphed = capture(calls, samples, **kwargs)
        self.graphs[key] = tuple(graphed)
        return self.graphs[key]

    def _capture_checkpointed(self, key, calls, hidden, cos, sin, cu):
        import contextlib

        if self.rng is None:  # once a run: the generator, the offloader, the pool and the warm-ups' side stream
            self.rng = graphs_ckpt.Rng(hidden.device)
            if self.offload:
                self.offloader = graphs_ckpt.Offload(len(self.layers), hidden.device)
        capture = self.capture
        if capture is None:
            if self.pool is None:  # a MemPool (not a bare handle): the warm-ups allocate from it too
                self.mempool = torch.cuda.MemPool()
                self.pool = self.mempool.id
                self.side = torch.cuda.Stream()
            capture = graphs_ckpt.cuda_capture(self.pool, self.side)
        autocast = (torch.autocast("cuda", dtype=self.autocast_dtype, cache_enabled=False)
                    if self.autocast_dtype is not None and hidden.is_cuda else contextlib.nullcontext())
        if self.shared is None or not self.shared.fits(hidden):
            self.shared = graphs_ckpt.Shared(self.params, hidden, self.max_tokens)
        mark = self.rng.mark()  # the warm-up runs draw dropout masks: the run's own draws stay as without graphs
        started = time.monotonic()
        with autocast:
            size = graphs_ckpt.Size(calls, self.params, hidden.detach(), cos, sin, cu, capture, self.shared)
        self.rng.restore(mark)
        if hidden.is_cuda:  # the warm-ups' blocks, cached for the side stream only: back to the card
            torch.cuda.empty_cache()
            self.log(f"CUDA graphs: steps of {key[0]:,} tokens captured in {time.monotonic() - started:.1f} s "
                     f"(their memory pool {pool_bytes(self.pool) / 2**30:.2f} GiB)")
        self.graphs[key] = size
        return size
