"""Fused LoRA projections (``train.fused_lora``): a frozen projection and its adapter as one autograd function.

peft runs an adapted projection as separate modules: the base layer (bitsandbytes' 4-bit matmul, or a plain linear),
then dropout, ``lora_A``, ``lora_B``, a scaling multiply and an add, each with its own Python, autocast casts and
autograd node. On the lent H200 the 8B QLoRA step (224 adapted projections) and the 1B LoRA step are host-bound:
the GPU is busy 17% and 37% of the step, about 45 kernels and a dozen autograd nodes a projection
(bench/NOTES.md, round 6). Here one function does the same arithmetic in fewer kernels (the adapter's output is
added inside the matmul, ``addmm_`` in place; the dropout mask is redrawn in the backward pass from the saved
generator state, as ``loratui.train.lean`` does) and keeps only the input (shared by q, k and v) and the rank-wide
``A x``: a memory lever. 8B bf16 LoRA on all linear layers, 16 rows (one H200 call, round 10): 9,491 tokens/s at
47.5 GiB against peft's path (its input cast off under autocast) 10,902 at 61.6; keeping the dropped copy and mask
as peft does instead of the redraw ran 10,890 at 70.7 GiB, so the redraw stays. Out of place, ``addmm`` copied its
input first (11 ms of a 288 ms step there).

Only a plain LoRA adapter is fused: one active adapter, no DoRA or other variant, no adapter bias, not merged, the
base a ``torch.nn.Linear`` or a bitsandbytes ``Linear4bit``. Anything else (adapters disabled, several adapters,
inference without gradients) runs peft's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loratui.train.lean import _generator, redraw_dropout


def _dequantized(base, dtype: torch.dtype) -> torch.Tensor:
    """The base layer's weight, ``(out, in)``, in the compute dtype (a 4-bit weight dequantized now)."""
    w = base.weight
    state = getattr(w, "quant_state", None)
    if state is None:
        return w if w.dtype == dtype else w.to(dtype)
    import bitsandbytes.functional as bnbf

    return bnbf.dequantize_4bit(w, state).to(dtype)


class _FusedLoRA(torch.autograd.Function):
    """``base(x) + scaling * B(A(dropout(x)))`` with one autograd node."""

    @staticmethod
    def forward(ctx, x, a_weight, b_weight, base, scaling: float, p: float, training: bool):
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        shape = x.shape
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.reshape(-1, shape[-1])
            xc = x2 if x2.dtype == dtype else x2.to(dtype)
            a, b = a_weight.to(dtype), b_weight.to(dtype)
            drop = training and p > 0
            if drop:
                ctx.state = _generator(x.device).get_state()
            xa = F.linear(F.dropout(xc, p, True) if drop else xc, a)  # (n, r)
            bias = base.bias
            out = F.linear(xc, _dequantized(base, dtype), None if bias is None else bias.to(dtype))
            out.addmm_(xa, b.t(), alpha=scaling)  # in place: out of place, addmm first copies its input
        ctx.base, ctx.scaling, ctx.p, ctx.drop, ctx.dtype = base, scaling, p, drop, dtype
        ctx.save_for_backward(x, xa, a, b)
        ctx.a_dtype, ctx.b_dtype = a_weight.dtype, b_weight.dtype
        return out.reshape(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x, xa, a, b = ctx.saved_tensors
        dtype, s = ctx.dtype, ctx.scaling
        shape = x.shape
        with torch.autocast(x.device.type, enabled=False):
            g = grad_out.reshape(-1, grad_out.shape[-1])
            g = g if g.dtype == dtype else g.to(dtype)
            x2 = x.reshape(-1, shape[-1])
            xc = x2 if x2.dtype == dtype else x2.to(dtype)
            if ctx.drop:
                dropped, mask = redraw_dropout(ctx.state, xc, ctx.p)
            else:
                dropped, mask = xc, None
            gb = g @ b  # (n, r)
            grad_b = (g.t() @ xa).mul_(s) if ctx.needs_input_grad[2] else None
            grad_a = (gb.t() @ dropped).mul_(s) if ctx.needs_input_grad[1] else None
            grad_x = None
            if ctx.needs_input_grad[0]:
                w = _dequantized(ctx.base, dtype)
                if mask is None:
                    grad_x = (g @ w).addmm_(gb, a, alpha=s)
                else:
                    grad_x = torch.ops.aten.native_dropout_backward(gb @ a, mask, s / (1.0 - ctx.p)).addmm_(g, w)
                grad_x = grad_x.reshape(shape).to(x.dtype)
        return (grad_x, None if grad_a is None else grad_a.to(ctx.a_dtype),
                None if grad_b is None else grad_b.to(ctx.b_dtype), None, None, None, None)


def _fusable_base(base) -> bool:
    if type(base) is torch.nn.Linear:
        return True
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return type(base) is bnb.nn.Linear4bit and getattr(base.weight, "quant_state", None) is not None


def _fused_forward(layer, peft_forward):
    """The forward installed on one adapted projection: the fused function where it applies, else peft's."""

    def forward(x, *args, **kwargs):
        active = layer.active_adapters
        if (args or kwargs or layer.disable_adapters or layer.merged or len(active) != 1
                or not torch.is_grad_enabled()):
            return peft_forward(x, *args, **kwargs)
        name = active[0]
        if name not in layer.lora_A or name in (getattr(layer, "lora_variant", None) or {}):
            return peft_forward(x, *args, **kwargs)
        a, b = layer.lora_A[name], layer.lora_B[name]
        drop = layer.lora_dropout[name]
        p = float(drop.p) if isinstance(drop, torch.nn.Dropout) else 0.0
        training = layer.training and (not isinstance(drop, torch.nn.Dropout) or drop.training)
        return _FusedLoRA.apply(x, a.weight, b.weight, layer.base_layer, float(layer.scaling[name]), p, training)

    return forward


def fuse_lora(model) -> int:
    """Install the fused forward on every plain LoRA projection of ``model``; returns how many."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer) or not hasattr(module, "lora_A"):
            continue
        if not _fusable_base(module.get_base_layer()) or module.base_layer is not module.get_base_layer():
            continue
        names = list(module.lora_A.keys())
        if len(names) != 1 or names[0] in (getattr(module, "lora_variant", None) or {}):
            continue
        a, b = module.lora_A[names[0]], module.lora_B[names[0]]
        if type(a) is not torch.nn.Linear or type(b) is not torch.nn.Linear or a.bias is not None \
                or b.bias is not None:
            continue
        drop = module.lora_dropout[names[0]]
        if not isinstance(drop, (torch.nn.Dropout, torch.nn.Identity)):
            continue
        module.forward = _fused_forward(module, module.forward)
        module.loratui_fused = True
        n += 1
    return n
