"""Lean LoRA activations (``train.lean_activations``): keep only what LoRA's backward pass needs.

What peft keeps for the backward pass of every adapted projection, on top of what the frozen projection keeps:
the input cast to the adapter's dtype (fp32), the dropout's mask, and the dropped copy cast back by autocast. Each
of q, k and v keeps its own copies of the same input, so on a QLoRA run of a Llama-3-8B shape with all seven
projections adapted these copies are about 40% of the step's activations (bench/RESULTS.md, memory estimate).

Under autocast (bf16/fp16 training) every LoRA run hands the adapter its input as it is (autocast casts it for the
matmul anyway; ``cast_input_dtype_enabled`` is peft's own switch for this: ``keep_adapter_input_dtype``), and here
``A(dropout(x))`` is one autograd function that keeps ``x`` itself (one tensor for q, k and v, which share it) and
redraws the dropout mask from the saved RNG state in the backward pass, so the gradients are the same. The cost is
one more dropout kernel per adapted projection in the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


class _DropoutLinear(torch.autograd.Function):
    """``linear(dropout(x), weight)`` keeping only ``x`` (and the generator state the mask was drawn from).

    The backward pass redraws the same mask (``native_dropout``, which ``F.dropout`` runs on a GPU and whose CPU
    draws are the same, on the same shape from the same generator state) instead of reading a stored copy. A plain
    autograd function rather than torch.utils.checkpoint: on the QLoRA 8B shape (224 adapters a step) checkpoint's
    per-call bookkeeping cost 17% of the step.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        gen = _generator(x.device)
        ctx.state = gen.get_state()
        ctx.p = p
        out = F.linear(F.dropout(x, p, True), weight)  # under autocast: in the autocast dtype, as peft's path
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        return (*_redrawn_grads(ctx, x, weight, grad_out), None)


