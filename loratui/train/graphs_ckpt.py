"""Checkpointed decoder layers replayed as CUDA graphs (``train.cuda_graphs`` with gradient checkpointing).

Why: gradient checkpointing is how a run fits a small card (a layer keeps only its input and runs again in the
backward pass), but on the 8B QLoRA shape the eager step is mostly the host issuing kernels through Python, and the
recomputation issues them twice. Graphs replay a layer as one launch; with checkpointing they must also keep memory
as low as checkpointing does.

How, per step size: every layer gets two graphs, a forward without autograd (its output only) and a forward plus
backward (its input's and its adapters' gradients), captured with ``torch.cuda.graph`` in one shared memory pool.
All layers of a size read and write the same two static buffers (the hidden states and their gradient), so what a
size keeps is two buffers of the step's hidden states and one set of adapter gradients (layers of the same shapes
share it); each graph's intermediates are freed when its capture ends and the next capture reuses them (only one
layer runs at a time).
The layer's input is what autograd keeps (the checkpoint). Dropout: the recomputation draws the same masks as the
forward pass, because the generator's offset is set back to where the forward pass started (a graph reads the
generator's offset when it is replayed), as ``torch.utils.checkpoint`` restores the RNG state.
"""

from __future__ import annotations

import torch


class Shared:
    """What every step size's graphs read and write, allocated once: the hidden states and their gradient (room for
    the largest step; a size takes the front of it), and the adapters' gradients (one set per layer shape)."""

    def __init__(self, params, hidden, max_tokens: int):
        self.tokens = max(max_tokens, hidden.shape[1])
        width = hidden.shape[-1]
        self.x = hidden.new_zeros(self.tokens * width)
        self.g = hidden.new_zeros(self.tokens * width)
        # the adapters' gradients: one set of buffers for every layer of the same shapes (a layer's are copied out
        # before the next layer's backward graph overwrites them), not one per layer: 0.16 GiB on the 8B shape
        by_shape: dict = {}
        self.grads = [by_shape.setdefault(tuple((p.shape, p.dtype) for p in ps),
                                          tuple(torch.zeros_like(p) for p in ps)) for ps in params]

    def fits(self, hidden) -> bool:
        return hidden.numel() <= self.x.numel() and hidden.dtype == self.x.dtype

    def view(self, flat, hidden):
        return flat[: hidden.numel()].view(hidden.shape)


class Size:
    """One step size's graphs for every layer: ``fwd[i]()`` turns ``x`` into layer i's output in place;
    ``bwd[i]()`` turns ``g`` (the gradient of layer i's output) into that of its input in place, given its input in
    ``x``, and leaves the gradients of the layer's trainable parameters in ``shared.grads[i]``."""

    def __init__(self, calls, params, hidden, cos, sin, cu, capture, shared: Shared):
        self.x, self.g = shared.view(shared.x, hidden), shared.view(shared.g, hidden)  # graphs read their memory
        self.grads = shared.grads
        self.cos, self.sin, self.cu = cos.detach().clone(), sin.detach().clone(), cu.clone()
        self.fwd = [capture(self._forward(call)) for call in calls]
        self.bwd = [capture(self._backward(call, ps, out)) for call, ps, out in zip(calls, params, self.grads)]

    def load(self, cos, sin, cu) -> None:
        """This step's rotary tables and sequence boundaries into the graphs' inputs (the same for every layer;
        they stay until the backward pass has run)."""
        self.cos.copy_(cos)
        self.sin.copy_(sin)
        self.cu.copy_(cu)

    def _forward(self, call):
        def run():
            with torch.no_grad():
                self.x.copy_(call(self.x, self.cos, self.sin, self.cu))

        return run

    def _backward(self, call, params, outs):
        def run():
            with torch.enable_grad():
                x = self.x.detach().requires_grad_(True)
                out = call(x, self.cos, self.sin, self.cu)
                grads = torch.autograd.grad(out, (x, *params), grad_outputs=self.g, allow_unused=True)
            self.g.copy_(grads[0])
            for o, g in zip(outs, grads[1:]):
                if g is None:
                    o.zero_()
                else:
                    o.copy_(g)
            return outs

        return run


def cuda_capture(pool, side):
    """A ``capture(fn) -> replay`` that records ``fn`` as a CUDA graph in ``pool`` (after two warm-up runs on the
    ``side`` stream, as make_graphed_callables does: cuBLAS workspaces, lazy initialisation) and replays it. One side
    stream for every warm-up and capture: the allocator keeps what each stream freed for that stream.

    The warm-ups allocate from the graphs' pool too (``pool`` is a ``torch.cuda.MemPool``'s id), so the capture
    reuses their memory: a new step size costs the card one layer's working memory, not that twice over (the
    warm-ups' in the card's own pool beside the graphs')."""

    def capture(fn):
        device = torch.cuda.current_device()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            torch._C._cuda_beginAllocateToPool(device, pool)  # what torch.cuda.use_mem_pool does, backward's
            try:  # thread included (use_mem_pool routes the calling thread's allocations only)
                for _ in range(2):
                    fn()
            finally:
                torch._C._cuda_endAllocateToPool(device, pool)
                torch._C._cuda_releasePool(device, pool)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, stream=side):
            out = fn()

        def replay():
            graph.replay()
            return out

        return replay

    return capture


