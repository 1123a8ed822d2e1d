"""The tutorial's recipe (../shared/reference/lora-guide.txt), as our users run it today: Trainer + peft.

LoRA: the model loaded in fp32, ``fp16=True`` autocast, padded batches, AdamW. QLoRA: nf4 + double quant with fp16
compute, gradient checkpointing, paged 8-bit AdamW. Run by bench/speed.py as its own process; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForSeq2Seq, Trainer,
                          TrainerCallback, TrainingArguments)
from datasets import load_dataset


class Clock(TrainerCallback):
    """Time and real tokens at each optimizer step (tokens counted on the CPU in the collator)."""

    def __init__(self, counter):
        self.counter, self.marks, self.losses = counter, [], []

    def on_step_end(self, args, state, control, **kw):
        if state.global_step in (10, state.max_steps):  # the window's ends only: no sync between
            torch.cuda.synchronize()
        self.marks.append((state.global_step, time.perf_counter(), self.counter.tokens))
        if state.global_step == 1:
            self.first_step_wall = time.time()

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append((state.global_step, logs["loss"]))


class CountingCollator(DataCollatorForSeq2Seq):
    tokens = 0

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        type(self).tokens += int(batch["attention_mask"].sum())
        return batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", choices=["lora", "qlora"], default="lora")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--profile", action="store_true", help="trace steps 20-25 (bench/profiling.py)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    if args.method == "qlora":
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.float16)
        base = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=bnb, device_map={"": 0},
                                                    dtype=torch.float16)
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)
        lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=16, lora_alpha=32, lora_dropout=0.05,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    else:
        base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, lora_dropout=0.05,
                          target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, lora)
    ds = load_dataset("json", data_files=args.data, split="train")
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=args.max_length), batched=True,
                remove_columns=ds.column_names)
    ds = ds.map(lambda b: {"labels": b["input_ids"]}, batched=True)
    targs = TrainingArguments(output_dir="/tmp/seed-out", max_steps=args.steps, per_device_train_batch_size=args.batch,
                              learning_rate=2e-4, logging_steps=5, save_strategy="no", report_to="none",
                              fp16=True, seed=42, disable_tqdm=True,
                              gradient_checkpointing=args.method == "qlora",
                              optim="paged_adamw_8bit" if args.method == "qlora" else "adamw_torch")
    counter = CountingCollator(tok, padding=True, label_pad_token_id=-100)
    clock = Clock(counter)
    callbacks = [clock]
    if args.profile:
        from profiling import StepProfiler

        callbacks.append(StepProfiler(f"seed-{args.method}"))
    trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=counter, callbacks=callbacks)
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    print(json.dumps({"marks": clock.marks, "losses": clock.losses, "first_step_wall": clock.first_step_wall,
                      "torch_peak_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)


if __name__ == "__main__":
    main()
