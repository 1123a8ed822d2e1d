"""Lean LoRA activations (``train.lean_activations``): keep only what LoRA's backward pass needs.

What peft keeps for the backward pass of every adapted projection, on top of what the frozen projection keeps:
the input cast to the adapter's dtype (fp32), the dropout's mask, and the dropped copy cast back by autocast. Each
of q, k and v keeps its own copies of the same input, so on a QLoRA run of a Llama-3-8B shape with all seven
projections adapted these copies are about 40% of the step's activations (bench/RESULTS.md, memory estimate).

Here, under autocast (bf16/fp16 training), the input is handed to the adapter as it is (autocast casts it for the
matmul anyway; ``cast_input_dtype_enabled`` is peft's own switch for this), and ``A(dropout(x))`` runs under
torch's activation checkpointing: the only tensor kept is ``x`` itself, the same tensor the frozen projection
keeps, and the backward pass regenerates the dropout mask from the saved RNG state, so the gradients are the same.
The cost is one small matmul (rank r) and one dropout per adapted projection in the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _dropout_linear(x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
    return F.linear(F.dropout(x, p, True), weight)


class RecomputedDropoutLinear(torch.nn.Linear):
    """LoRA's A matrix with the adapter's input dropout folded in, recomputed in the backward pass.

    The same parameters (and state-dict keys) as the ``nn.Linear`` it replaces: saved adapters are unchanged.
    """

    dropout_p: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout_p == 0:
            return F.linear(x, self.weight)
        if not torch.is_grad_enabled():
            return _dropout_linear(x, self.weight, self.dropout_p)
        return checkpoint(_dropout_linear, x, self.weight, self.dropout_p, use_reentrant=False)


def lean_lora(model, *, keep_input_dtype: bool, recompute_dropout: bool = True) -> int:
    """Fold every plain LoRA adapter's dropout into its A matrix (recomputed in backward; not needed, so not done,
    when whole layers are checkpointed) and, with ``keep_input_dtype`` (training under autocast only), stop peft
    casting each adapter's input to fp32.

    Returns how many adapters now recompute their dropout. DoRA and other variants that use the dropped input
    themselves are left as peft builds them.
    """
    from peft.tuners.lora import LoraLayer

    folded = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if keep_input_dtype:
            module.cast_input_dtype_enabled = False
        if not recompute_dropout:
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
