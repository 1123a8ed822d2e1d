"""16-bit copies of the adapters' fp32 weights for the in-place LoRA forward (loratui.train.inplace_lora).

Under autocast each adapted projection casts its two fp32 adapter weights to bf16 every forward pass (two cast
kernels, each an autocast dispatch and an autograd node), and the backward pass casts their bf16 gradients back to
fp32 (``ToCopyBackward0``): 896 launches a step on the 8B shape with LoRA on all linear layers, issued while the card
runs the adapters' small kernels faster than the host launches them (round 13's gap trace). Here the forward uses
16-bit copies made once a step for all adapters together (one ``_foreach_copy_`` after each optimizer step), and
their gradients go into the fp32 weights' gradients once a micro-batch (one foreach op). The arithmetic is the one
autocast does: the same rounded weights in the matmuls, the same bf16 gradients widened to fp32 and accumulated
there; the fp32 weights stay the model's parameters (the optimizer, clipping, checkpoints and the saved adapter are
unchanged).

One CUDA card, sft, no CUDA graphs (their captured layers keep gradient buffers of their own); on since round 14's
GPU call (``ENABLED``; bench/RESULTS.md "Round 14").
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

#: measured on the 8B bf16 LoRA step (one H100, round 14, one A/B pair in one call): 13,452 tokens/s against 13,207
#: (+1.9%; the median logged step +2.5%), +0.14 GiB; the casts' path stays for a quantized base, CUDA graphs, several
#: cards and the preference objectives
ENABLED = True


class AdapterCopies(TrainerCallback):
    """The 16-bit copies of a model's adapter weights: refreshed at the start of training and after every optimizer
    step, their gradients collected into the fp32 weights' after each micro-batch (LoratuiTrainer.training_step)."""

    def __init__(self, layers: list):
        self.layers = layers  # each layer's (A, B) copies are copies[2i], copies[2i + 1] (its ``loratui_copies``)
        self.params = [w for layer in layers for w in _adapter_weights(layer)]
        self.copies = [c for layer in layers for c in layer.loratui_copies]
        self.buffers: list[torch.Tensor] | None = None  # fp32 gradient buffers, reused every step
        self.hook, self.hooked = None, None  # the post-step hook, and the optimizer it is on

    def place(self) -> None:
        """The copies where their weights are: the engine makes them before the Trainer moves the model to the
        card (plain tensors, which ``model.to`` does not move; round 14's GPU call failed at the first forward)."""
        # the weights as the model holds them now (a move to some devices makes new parameters)
        self.params = [w for layer in self.layers for w in _adapter_weights(layer)]
        if all(c.device == p.device for p, c in zip(self.params, self.copies)):
            return
        self.copies = [p.detach().to(c.dtype).requires_grad_(True) for p, c in zip(self.params, self.copies)]
        for i, layer in enumerate(self.layers):
            layer.loratui_copies = (self.copies[2 * i], self.copies[2 * i + 1])
        self.buffers = None

    def refresh(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.copies, self.params)

    def collect(self) -> None:
        """The copies' gradients of this micro-batch into the fp32 weights' gradients (set, or added to under
        gradient accumulation), as autograd's cast would have put them there."""
        used = [i for i, c in enumerate(self.copies) if c.grad is not None]
        if not used:
            return
        if self.buffers is None:
            self.buffers = [torch.empty_like(p) for p in self.params]
        grads = [self.copies[i].grad for i in used]
        with torch.no_grad():
            if all(self.params[i].grad is None for i in used):
                for i in used:
                    self.params[i].grad = self.buffers[i]
                torch._foreach_copy_([self.buffers[i] for i in used], grads)
            else:
                for i, g in zip(used, grads):
                    p = self.params[i]
                    if p.grad is None:
                        p.grad = self.buffers[i].copy_(g)
                    else:
                        p.grad.add_(g)
        for i in used:
            self.copies[i].grad = None

    def on_train_begin(self, args, state, control, optimizer=None, **kw):
        self.place()
        self.refresh()  # the weights as training starts (a resumed run has loaded its checkpoint by now)
        inner = getattr(optimizer, "optimizer", optimizer)
        if inner is not None and inner is not self.hooked:  # a roll-back's train() makes a new optimizer
            if self.hook is not None:
                self.hook.remove()
            self.hook, self.hooked = inner.register_step_post_hook(lambda *_: self.refresh()), inner


def _adapter_weights(layer) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    name = layer.active_adapters[0]
    return layer.lora_A[name].weight, layer.lora_B[name].weight


def install_adapter_copies(model) -> AdapterCopies | None:
    """16-bit copies for every in-place LoRA projection whose adapter is fp32 on a 16-bit base layer (held by the
    layer as ``loratui_copies``); None where there is none. The model keeps the returned object as
    ``loratui_adapter_copies``."""
    layers = []
    for module in model.modules():
        if not getattr(module, "loratui_inplace", False):
            continue
        a = module.lora_A[module.active_adapters[0]]
        dtype = module.base_layer.weight.dtype
        if type(a) is not torch.nn.Linear or dtype not in (torch.bfloat16, torch.float16):
            continue
        weights = _adapter_weights(module)
        if any(w.dtype != torch.float32 for w in weights):
            continue
        module.loratui_copies = tuple(w.detach().to(dtype).requires_grad_(True) for w in weights)
        layers.append(module)
    if not layers:
        return None
    model.loratui_adapter_copies = AdapterCopies(layers)
    return model.loratui_adapter_copies
