"""The memory estimate against what NVML showed on one NVIDIA H200 for the same configs (bench/speed.py's runs):
within 10% of the process's peak, per card under FSDP, and the tutorial recipe's torch peak."""

from __future__ import annotations

import pytest

from loratui.train.estimate import estimate_memory
from bench_configs import bench_cfg

#
# NVML process peaks measured on one NVIDIA H200 on 2026-11-26 by bench/speed.py (bench/results-1b-lora-h200.json and
# bench/results-8b-qlora-h200.json): random-init Llama shapes from bench/gpu_engine.py SHAPES, data from
# bench/gpu_engine.py make_data (3,000 rows of log-normal length, max_length 1024), configs from bench/speed.py
# loratui_config. The estimate builds the same shape on the meta device (a config.json, no weights) and must land
# within 10% of what NVML showed for the process.

MEASURED = [  # shape, method, batch, steps, variant, NVML peak GiB, torch peak GiB
    # measured before train.lean_activations existed (its off switch runs them as they ran)
    ("1b", "lora", 16, 50, "lean=off", 10.78, 10.00),  # packing + varlen + liger + fused AdamW
    ("1b", "lora", 16, 50, "liger=off+lean=off", 24.49, 21.97),
    ("1b", "lora", 16, 50, "attention=sdpa+lean=off", 12.19, 11.40),
    ("1b", "lora", 16, 50, "packing=off+liger=off+optimizer=adamw_torch+lean=off", 52.13, 47.23),
    ("8b", "qlora", 4, 30, "lean=off", 32.58, 31.34),  # nf4 + double quant, r=16 all linear, no checkpointing
    ("8b", "qlora", 4, 30, "gc=true+lean=off", 11.62, 10.24),
    # lean activations (train.lean_activations, on by default for a quantized base), measured on later calls
    ("8b", "qlora", 4, 30, "lean_mlp=off", 18.47, 17.59),  # (the default until train.lean_mlp)
    ("8b", "qlora", 4, 24, "default", 16.38, 15.49),  # lean_mlp on: the down projections rebuild their input
    ("8b", "qlora", 4, 30, "gc=true", 8.15, 7.13),
    ("1b", "lora", 16, 50, "lean=on", 9.98, 9.21),
    # 16-bit LoRA r=16 on all linear layers of the 8B shape, 16 sequences (round 6, bench/RESULTS.md): peft's
    # dropout copies, and the fused projections (train.fused_lora) that keep each input once instead
    ("8b", "lora", 16, 20, "lora.r=16+lora.alpha=32+lora.preset=llama-all+fused=off", 62.16, 60.95),
    ("8b", "lora", 16, 20, "lora.r=16+lora.alpha=32+lora.preset=llama-all+fused=on", 47.24, 46.41),
    # round 12: the in-place LoRA forward and Liger's loss chunks 8x wider (train.wide_loss_chunks, the fit's choice)
    ("8b", "lora", 16, 50, "lora.r=16+lora.alpha=32+lora.preset=llama-all+wide=on", 61.97, 60.97),
]


@pytest.mark.parametrize("shape,method,batch,steps,variant,nvml,torch_peak", MEASURED,
                         ids=[f"{m[0]}-{m[1]}-{m[4]}" for m in MEASURED])
def test_estimate_within_10_percent_of_the_nvml_peak(bench_env, h200, shape, method, batch, steps, variant, nvml,
                                                      torch_peak):
    cfg = bench_cfg(bench_env, shape, method, batch, steps, variant)
    report = estimate_memory(cfg, compare=False, cuda=True)
    row = report.rows[0]
    got = row.total / 2**30
    assert abs(got / nvml - 1) <= 0.10, f"{got:.2f} GiB estimated, {nvml} GiB measured by NVML"
    assert "GPU memory" in row.basis and "bf16" in row.basis
    assert "the data" in row.tokens_note  # measured from the data, not max_length


# CUDA graphs of every decoder layer (train.cuda_graphs, the fit's choice with room): NVML against the estimate times
# what graphs cost (loratui.train.fit_result.graphs_factor). 1B: round 12, call 2 (H200); 8B QLoRA with Liger and
# the lean MLP off (the fit's faster levers with room): round 13, call 1 (H100 80GB; 47.72 in round 7 on an H200 too)
MEASURED_GRAPHS = [  # shape, method, batch, steps, variant, NVML peak GiB
    ("1b", "lora", 16, 60, "wide=on+graphs=on", 17.65),
    ("8b", "qlora", 4, 30, "liger=off+lean_mlp=off+graphs=on", 47.72),
]