def redraw_dropout(state: torch.Tensor, x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(dropped, mask): the forward pass's dropout of ``x``, drawn again from the generator state it was drawn from
    (the generator's own state is left as it was)."""
    gen = _generator(x.device)
    now = gen.get_state()
    gen.set_state(state)
    try:
        return torch.native_dropout(x, p, True)
    finally:
        gen.set_state(now)


def _redrawn_grads(ctx, x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor):
    """Gradients of ``linear(dropout(x), weight)`` with the forward's dropout mask drawn again."""
    dropped, mask = redraw_dropout(ctx.state, x, ctx.p)
    dtype = grad_out.dtype
    grad_x = torch.ops.aten.native_dropout_backward(grad_out @ weight.to(dtype), mask, 1.0 / (1.0 - ctx.p))
    grad_w = grad_out.reshape(-1, grad_out.shape[-1]).T @ dropped.to(dtype).reshape(-1, x.shape[-1])
    return grad_x.to(x.dtype), grad_w.to(weight.dtype)


class _DropoutLinearFromParts(torch.autograd.Function):
    """``linear(dropout(x), weight)`` for a gated MLP's down projection, where ``x = act(g) * u``: keeps ``g`` and
    ``u`` (which the activation keeps for its own backward pass anyway: no new memory) instead of ``x``, and
    computes ``x`` again in the backward pass with the same function. This runs before the activation's own
    backward (its output's gradient needs this one), so ``g`` and ``u`` are still as the forward pass left them
    (Liger's SwiGLU backward overwrites them in place)."""

    @staticmethod
    def forward(ctx, x, g, u, weight, p, combine):
        ctx.state = _generator(x.device).get_state()
        ctx.p, ctx.combine = p, combine
        out = F.linear(F.dropout(x, p, True), weight)
        ctx.save_for_backward(g, u, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        g, u, weight = ctx.saved_tensors
        with torch.no_grad():
            x = ctx.combine(g, u)
        grad_x, grad_w = _redrawn_grads(ctx, x, weight, grad_out)
        return grad_x, None, None, grad_w, None, None


class RecomputedDropoutLinear(torch.nn.Linear):
    """LoRA's A matrix with the adapter's input dropout folded in, its mask redrawn in the backward pass.

    The same parameters (and state-dict keys) as the ``nn.Linear`` it replaces: saved adapters are unchanged.
    """

    dropout_p: float = 0.0
    parts: "GatedParts | None" = None  # a gated MLP's down projection: its input's parts (lean_gated_mlps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.parts.take(x) if self.parts is not None else None
        if not self.training or self.dropout_p == 0:
            return F.linear(x, self.weight)
        if not torch.is_grad_enabled() or not (x.requires_grad or self.weight.requires_grad):
            return F.linear(F.dropout(x, self.dropout_p, True), self.weight)
        if parts is not None:
            g, u, combine = parts
            return _DropoutLinearFromParts.apply(x, g, u, self.weight, self.dropout_p, combine)
        return _DropoutLinear.apply(x, self.weight, self.dropout_p)


def _liger_silu_mul():
    try:
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
    except Exception:  # noqa: BLE001 - no Liger (CPU boxes): the MLP's own activation is the only candidate
        return None
    return LigerSiLUMulFunction.apply


class GatedParts:
    """What one gated MLP's forward pass hands its down projection's adapter: the gate and up projections'
    outputs, taken (and dropped) by the adapter's next call.

    Which function made the down projection's input from them (Liger's SwiGLU or the MLP's own ``act_fn(g) * u``)
    is checked once, bit for bit, on the first training step; if neither gives exactly the input, this MLP keeps
    its input as before.
    """

    def __init__(self, mlp):
        self.g = self.u = None
        self.combine = None
        self.disabled = False
        act = getattr(mlp, "act_fn", None)
        self.candidates = [c for c in (_liger_silu_mul(), (lambda g, u: act(g) * u) if act is not None else None)
                           if c is not None]

    def hold(self, which: str, module, out) -> None:
        if self.disabled or not (module.training and torch.is_grad_enabled() and isinstance(out, torch.Tensor)):
            return
        setattr(self, which, out)

    def take(self, x: torch.Tensor):
        g, u = self.g, self.u
        self.g = self.u = None
        if self.disabled or g is None or u is None or g.shape != x.shape or u.shape != x.shape \
                or g.dtype != x.dtype:
            return None
        if self.combine is None:
            with torch.no_grad():
                self.combine = next((c for c in self.candidates if _same(c, g, u, x)), None)
            if self.combine is None:
                self.disabled = True
                return None
        return g, u, self.combine


def _same(combine, g, u, x) -> bool:
    try:
        y = combine(g, u)
        return y.dtype == x.dtype and bool(torch.equal(y, x))
    except Exception:  # noqa: BLE001 - a candidate that can't run here (Liger's kernel on a CPU tensor)
        return False


def lean_gated_mlps(model) -> int:
    """Gated MLPs (``down(act(gate(x)) * up(x))``: Llama, Mistral, Qwen) whose down projection's adapter
    recomputes its dropout: the adapter keeps the gate and up outputs the activation keeps anyway, instead of its
    own input (intermediate-size wide: on the QLoRA 8B shape about 2 GiB of a 4-bit step's activations).
    Returns how many MLPs do so."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for mlp in model.modules():
        gate, up, down = (getattr(mlp, a, None) for a in ("gate_proj", "up_proj", "down_proj"))
        if gate is None or up is None or not isinstance(down, LoraLayer):
            continue
        adapters = [a for a in down.lora_A.values() if isinstance(a, RecomputedDropoutLinear)]
        if len(adapters) != 1 or len(down.lora_A) != 1:
            continue
        parts = GatedParts(mlp)
        if not parts.candidates:
            continue
        adapters[0].parts = parts
        gate.register_forward_hook(lambda m, i, out, parts=parts: parts.hold("g", m, out))
        up.register_forward_hook(lambda m, i, out, parts=parts: parts.hold("u", m, out))
        n += 1
    return n


def keep_adapter_input_dtype(model) -> int:
    """Stop peft casting each adapter's input to the adapter's dtype (fp32) before its dropout and ``A``: under
    autocast (bf16/fp16 training only) the matmul casts it back anyway, so each adapted projection wrote its input
    twice more forward and twice more backward, and dropped it in fp32. 8B bf16 LoRA on all linear layers, 16
    rows: 59 ms of a step's 345 ms of kernels were copies and casts (bench/RESULTS.md, round 10). The same
    arithmetic in the compute dtype (peft's own switch, ``cast_input_dtype_enabled``). Returns how many layers."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False
            n += 1
    return n


def lean_lora(model, *, recompute_dropout: bool = True) -> int:
    """Fold every plain LoRA adapter's dropout into its A matrix (recomputed in backward; not needed, so not done,
    when whole layers are checkpointed).

    Returns how many adapters now recompute their dropout. DoRA and other variants that use the dropped input
    themselves are left as peft builds them.
    """
    from peft.tuners.lora import LoraLayer

    folded = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if not recompute_dropout or getattr(module, "loratui_fused", False):  # fused: its function redraws it
            continue
        variants = getattr(module, "lora_variant", {}) or {}
        for name, drop in list(module.lora_dropout.items()):
            a = module.lora_A[name] if name in module.lora_A else None
            if (name in variants or not isinstance(drop, torch.nn.Dropout) or drop.p == 0
                    or type(a) is not torch.nn.Linear or a.bias is not None):
                continue
            a.__class__ = RecomputedDropoutLinear
            a.dropout_p = float(drop.p)
            module.lora_dropout[name] = torch.nn.Identity()
            folded += 1
    return folded
