"""The engine with a lever the config has no switch for (yet), for bench/speed.py's side-by-side rows.

Usage: python bench/patched_train.py CONFIG.yaml PATCH[+PATCH...]   (the config's own run name; as `loratui train`)
Patches (bench only; the engine carries none of them):
  inplace=off     peft's LoRA forward instead of loratui.train.inplace_lora (the A side of the in-place change)
  head_chunk=N    Liger's fused cross-entropy with chunk_mem_const=N (its default 1: logit chunks of about one
                  hidden state per token, 256 tokens on the 8B shape; 8: 2,048 tokens, 1.6 GB at vocab 128k)
  nonblock=on     the Trainer's batches copied to the card without the host waiting for the copy (accelerate's
                  non_blocking, from pinned host memory): the host can queue the next step before the last ends
  host_trim=off   the Trainer's own per-step walks over every module and parameter (model.train(), zero_grad,
                  clipping, FLOP counting) instead of loratui.train.trainers.trim_step_host_work's once-a-run lists
  pygc=off        Python's garbage collector frozen (everything loaded so far) and off for the run, as torchtitan's
                  GarbageCollection does between its own collections: a pause there is the card waiting
  copies=off      autocast's two casts a projection each way instead of the adapters' 16-bit copies for the
                  in-place forward (loratui.train.adapter_copies, the engine's default since round 14; copies=on
                  is the default's own name, kept for earlier calls' commands)
  liger_sync=on   Liger's fused cross-entropy as it ships: its .item() at the loss and torch.equal in the backward
                  (two host syncs a micro-batch) instead of loratui.train.liger_sync's rewrite (the default since
                  round 15)
  gqa=repeat      keys and values repeated to the query heads before torch's varlen kernel (4x on Llama-3's shapes),
                  where loratui.train.speed found that this torch's kernel takes grouped heads as they are
  liger_kernels=ce  Liger's fused cross-entropy only: transformers' own RMSNorm, RoPE and SwiGLU (torch ops launched
                  from C++) instead of Liger's Triton kernels (launched through Triton's Python launcher)
bench/speed.py runs a variant through this script when it names one of them.
"""

from __future__ import annotations

import sys

PATCHES = ("inplace", "head_chunk", "nonblock", "host_trim", "pygc", "copies", "liger_sync", "gqa", "liger_kernels")


def after_training_args(change) -> None:
    """``change(args)`` on every TrainingArguments the engine makes, once transformers has finished them."""
    from transformers import TrainingArguments

    post = TrainingArguments.__post_init__

    def post_init(self):
        post(self)
        change(self)

    TrainingArguments.__post_init__ = post_init


def apply(patch: str) -> None:
    key, _, value = patch.partition("=")
    if key == "inplace" and value == "off":
        import loratui.train.inplace_lora as inplace

        inplace.inplace_lora = lambda model: 0
    elif key == "head_chunk":  # train.wide_loss_chunks: on is 8; any other multiplier through the same binding
        from loratui.train.speed import widen_loss_chunks

        widen_loss_chunks(int(value))
    elif key == "nonblock" and value == "on":
        def non_blocking(args):
            args.accelerator_config.non_blocking = True

        after_training_args(non_blocking)
    elif key == "host_trim" and value == "off":
        from transformers import Trainer

        from loratui.train import recipe, trainers

        trainers.trim_step_host_work = lambda trainer, model: []
        make = recipe.token_counting_trainer

        def stock_flops():
            class StockFlops(make()):
                floating_point_ops = Trainer.floating_point_ops

            return StockFlops

        recipe.token_counting_trainer = stock_flops
    elif key == "pygc" and value == "off":
        import gc

        from transformers import Trainer

        train = Trainer.train

        def train_without_gc(self, *args, **kwargs):
            gc.collect()
            gc.freeze()
            gc.disable()
            return train(self, *args, **kwargs)

        Trainer.train = train_without_gc
    elif key == "copies" and value in ("on", "off"):
        from loratui.train import adapter_copies

        adapter_copies.ENABLED = value == "on"
    elif key == "liger_sync" and value == "on":
        from loratui.train import liger_sync

        liger_sync.ENABLED = False
    elif key == "gqa" and value == "repeat":
        from loratui.train import speed

        speed.varlen_takes_gqa = lambda *args: False
    elif key == "liger_kernels" and value == "ce":
        def ce_only(args):
            if args.liger_kernel_config:
                args.liger_kernel_config = {**args.liger_kernel_config, "rope": False, "rms_norm": False,
                                            "swiglu": False}

        after_training_args(ce_only)
    else:
        raise SystemExit(f"unknown patch {patch!r} (known: inplace=off, head_chunk=N, nonblock=on, host_trim=off, "
                         "pygc=off, copies=on|off, liger_sync=on, gqa=repeat, liger_kernels=ce)")
    print(f"bench patch: {patch}", flush=True)


def main() -> int:
    from loratui.core.config import load_config
    from loratui.core.runs import create_run
    from loratui.train import engine

    for patch in sys.argv[2].split("+"):
        apply(patch)
    return engine.Engine(create_run(load_config(sys.argv[1]))).run()


if __name__ == "__main__":
    raise SystemExit(main())
