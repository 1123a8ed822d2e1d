"""Unsloth's recommended recipe, as its notebooks run it, for the side-by-side in bench/speed.py (``--unsloth``).

QLoRA: ``FastLanguageModel.from_pretrained(load_in_4bit=True)``, ``get_peft_model`` with its offloaded gradient
checkpointing (``use_gradient_checkpointing="unsloth"``), LoRA dropout 0 (what it recommends: its fast path needs
it), TRL's SFTTrainer with Unsloth's defaults (padding-free batches), ``adamw_8bit``. LoRA (16-bit): the same without
4-bit and without checkpointing. Real tokens are counted inside ``training_step`` (installed on the trainer after
Unsloth has patched the Trainer), on the device, read at the window's ends only. Prints one JSON line like
bench/seed_recipe.py. Run it with Unsloth's own install first on PYTHONPATH (it needs datasets<5, trl<=1.15).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from unsloth import FastLanguageModel  # noqa: E402 - Unsloth patches transformers and TRL: import it first

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Clock(TrainerCallback):
    def __init__(self, end: int):
        self.end = end
        self.marks, self.losses, self.tokens, self.first_step_wall = [], [], None, None

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 1:
            self.first_step_wall = time.time()
        if state.global_step in (int(os.environ.get("BENCH_WINDOW_START", 10)), self.end):  # the window's ends
            torch.cuda.synchronize()
            self.marks.append((state.global_step, time.perf_counter(), int(self.tokens)))

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append((state.global_step, logs["loss"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", choices=["lora", "qlora"], default="qlora")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, trace 5 more with torch.profiler (bench/profiling.py)")
    args = ap.parse_args()
    qlora = args.method == "qlora"
    model, tok = FastLanguageModel.from_pretrained(model_name=args.model, max_seq_length=args.max_length,
                                                   load_in_4bit=qlora, dtype=None)
    model = FastLanguageModel.get_peft_model(
        model, r=16 if qlora else 8, lora_alpha=32 if qlora else 16, lora_dropout=0, bias="none",
        target_modules=ALL if qlora else ["q_proj", "v_proj"],
        use_gradient_checkpointing="unsloth" if qlora else False, random_state=3407)
    ds = load_dataset("json", data_files=args.data, split="train")
    clock = Clock(args.steps)
    callbacks = [clock]
    if args.profile:
        import sys

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from profiling import StepProfiler

        callbacks.append(StepProfiler(f"unsloth-{args.method}", start=args.steps))
    trainer = SFTTrainer(
        model=model, processing_class=tok, train_dataset=ds, callbacks=callbacks,
        args=SFTConfig(output_dir="/tmp/unsloth-out", dataset_text_field="text", max_length=args.max_length,
                       per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                       max_steps=args.steps + (6 if args.profile else 0), learning_rate=2e-4, logging_steps=5, optim="adamw_8bit",
                       bf16=True, save_strategy="no", report_to="none", seed=3407, dataset_num_proc=1))
    step = trainer.training_step

    def counted(model, inputs, *a, **kw):  # real tokens: the mask's ones, or every token of a padding-free row
        n = inputs["attention_mask"].sum() if inputs.get("attention_mask") is not None else inputs["input_ids"].numel()
        clock.tokens = n if clock.tokens is None else clock.tokens + n
        return step(model, inputs, *a, **kw)

    trainer.training_step = counted
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    print(json.dumps({"marks": clock.marks, "losses": clock.losses, "first_step_wall": clock.first_step_wall,
                      "torch_peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                      "padding_free": bool(getattr(trainer.args, "padding_free", False))}), flush=True)


if __name__ == "__main__":
    main()