def eager_capture(fn):
    """The stand-in for ``cuda_capture`` (tests on a CPU): the same static-buffer plumbing, run eagerly."""
    return fn


class Rng:
    """Where the dropout masks of a layer start: a CUDA generator's offset (what a replayed graph reads), or the CPU
    generator's whole state (the eager stand-in)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.gen = (torch.cuda.default_generators[device.index if device.index is not None
                                                  else torch.cuda.current_device()]
                    if self.cuda else torch.default_generator)

    def mark(self):
        return self.gen.get_offset() if self.cuda else self.gen.get_state()

    def restore(self, mark) -> None:
        if self.cuda:
            self.gen.set_offset(mark)
        else:
            self.gen.set_state(mark)


class Offload:
    """The checkpoints (each layer's input) in pinned host memory instead of on the card (offloaded checkpointing,
    as Unsloth does): copied out on a side stream as the forward pass goes on, and back one layer ahead of the
    backward pass, so the copies overlap the layers' replays. The last layer's input stays (it is needed first).
    Host buffers are kept per layer and reused every step. On a CPU the same bookkeeping runs with plain copies."""

    def __init__(self, layers: int, device: torch.device):
        self.layers, self.cuda = layers, device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.host: list = [None] * layers
        self.shape: list = [None] * layers
        self.kept: dict[int, torch.Tensor] = {}  # the last layer's input, or one copied back ahead
        self.ready: dict[int, object] = {}  # CUDA events: the copy back has finished

    def _side(self):
        import contextlib

        return torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()

    def put(self, i: int, hidden) -> None:
        if i == 0:  # a new forward pass: nothing of an earlier one (a step that never ran backward) is handed back
            self.kept.clear()
            self.ready.clear()
        self.shape[i] = (hidden.shape, hidden.dtype)
        if i == self.layers - 1:
            self.kept[i] = hidden
            return
        n, buf = hidden.numel(), self.host[i]
        if buf is None or buf.numel() < n or buf.dtype != hidden.dtype:
            buf = self.host[i] = torch.empty(n, dtype=hidden.dtype, pin_memory=self.cuda)
        if self.cuda:
            self.stream.wait_stream(torch.cuda.current_stream())
            hidden.record_stream(self.stream)  # its memory is not reused before the copy has run
        with self._side():
            buf[:n].copy_(hidden.reshape(-1), non_blocking=self.cuda)

    def prefetch(self, i: int) -> None:
        if i < 0 or i in self.kept or self.shape[i] is None:
            return
        shape, dtype = self.shape[i]
        out = torch.empty(shape, dtype=dtype, device=torch.cuda.current_device() if self.cuda else "cpu")
        if self.cuda:
            self.stream.wait_stream(torch.cuda.current_stream())  # ``out``'s memory may have been in use there
        with self._side():
            out.view(-1).copy_(self.host[i][: out.numel()], non_blocking=self.cuda)
            if self.cuda:
                self.ready[i] = torch.cuda.Event()
                self.ready[i].record()
        self.kept[i] = out

    def take(self, i: int):
        if i not in self.kept:
            self.prefetch(i)
        out = self.kept.pop(i)
        event = self.ready.pop(i, None)
        if event is not None:
            torch.cuda.current_stream().wait_event(event)
        self.prefetch(i - 1)  # the next layer back travels while this one replays
        return out


class Replay(torch.autograd.Function):
    """Layer ``i`` of ``size`` as one autograd node that keeps only its input (the checkpoint)."""

    @staticmethod
    def forward(ctx, size: Size, i: int, rng: Rng, offload: Offload | None, hidden, *params):
        ctx.size, ctx.i, ctx.rng, ctx.offload = size, i, rng, offload
        ctx.mark = rng.mark()
        size.x.copy_(hidden)
        size.fwd[i]()
        if offload is None:
            ctx.save_for_backward(hidden)
        else:
            offload.put(i, hidden)
        return size.x.clone()

    @staticmethod
    def backward(ctx, grad):
        hidden = ctx.saved_tensors[0] if ctx.offload is None else ctx.offload.take(ctx.i)
        size, rng = ctx.size, ctx.rng
        size.x.copy_(hidden)
        size.g.copy_(grad)
        now = rng.mark()
        rng.restore(ctx.mark)  # the recomputed forward draws the forward pass's dropout masks
        param_grads = size.bwd[ctx.i]()
        rng.restore(now)
        # copies: the graphs' buffers are overwritten by the next layer's replay
        return (None, None, None, None, size.g.clone(), *(g.clone() for g in param_grads))