@pytest.mark.parametrize("shape,method,batch,steps,variant,nvml", MEASURED_GRAPHS,
                         ids=[f"{m[0]}-{m[1]}-{m[4]}" for m in MEASURED_GRAPHS])
def test_graphs_estimate_within_10_percent_of_the_nvml_peak(bench_env, h200, shape, method, batch, steps, variant,
                                                             nvml):
    from loratui.train.fit import graphs_factor

    cfg = bench_cfg(bench_env, shape, method, batch, steps, variant)
    got = estimate_memory(cfg, compare=False, cuda=True).rows[0].total * graphs_factor(cfg) / 2**30
    assert abs(got / nvml - 1) <= 0.10, f"{got:.2f} GiB estimated with graphs, {nvml} GiB measured by NVML"


# per card under FSDP, NVML's figure for the cards together divided by their number (bench/RESULTS.md, "Several GPUs"):
# full fine-tuning of the 8B shape on 4x H200 (round 1: bench/speed.py's 8B config with method full, batch 4 a card,
# 20 steps: the single-card estimate of that config, 155.6 GiB, is what picked FSDP). (The QLoRA run on 2 cards ran
# without the fused loss, which FSDP now gets for PEFT models too: bench/RESULTS.md keeps its comparison.)
MEASURED_FSDP = [  # method, variant, steps, cards, NVML GiB a card
    ("lora", "method=full+gpus=4", 20, 4, 45.5),
]


@pytest.mark.parametrize("method,variant,steps,cards,nvml", MEASURED_FSDP, ids=[m[1] for m in MEASURED_FSDP])
def test_fsdp_per_card_estimate_within_10_percent(bench_env, h200, method, variant, steps, cards, nvml):
    """FSDP splits weights, gradients and optimizer states over the cards; each card keeps its own activations
    (with a 16-bit residual stream: parameters are gathered in the compute dtype, so no autocast copies of them)
    and gathers the root unit and two decoder layers whole. Dividing the single-card estimate instead said 66 GiB a
    card for the full fine-tuning run that measured 45.5."""
    cfg = bench_cfg(bench_env, "8b", method, 4, steps, variant)
    row = estimate_memory(cfg, compare=False, cuda=True).rows[0]
    got = row.per_card("fsdp", cards) / 2**30
    assert abs(got / nvml - 1) <= 0.10, f"{got:.2f} GiB a card estimated, {nvml} measured"
    assert row.per_card("ddp", cards) == row.total  # DDP: a whole replica on every card


def test_tutorial_recipe_shape_matches_torch_peak(bench_env, h200):
    """The tutorial's recipe (fp32 weights, fp16 autocast, padded, adamw_torch) as a loratui config: torch's peak was
    52.24 GiB (same file and date). Its NVML peak, 110.77 GiB, came from the caching allocator without expandable
    segments, which the engine always sets: only the tensor part is comparable."""
    variant = "packing=off+liger=off+optimizer=adamw_torch+model.dtype=float32+train.precision=fp16"
    cfg = bench_cfg(bench_env, "1b", "lora", 16, 50, variant)
    row = estimate_memory(cfg, compare=False, cuda=True).rows[0]
    assert abs((row.total - row.overhead) / 2**30 / 52.24 - 1) <= 0.10


def test_packed_estimate_follows_the_data_not_max_length(bench_env, h200):
    packed = estimate_memory(bench_cfg(bench_env, "1b", "lora", 16, 50, "default"), compare=False, cuda=True)
    padded = estimate_memory(bench_cfg(bench_env, "1b", "lora", 16, 50, "packing=off"), compare=False, cuda=True)
    # mean example about 280 tokens: a packed step of 16 is far under 16 x 1024; the padded one is 16 x the longest
    assert 16 * 280 < packed.tokens_per_step < 16 * 600
    assert padded.tokens_per_step == 16 * 968
    assert packed.rows[0].activations < 0.5 * padded.rows[0].activations
